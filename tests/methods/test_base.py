"""The shared ``SSLMethod`` contract for all ten methods: the Hallucinator it builds, the loss dict with its hardness
monitors, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hallucinator import Hallucinator, methods
from tests.conftest import SMALL


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_factory_is_called_once_with_the_feature_size_the_method_hallucinates(name: str, tiny_net) -> None:
    calls = []

    def factory(dim: int) -> Hallucinator:
        calls.append(dim)
        return Hallucinator(dim, num_layers=1)

    model = methods.build(name, tiny_net(), hallucinator=factory, **SMALL[name])
    # every method hallucinates in its embedding size (the registry's ``dim``; DINO: its bottleneck, before the prototypes)
    dim = SMALL[name]["bottleneck_dim" if name == "dino" else "dim"]
    assert calls == [dim] and model.hallucinator.dim == dim
    assert sum(isinstance(layer, nn.Linear) for layer in model.hallucinator.net) == 1  # the factory's, not a default
    with pytest.raises(ValueError, match="factory of one, got str"):
        methods.build(name, tiny_net(), hallucinator=lambda dim: "not a Hallucinator", **SMALL[name])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_contract_with_and_without_the_hallucinator(name: str, tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(name, tiny_net(), **SMALL[name]).train()
    out = model(*views)
    assert {"loss", "loss_original", "loss_hallucinated", "pos_similarity", "hal_similarity"} <= set(out)
    for key in ("pos_similarity", "hal_similarity"):
        assert not out[key].requires_grad and -1 <= out[key].item() <= 1
    # the backbone's features of view 1, detached: what the online linear probe trains on
    assert out["features"].shape == (8, 6) and not out["features"].requires_grad
    torch.testing.assert_close(out["loss"], 0.5 * out["loss_original"] + 0.5 * out["loss_hallucinated"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.hallucinator.parameters())
    assert model.backbone.conv.weight.grad.abs().sum() > 0

    plain = methods.build(name, tiny_net(), hallucinator=False, **SMALL[name]).train()
    out = plain(*views)
    assert "loss_hallucinated" not in out and out["loss"] is out["loss_original"]
    assert plain.hallucinator is None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bad_input_says_what_is_wrong_and_what_to_change(name: str, tiny_net) -> None:
    model = methods.build(name, tiny_net(), **SMALL[name]).train()
    with pytest.raises(ValueError, match="same shape.*crop both views to the same image size"):
        model(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 6, 6))
    with pytest.raises(ValueError, match="batch of 1 image is too small.*at least 2"):
        model(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8))

    lying = tiny_net()
    lying.num_features = 5  # the heads are built for 5 features but the backbone returns 6
    with pytest.raises(ValueError, match=r"returned features of shape \((8|16), 6\) but its num_features is 5"):
        methods.build(name, lying, **SMALL[name]).train()(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
    with pytest.raises(ValueError, match="num_features"):
        methods.build(name, nn.Conv2d(3, 4, 3), **SMALL[name])


@pytest.mark.parametrize("name", ["simclr", "simsiam"])
def test_the_hardness_monitors_leave_the_random_stream_and_the_loss_unchanged(name: str, tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(name, tiny_net(), hallucinator=Hallucinator(8), **SMALL[name])
    torch.manual_seed(5)
    out = model(*views)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    lam = 0.1 * torch.rand(()).item()  # the step's only draw: one lam for the batch
    assert torch.equal(after, torch.get_rng_state())
    torch.testing.assert_close(out["loss"], 0.5 * out["loss_original"] + 0.5 * out["loss_hallucinated"], rtol=0, atol=0)
    # cos(q', k) against an independent extrapolation of the logged pair
    if name == "simclr":
        q = model.projector(model.backbone(views[0]))
        k = model.projector(model.backbone(views[1]))
        expected = F.cosine_similarity(q + lam * (q - k), k, dim=1).mean()
        torch.testing.assert_close(out["extrap_similarity"], expected.detach())
