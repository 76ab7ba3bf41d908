"""NNCLR: the nearest-neighbour positive and its loss computed by hand, and its support queue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hallucinator import methods
from tests.methods.conftest import _cross_entropy_by_hand, _fixed, _hat


def test_nnclr_positive_is_the_nearest_support_neighbour_of_the_other_view(tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(
        "nnclr", tiny_net(), hallucinator=_fixed(8), dim=8, hidden_dim=16, pred_hidden_dim=16, queue_size=16
    ).eval()
    out = model(*views)
    with torch.no_grad():
        z1, z2 = (F.normalize(model.projector(model.backbone(v)), dim=1) for v in views)
        p1, p2 = (model.predictor(model.projector(model.backbone(v))) for v in views)
        support = model.queue.tolist()

        def neighbour(z: torch.Tensor) -> torch.Tensor:  # a loop over the support set
            rows = []
            for row in z.tolist():
                scores = [sum(a * b for a, b in zip(row, entry)) for entry in support]
                rows.append(support[max(range(len(support)), key=scores.__getitem__)])
            return torch.tensor(rows)

        nn1, nn2 = neighbour(z1), neighbour(z2)
        original = (_cross_entropy_by_hand(nn1, p2, 0.2) + _cross_entropy_by_hand(nn2, p1, 0.2)) / 2
        hallucinated = (
            _cross_entropy_by_hand(nn1, _hat(p2, nn1), 0.2) + _cross_entropy_by_hand(nn2, _hat(p1, nn2), 0.2)
        ) / 2
    torch.testing.assert_close(out["loss_original"], original)
    torch.testing.assert_close(out["loss_hallucinated"], hallucinated)


def test_nnclr_enqueues_the_normalised_view1_embeddings_in_training_mode(tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(
        "nnclr", tiny_net(), hallucinator=False, dim=8, hidden_dim=16, pred_hidden_dim=16, queue_size=24
    )
    initial = model.queue.clone()
    model.train()(*views)
    with torch.no_grad():
        z1 = F.normalize(model.projector(model.backbone(views[0])), dim=1)  # same batch: same BatchNorm statistics
    assert int(model.queue_ptr) == 8
    torch.testing.assert_close(model.queue[:8], z1)
    torch.testing.assert_close(model.queue[8:], initial[8:])
    with pytest.raises(ValueError, match="queue_size=20 is not a multiple of the global batch size 8"):
        methods.build("nnclr", tiny_net(), dim=8, queue_size=20).train()(*views)
