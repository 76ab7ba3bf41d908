"""SimSiam: heads, hallucination of both directions, stop-gradient on the targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hallucinator import Hallucinator
from hallucinator.methods import SimSiam


def test_cifar_heads_and_a_2048_d_hallucinator(tiny_net) -> None:
    model = SimSiam(tiny_net())
    assert [type(m) for m in model.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert model.projector[0].out_features == 2048 and model.projector[3].out_features == 2048
    assert not model.projector[4].affine
    assert [(m.in_features, m.out_features) for m in model.predictor if isinstance(m, nn.Linear)] == [
        (2048, 512),
        (512, 2048),
    ]
    assert model.hallucinator.dim == 2048


def _capture_projections(model: SimSiam) -> list[torch.Tensor]:
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    model.projector.register_forward_hook(hook)
    return captured


def test_both_directions_hallucinated_and_targets_behind_stop_gradient(tiny_net, views) -> None:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=6, num_layers=0, extrapolation=(0.3, 0.3))
    model = SimSiam(tiny_net(), hallucinator=hallucinator, dim=6, pred_hidden_dim=3).eval()
    z = _capture_projections(model)
    out = model(*views)
    out["loss"].backward()

    # reference: the targets z1, z2 enter as constants, only the predictions carry gradient
    a1, a2 = (zi.detach().clone().requires_grad_() for zi in z)
    p1, p2 = model.predictor(a1), model.predictor(a2)
    t1, t2 = z[0].detach(), z[1].detach()
    original = -(F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean()) / 2
    p1_hat, p2_hat = 1.3 * p1 - 0.3 * p2, 1.3 * p2 - 0.3 * p1  # the other view's prediction is the partner
    hallucinated = -(F.cosine_similarity(p1_hat, t2).mean() + F.cosine_similarity(p2_hat, t1).mean()) / 2
    (0.5 * original + 0.5 * hallucinated).backward()

    torch.testing.assert_close(out["loss_original"], original.detach())
    torch.testing.assert_close(out["loss_hallucinated"], hallucinated.detach())
    torch.testing.assert_close(out["pos_similarity"], -original.detach())
    torch.testing.assert_close(out["hal_similarity"], -hallucinated.detach())  # Fig. 4's hallucinated pair
    torch.testing.assert_close(z[0].grad, a1.grad)
    torch.testing.assert_close(z[1].grad, a2.grad)


def test_gradients_reach_the_encoder_heads_and_hallucinator(tiny_net, views) -> None:
    model = SimSiam(tiny_net(), dim=8, pred_hidden_dim=4).train()
    model(*views)["loss"].backward()
    for module in (model.backbone, model.projector, model.predictor, model.hallucinator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters() if p.requires_grad)
