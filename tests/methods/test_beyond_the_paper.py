"""BYOL, Barlow Twins, VICReg, MoCo v3 and NNCLR: each loss and its hallucinated twin computed by hand.

Every case uses an extrapolation-only Hallucinator with a fixed ``lam = 0.3`` (``q_hat = 1.3 q - 0.3 k``)
so that the expected hallucinated loss can be written out; eval mode keeps the momentum
encoders and queues still, so the targets can be recomputed after the call.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hallucinator import Hallucinator, methods
from hallucinator.losses import barlow_twins, vicreg
from hallucinator.methods.memory import cosine_momentum

LAM = 0.3


def _fixed(dim: int) -> Hallucinator:
    return Hallucinator(dim, num_layers=0, extrapolation=(LAM, LAM))


def _hat(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return (1 + LAM) * q - LAM * k


def _cross_entropy_by_hand(anchors: torch.Tensor, positives: torch.Tensor, t: float) -> torch.Tensor:
    a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
    logits = a @ p.T / t
    return (logits.exp().sum(dim=1).log() - logits.diagonal()).mean()


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


def test_cosine_momentum_schedule_of_byol() -> None:
    for progress in (0.0, 0.25, 0.5, 1.0):
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * progress) + 1) / 2
        assert cosine_momentum(0.99, progress) == pytest.approx(expected, rel=1e-12)
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99) and cosine_momentum(0.99, 1.0) == 1.0
    assert cosine_momentum(0.9, 0.7, final=0.9) == pytest.approx(0.9)  # final = base: constant


@pytest.mark.parametrize("name", ["byol", "mocov3"])
def test_momentum_target_follows_the_cosine_schedule_and_takes_no_gradient(name: str, tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(name, tiny_net(), dim=8, hidden_dim=16, pred_hidden_dim=16).train()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # the online encoder now differs from its copy
    m = 1 - 0.01 * (math.cos(math.pi * 0.5) + 1) / 2  # 0.995, half-way through training
    assert cosine_momentum(model.momentum, 0.5, model.final_momentum) == pytest.approx(m, rel=1e-12)
    online = [p.detach().clone() for p in [*model.backbone.parameters(), *model.projector.parameters()]]
    target = [p.clone() for p in [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]]
    model.update_target(m)  # what the training step does before the forward
    updated = [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]
    after_update = [p.detach().clone() for p in updated]
    model(*views)["loss"].backward()
    for new, moved, old, source in zip(updated, after_update, target, online):
        torch.testing.assert_close(moved, m * old + (1 - m) * source)
        assert torch.equal(new, moved) and new.grad is None  # the forward moves no target weight
    for module in (model.backbone, model.projector, model.predictor, model.hallucinator):
        assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="momentum <= final_momentum"):
        methods.build(name, tiny_net(), momentum=0.999, final_momentum=0.99)
