"""Every method trains with every Hallucinator variant; the hardness monitors draw no random numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_method_registry import SMALL  # every registered method's small heads (pytest puts tests/methods on the path)

from hallucinator import Hallucinator, methods
from hallucinator.hallucinator_variants import HallucinatorOptions

VARIANTS = {
    "joint": {},
    "adversarial": {"train_mode": "adversarial", "adversarial_strength": 0.1},
    "frozen": {"train_mode": "frozen"},
    "guard": {"guard_weight": 0.5, "guard_margin": 2.0},  # bound below -1: always violated (weight 1 would
    # exactly cancel SimSiam's hallucinated loss, -cos(q_hat, k), leaving H no gradient)
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_method_trains_with_every_variant(name: str, tiny_net, views) -> None:
    for variant, options in VARIANTS.items():
        torch.manual_seed(0)
        model = methods.build(name, tiny_net(), hallucinator=HallucinatorOptions(**options).build(8), **SMALL[name])
        out = model(*views)
        out["loss"].backward()
        grads = [p.grad for p in model.hallucinator.parameters()]
        assert torch.isfinite(out["loss"]) and -1 <= out["extrap_similarity"] <= 1, (name, variant)
        if variant == "frozen":
            assert all(g is None for g in grads)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), (name, variant)
        assert model.backbone.conv.weight.grad.abs().sum() > 0
        assert ("guard_penalty" in out) == (variant == "guard")
        if variant == "guard":
            w = model.hallucination_weight
            expected = (1 - w) * out["loss_original"] + w * (out["loss_hallucinated"] + 0.5 * out["guard_penalty"])
            torch.testing.assert_close(out["loss"], expected)
            assert out["guard_penalty"] > 0


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
