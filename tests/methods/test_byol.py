"""BYOL: its loss and its hallucinated twin computed by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hallucinator import methods
from tests.methods.conftest import _fixed, _hat


def test_byol_loss_is_the_symmetrised_normalised_mse_of_predictions_and_momentum_targets(tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build("byol", tiny_net(), hallucinator=_fixed(8), dim=8, hidden_dim=16, pred_hidden_dim=16).eval()
    out = model(*views)
    with torch.no_grad():
        p1, p2 = (model.predictor(model.projector(model.backbone(v))) for v in views)
        t1, t2 = (model.momentum_projector(model.momentum_backbone(v)) for v in views)

        def mse(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return (F.normalize(p, dim=1) - F.normalize(t, dim=1)).pow(2).sum(dim=1).mean()

        original = mse(p1, t2) + mse(p2, t1)
        hallucinated = mse(_hat(p1, t2), t2) + mse(_hat(p2, t1), t1)
    torch.testing.assert_close(out["loss_original"], original)
    torch.testing.assert_close(out["loss_hallucinated"], hallucinated)
    torch.testing.assert_close(out["loss"], (original + hallucinated) / 2)
    torch.testing.assert_close(
        out["pos_similarity"], torch.cat([F.cosine_similarity(p1, t2), F.cosine_similarity(p2, t1)]).mean()
    )
