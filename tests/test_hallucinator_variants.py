"""Hallucinator variants beyond the paper (train_mode, hardness guard) against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hallucinator import Hallucinator
from hallucinator.engine import config as engine_config
from hallucinator.hallucinator import TRAIN_MODES


def _pair(dim: int = 4, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return q, q + 0.5 * torch.randn(n, dim, generator=generator, dtype=torch.float64)


def _hallucinated_loss(h: Hallucinator, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)  # the same lam for every call
    return -F.cosine_similarity(h(q, k), k, dim=1).mean()


@pytest.mark.parametrize("strength", [1.0, 0.1])
def test_adversarial_gradient_on_h_is_minus_strength_times_the_joint_one_and_the_input_gradient_is_unchanged(
    strength: float,
) -> None:
    joint = Hallucinator(4, num_layers=2).double()
    adversary = Hallucinator(4, num_layers=2, train_mode="adversarial", adversarial_strength=strength).double()
    adversary.load_state_dict(joint.state_dict())
    q, k = _pair()
    # independent computation: the same network written out with plain tensors
    w1, b1, w2, b2 = (p.detach().clone().requires_grad_(True) for p in joint.net.parameters())
    q_ref = q.clone().requires_grad_(True)
    torch.manual_seed(3)
    lam = 0.1 * torch.rand(()).item()  # U(0, 0.1), the default range
    q_prime = q_ref + lam * (q_ref - k)
    q_hat = torch.relu(torch.cat([q_ref, q_prime], 1) @ w1.T + b1) @ w2.T + b2
    (-F.cosine_similarity(q_hat, k, dim=1).mean()).backward()
    reference = [w1.grad, b1.grad, w2.grad, b2.grad]

    q_adv = q.clone().requires_grad_(True)
    loss_adv = _hallucinated_loss(adversary, q_adv, k)
    loss_adv.backward()
    q_joint = q.clone().requires_grad_(True)
    _hallucinated_loss(joint, q_joint, k).backward()
    for ref, p_joint, p_adv in zip(reference, joint.net.parameters(), adversary.net.parameters()):
        torch.testing.assert_close(p_joint.grad, ref)
        torch.testing.assert_close(p_adv.grad, -strength * ref)
    # the same forward value, and the encoder side (the input) still descends the loss
    torch.testing.assert_close(loss_adv, -F.cosine_similarity(q_hat, k, dim=1).mean().detach())
    torch.testing.assert_close(q_adv.grad, q_ref.grad)
    torch.testing.assert_close(q_joint.grad, q_ref.grad)


def test_frozen_h_requires_no_gradient_gets_none_and_is_saved_and_restored() -> None:
    torch.manual_seed(0)
    frozen = Hallucinator(4, train_mode="frozen").double()
    before = {name: p.clone() for name, p in frozen.state_dict().items()}
    assert not any(p.requires_grad for p in frozen.parameters())
    q, k = _pair()
    q.requires_grad_(True)
    optimizer = torch.optim.SGD([q, *frozen.parameters()], lr=1.0, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        _hallucinated_loss(frozen, q, k).backward()
        optimizer.step()
    assert all(p.grad is None for p in frozen.parameters())
    assert q.grad is not None and q.grad.abs().sum() > 0  # the encoder side still learns through H
    for name, value in frozen.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    restored = Hallucinator(4, train_mode="frozen").double()
    restored.load_state_dict(frozen.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), frozen.parameters()))
    assert not any(p.requires_grad for p in restored.parameters())


def test_guard_is_zero_when_satisfied_and_the_hand_computed_hinge_otherwise() -> None:
    h = Hallucinator(2, num_layers=0, extrapolation=(1.0, 1.0), guard_weight=1.0)
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    q_prime, _ = h.pair(q, k)  # 2q - k = [[1, -1], [2, -1]]
    # cos(q', k): row 0: 0; row 1: -1/sqrt(5)
    torch.testing.assert_close(h.last_extrapolated, torch.tensor([[1.0, -1.0], [2.0, -1.0]]))
    assert h.guard_penalty(q_prime, k, q).item() == 0.0  # q_hat = q' satisfies its own bound
    harder = torch.tensor([[0.0, -1.0], [0.0, -1.0]])  # cos with k: -1/sqrt(2), -1: below both bounds
    assert h.guard_penalty(harder, k, q).item() == 0.0
    easier = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # cos with k: 1, 0
    expected = ((1.0 - 0.0) + (0.0 + 1 / 5**0.5)) / 2
    assert h.guard_penalty(easier, k, q).item() == pytest.approx(expected, rel=1e-6)
    # margin bound: cos(q, k) - 0.5 = [1/sqrt(2) - 0.5, -0.5]
    h.guard_margin = 0.5
    expected = (max(0.0, 1.0 - (2**-0.5 - 0.5)) + max(0.0, 0.0 + 0.5)) / 2
    assert h.guard_penalty(easier, k, q).item() == pytest.approx(expected, rel=1e-6)
    assert h.guard_penalty(harder, k, q).item() == 0.0


def test_guard_gradient_moves_q_hat_not_the_target() -> None:
    h = Hallucinator(2, num_layers=1, guard_weight=1.0, guard_margin=-2.0)  # bound above 1: never violated
    q, k = _pair(dim=2)
    k = k.float().requires_grad_(True)
    q_hat, _ = h.pair(q.float(), k.detach())
    assert h.guard_penalty(q_hat, k, q.float()).item() == 0.0
    h.guard_margin = 2.0  # bound below -1: always violated
    penalty = h.guard_penalty(q_hat, k, q.float())
    penalty.backward()
    assert k.grad is None and penalty.item() > 0
    assert h.net[0].weight.grad.abs().sum() > 0


def test_guard_gradient_reaches_the_encoder_through_h_inputs_not_through_the_target() -> None:
    """As the docstring says: the target k and the bound are constants in the penalty, but H's inputs q and
    q' = q + lam (q - k) are not cut, so the gradient reaches q and, through q', k."""
    torch.manual_seed(0)
    h = Hallucinator(3, num_layers=2, extrapolation=(0.5, 0.5), guard_weight=1.0, guard_margin=2.0).double()
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    q_hat, partner = h.pair(q, k)
    h.guard_penalty(q_hat, partner, q).backward()
    # independently: k (and the bound) constant where the penalty compares, live only inside q'
    q_ref = q.detach().clone().requires_grad_(True)
    k_ref = k.detach().clone().requires_grad_(True)
    q_prime = q_ref + 0.5 * (q_ref - k_ref)
    first, second = h.net[0], h.net[2]
    by_hand = second(torch.relu(first(torch.cat([q_ref, q_prime], dim=1))))
    bound = F.cosine_similarity(q.detach(), k.detach(), dim=1) - 2.0
    torch.relu(F.cosine_similarity(by_hand, k.detach(), dim=1) - bound).mean().backward()
    assert torch.count_nonzero(q.grad) > 0 and torch.count_nonzero(k.grad) > 0
    torch.testing.assert_close(q.grad, q_ref.grad)
    torch.testing.assert_close(k.grad, k_ref.grad)


def test_bad_variant_options_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="train_mode must be one of"):
        Hallucinator(4, train_mode="reverse")
    with pytest.raises(ValueError, match=r"adversarial_strength must be in \(0, 1\]"):
        Hallucinator(4, train_mode="adversarial", adversarial_strength=0.0)
    with pytest.raises(ValueError, match="guard_weight must be >= 0"):
        Hallucinator(4, guard_weight=-1.0)
    with pytest.raises(ValueError, match="constrains a jointly trained H"):
        Hallucinator(4, train_mode="frozen", guard_weight=1.0)
    assert engine_config.TRAIN_MODES == TRAIN_MODES


def test_the_paper_defaults_are_unchanged() -> None:
    h = Hallucinator(4)
    assert (h.train_mode, h.guard_weight, h.guard_margin) == ("joint", 0.0, None)
    assert all(p.requires_grad for p in h.parameters())
