"""The Hallucinator against hand-written computations of the paper's formulas (Sec. 3.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hallucinator import Hallucinator


def test_extrapolate_matches_formula_for_scalar_and_per_sample_lambda() -> None:
    q = np.array([[1.0, 2.0], [3.0, -1.0]])
    k = np.array([[0.5, 0.0], [1.0, 1.0]])
    scalar = Hallucinator.extrapolate(torch.tensor(q), torch.tensor(k), 0.1).numpy()
    # hand-computed (1.1 * q - 0.1 * k)
    np.testing.assert_allclose(scalar, [[1.05, 2.2], [3.2, -1.2]], rtol=1e-12)
    lam = np.array([0.0, 1.0])
    for lam_tensor in (torch.tensor(lam), torch.tensor(lam).unsqueeze(1)):
        per_sample = Hallucinator.extrapolate(torch.tensor(q), torch.tensor(k), lam_tensor).numpy()
        np.testing.assert_allclose(per_sample, [q[0], 2 * q[1] - k[1]], rtol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True])
def test_lambda_is_drawn_in_range_once_per_batch_or_per_sample(per_sample: bool) -> None:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=3, num_layers=0, extrapolation=(0.2, 0.4), per_sample=per_sample)
    q, k = torch.randn(500, 3, dtype=torch.float64), torch.randn(500, 3, dtype=torch.float64)
    # with num_layers=0 the output is q' = q + lam (q - k): recover lam per sample
    lam = ((hallucinator(q, k) - q) / (q - k)).numpy()
    assert np.allclose(lam, lam[:, :1])  # one lam per row
    lam = lam[:, 0]
    assert lam.min() >= 0.2 and lam.max() <= 0.4
    if per_sample:
        assert np.unique(lam.round(12)).size > 400
        assert abs(lam.mean() - 0.3) < 0.01  # U(0.2, 0.4) has mean 0.3, std 0.058 -> se 0.0026
    else:
        assert np.ptp(lam) < 1e-12


def test_default_network_widths_are_2d_2d_2d_d_with_relu_between() -> None:
    hallucinator = Hallucinator(dim=5)
    layers = list(hallucinator.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)] == [
        (10, 10),
        (10, 10),
        (10, 5),
    ]
    assert hallucinator.extrapolation == (0.0, 0.1) and not hallucinator.per_sample


@pytest.mark.parametrize(
    ("num_layers", "hidden_dim", "widths"),
    [(1, None, [(8, 4)]), (2, 6, [(8, 6), (6, 4)]), (4, None, [(8, 8), (8, 8), (8, 8), (8, 4)])],
)
def test_layer_count_and_hidden_width(num_layers: int, hidden_dim: int | None, widths: list[tuple[int, int]]) -> None:
    linear = [m for m in Hallucinator(4, num_layers=num_layers, hidden_dim=hidden_dim).net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == widths
    assert sum(isinstance(m, nn.ReLU) for m in Hallucinator(4, num_layers=num_layers).net) == num_layers - 1


def test_num_layers_zero_returns_the_extrapolated_feature_itself() -> None:
    hallucinator = Hallucinator(dim=2, num_layers=0, extrapolation=(0.5, 0.5))
    assert len(list(hallucinator.parameters())) == 0
    out = hallucinator(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, -1.0]]))  # 1.5 * q - 0.5 * k


def test_forward_is_the_mlp_on_the_concatenation_of_q_and_extrapolated_q() -> None:
    torch.manual_seed(1)
    hallucinator = Hallucinator(dim=3, num_layers=2, hidden_dim=4, extrapolation=(0.25, 0.25)).double()
    q, k = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    w1, b1, w2, b2 = (p.detach().numpy() for p in hallucinator.parameters())
    qn, kn = q.numpy(), k.numpy()
    x = np.concatenate([qn, 1.25 * qn - 0.25 * kn], axis=1)
    expected = np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2
    np.testing.assert_allclose(hallucinator(q, k).detach().numpy(), expected, rtol=1e-10)


def test_gradients_reach_every_layer_and_both_inputs() -> None:
    hallucinator = Hallucinator(dim=4)
    q, k = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    hallucinator(q, k).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hallucinator.parameters())
    assert q.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 4, "num_layers": -1}, "num_layers"),
        ({"dim": 4, "hidden_dim": 0}, "hidden_dim"),
        ({"dim": 4, "extrapolation": (0.5, 0.1)}, "extrapolation"),
    ],
)
def test_impossible_arguments_raise_value_error_naming_them(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Hallucinator(**kwargs)


def test_mismatched_q_and_k_raise_value_error() -> None:
    hallucinator = Hallucinator(dim=4)
    with pytest.raises(ValueError, match="same shape"):
        hallucinator(torch.randn(5, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="dim=8"):
        hallucinator(torch.randn(5, 8), torch.randn(5, 8))


def test_symmetric_extrapolation_moves_both_normalised_features_apart() -> None:
    """Fig. 4's comparison point (Zhu et al. 2021), by hand: q' = q + lam (q - k), k' = k + lam (k - q) on
    unit vectors; with H, q_hat = H([q, q']) on the normalised q and the partner stays k'."""
    from hallucinator.hallucinator import Hallucinator as H

    q, k = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    plain = H(4, num_layers=0, extrapolation=(0.3, 0.3), extrapolation_mode="symmetric")
    q_hat, k_hat, _ = plain.pair(q, k)
    torch.testing.assert_close(q_hat, 1.3 * qn - 0.3 * kn)
    torch.testing.assert_close(k_hat, 1.3 * kn - 0.3 * qn)
    cosine = (qn * kn).sum(1)  # the pair's dot product falls: 1.78 c - 0.78 <= c for c <= 1
    torch.testing.assert_close((q_hat * k_hat).sum(1), 1.78 * cosine - 0.78)
    net = H(4, num_layers=1, extrapolation=(0.3, 0.3), extrapolation_mode="symmetric").double()
    q_hat, k_hat, _ = net.pair(q, k)
    layer = net.net[0]
    torch.testing.assert_close(q_hat, torch.cat([qn, 1.3 * qn - 0.3 * kn], 1) @ layer.weight.T + layer.bias)
    torch.testing.assert_close(k_hat, 1.3 * kn - 0.3 * qn)
    asymmetric = H(4, num_layers=0, extrapolation=(0.3, 0.3))
    q_hat, partner, _ = asymmetric.pair(q, k)
    assert partner is k and torch.allclose(q_hat, 1.3 * q - 0.3 * k)
    with pytest.raises(ValueError, match=r"^extrapolation_mode: 'mirror' is not one of \['asymmetric', 'symmetric'\]"):
        H(4, extrapolation_mode="mirror")


@pytest.mark.parametrize("mode", ["asymmetric", "symmetric"])
def test_pair_returns_q_hat_its_partner_and_the_extrapolated_q_prime(mode: str) -> None:
    """``pair`` hands callers ``q'`` (H's second input), computed here by hand: no state is left behind."""
    torch.manual_seed(0)
    hallucinator = Hallucinator(3, num_layers=1, extrapolation=(0.2, 0.2), extrapolation_mode=mode).double()
    q, k = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    state = dict(vars(hallucinator))
    pair = hallucinator.pair(q, k)
    assert vars(hallucinator) == state  # no side channel: pair() leaves the module as it was
    if mode == "symmetric":
        q, k = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    q_prime = 1.2 * q - 0.2 * k
    torch.testing.assert_close(pair.q_prime, q_prime)
    layer = hallucinator.net[0]
    torch.testing.assert_close(pair.q_hat, torch.cat([q, q_prime], 1) @ layer.weight.T + layer.bias)
    torch.testing.assert_close(pair.partner, k if mode == "asymmetric" else 1.2 * k - 0.2 * q)


def test_the_module_is_the_papers_and_nothing_more() -> None:
    """The paper's module (Sec. 3.3) takes the paper's arguments only; the study's variants are subclasses."""
    import inspect

    assert list(inspect.signature(Hallucinator).parameters) == [
        "dim",
        "num_layers",
        "hidden_dim",
        "extrapolation",
        "per_sample",
        "extrapolation_mode",
    ]
