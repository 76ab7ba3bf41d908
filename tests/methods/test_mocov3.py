"""MoCo v3: its loss and its hallucinated twin computed by hand, and its heads."""

from __future__ import annotations

import torch

from hallucinator import methods
from tests.methods.conftest import _cross_entropy_by_hand, _fixed, _hat


def test_mocov3_loss_is_in_batch_infonce_scaled_by_2t_in_both_directions(tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build("mocov3", tiny_net(), hallucinator=_fixed(8), dim=8, hidden_dim=16, pred_hidden_dim=16)
    model.eval()
    out = model(*views)
    with torch.no_grad():
        q1, q2 = (model.predictor(model.projector(model.backbone(v))) for v in views)
        k1, k2 = (model.momentum_projector(model.momentum_backbone(v)) for v in views)

        def ctr(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return _cross_entropy_by_hand(q, k, 0.2) * 0.4

        original = ctr(q1, k2) + ctr(q2, k1)
        hallucinated = ctr(_hat(q1, k2), k2) + ctr(_hat(q2, k1), k1)
    torch.testing.assert_close(out["loss_original"], original)
    torch.testing.assert_close(out["loss_hallucinated"], hallucinated)
    # MoCo v3's projector ends in an affine-free BatchNorm, its predictor does not
    assert isinstance(model.projector[-1], torch.nn.BatchNorm1d) and not model.projector[-1].affine
    assert isinstance(model.predictor[-1], torch.nn.Linear)
