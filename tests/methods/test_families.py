"""The shared method skeletons: ``EmbeddingPair`` (Barlow Twins, VICReg) hallucinates ``z1`` against ``z2``."""

from __future__ import annotations

import pytest
import torch

from hallucinator import methods
from hallucinator.losses import barlow_twins, vicreg
from tests.methods.conftest import _fixed, _hat


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_barlow_twins_and_vicreg_hallucinate_z1_against_z2(name: str, tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(name, tiny_net(), hallucinator=_fixed(8), dim=8, hidden_dim=16).eval()
    out = model(*views)
    loss = (lambda a, b: 0.1 * barlow_twins(a, b)) if name == "barlowtwins" else vicreg
    with torch.no_grad():
        z1, z2 = (model.projector(model.backbone(v)) for v in views)
        torch.testing.assert_close(out["loss_original"], loss(z1, z2))
        torch.testing.assert_close(out["loss_hallucinated"], loss(_hat(z1, z2), z2))
    assert len([m for m in model.projector if isinstance(m, torch.nn.Linear)]) == 3
