"""Hallucinator variants beyond the paper (train_mode, hardness guard) against independent computations,
the one list of options (``HallucinatorOptions``) that the config section is, and every method trained with every
variant."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import torch.nn.functional as F

from hallucinator import Hallucinator, methods
from hallucinator.engine.config import ConfigError, HallucinatorConfig, load_config
from hallucinator.engine.module import build_method
from hallucinator.hallucinator import OptionError
from hallucinator.hallucinator_variants import (
    TRAIN_MODES,
    AdversarialHallucinator,
    FrozenHallucinator,
    GuardedHallucinator,
    HallucinatorOptions,
    constructor_options,
)
from tests.conftest import SMALL


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
    adversary = AdversarialHallucinator(4, num_layers=2, adversarial_strength=strength).double()
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
    frozen = FrozenHallucinator(4).double()
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
    restored = FrozenHallucinator(4).double()
    restored.load_state_dict(frozen.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), frozen.parameters()))
    assert not any(p.requires_grad for p in restored.parameters())


def test_guard_is_zero_when_satisfied_and_the_hand_computed_hinge_otherwise() -> None:
    h = GuardedHallucinator(2, num_layers=0, extrapolation=(1.0, 1.0), guard_weight=1.0)
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    pair = h.pair(q, k)  # q_hat = q' = 2q - k = [[1, -1], [2, -1]]
    # cos(q', k): row 0: 0; row 1: -1/sqrt(5)
    torch.testing.assert_close(pair.q_prime, torch.tensor([[1.0, -1.0], [2.0, -1.0]]))
    assert h.guard_penalty(pair, q).item() == 0.0  # q_hat = q' satisfies its own bound
    harder = pair._replace(q_hat=torch.tensor([[0.0, -1.0], [0.0, -1.0]]))  # cos with k: -1/sqrt(2), -1
    assert h.guard_penalty(harder, q).item() == 0.0
    easier = pair._replace(q_hat=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))  # cos with k: 1, 0
    expected = ((1.0 - 0.0) + (0.0 + 1 / 5**0.5)) / 2
    assert h.guard_penalty(easier, q).item() == pytest.approx(expected, rel=1e-6)
    # margin bound: cos(q, k) - 0.5 = [1/sqrt(2) - 0.5, -0.5]
    h.guard_margin = 0.5
    expected = (max(0.0, 1.0 - (2**-0.5 - 0.5)) + max(0.0, 0.0 + 0.5)) / 2
    assert h.guard_penalty(easier, q).item() == pytest.approx(expected, rel=1e-6)
    assert h.guard_penalty(harder, q).item() == 0.0


def test_guard_gradient_moves_q_hat_not_the_target() -> None:
    h = GuardedHallucinator(2, num_layers=1, guard_weight=1.0, guard_margin=-2.0)  # bound above 1: never violated
    q, k = _pair(dim=2)
    k = k.float().requires_grad_(True)
    pair = h.pair(q.float(), k.detach())._replace(partner=k)
    assert h.guard_penalty(pair, q.float()).item() == 0.0
    h.guard_margin = 2.0  # bound below -1: always violated
    penalty = h.guard_penalty(pair, q.float())
    penalty.backward()
    assert k.grad is None and penalty.item() > 0
    assert h.net[0].weight.grad.abs().sum() > 0


def test_guard_gradient_reaches_the_encoder_through_h_inputs_not_through_the_target() -> None:
    """As the docstring says: the target k and the bound are constants in the penalty, but H's inputs q and
    q' = q + lam (q - k) are not cut, so the gradient reaches q and, through q', k."""
    torch.manual_seed(0)
    h = GuardedHallucinator(3, num_layers=2, extrapolation=(0.5, 0.5), guard_weight=1.0, guard_margin=2.0).double()
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    h.guard_penalty(h.pair(q, k), q).backward()
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


def test_bad_variant_options_are_one_line_errors_naming_the_option() -> None:
    with pytest.raises(OptionError, match=r"^train_mode: 'reverse' is not one of \['joint', 'adversarial', 'frozen'\]"):
        HallucinatorOptions(train_mode="reverse").build(4)
    with pytest.raises(OptionError, match=r"^adversarial_strength: must be in \(0, 1\]"):
        AdversarialHallucinator(4, adversarial_strength=0.0)
    with pytest.raises(OptionError, match="^guard_weight: must be >= 0"):
        GuardedHallucinator(4, guard_weight=-1.0)
    with pytest.raises(OptionError, match="^guard_weight: the hardness guard needs train_mode joint"):
        HallucinatorOptions(train_mode="frozen", guard_weight=1.0).build(4)


def test_options_build_the_papers_module_by_default_and_each_variant_by_its_keys() -> None:
    assert type(HallucinatorOptions().build(4)) is Hallucinator
    h = HallucinatorOptions().build(4)
    assert all(p.requires_grad for p in h.parameters()) and len(h.net) == 5
    chosen = {
        "adversarial": HallucinatorOptions(train_mode="adversarial", adversarial_strength=0.03),
        "frozen": HallucinatorOptions(train_mode="frozen"),
        "guard": HallucinatorOptions(guard_weight=2.0, guard_margin=0.1),
    }
    adversary, frozen, guarded = (options.build(4) for options in chosen.values())
    assert isinstance(adversary, AdversarialHallucinator) and adversary.adversarial_strength == 0.03
    assert isinstance(frozen, FrozenHallucinator) and not any(p.requires_grad for p in frozen.parameters())
    assert isinstance(guarded, GuardedHallucinator) and (guarded.guard_weight, guarded.guard_margin) == (2.0, 0.1)
    # the paper's options reach every class
    built = HallucinatorOptions(num_layers=2, hidden_dim=6, extrapolation=(0.2, 0.3), per_sample=True).build(4)
    assert (built.extrapolation, built.per_sample, [m.out_features for m in built.net[::2]]) == (
        (0.2, 0.3),
        True,
        [6, 4],
    )


def test_every_option_is_a_constructor_argument_with_its_default_and_every_argument_an_option() -> None:
    """One list: a field of HallucinatorOptions (and so a key of the config's ``hallucinator`` section) for each
    argument of the paper's module and of the variants, with the same default."""
    fields = {f.name: f.default for f in dataclasses.fields(HallucinatorOptions)}
    arguments: dict[str, object] = {}
    for cls in (Hallucinator, AdversarialHallucinator, FrozenHallucinator, GuardedHallucinator):
        assert set(constructor_options(cls)) <= set(fields), cls.__name__
        for name, parameter in inspect.signature(cls).parameters.items():
            if parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name != "dim":
                arguments.setdefault(name, parameter.default)
    assert set(arguments) | {"train_mode"} == set(fields)  # train_mode picks the class
    paper = {n: p.default for n, p in inspect.signature(Hallucinator).parameters.items() if n != "dim"}
    assert {name: fields[name] for name in paper} == paper
    # the variants' switches default to off: the paper's module
    assert (fields["train_mode"], fields["guard_weight"]) == ("joint", 0.0)
    config_keys = {f.name for f in dataclasses.fields(HallucinatorConfig)}
    assert set(fields) <= config_keys and issubclass(HallucinatorConfig, HallucinatorOptions)
    assert TRAIN_MODES == ("joint", "adversarial", "frozen")


def test_the_config_section_builds_the_module_through_the_options_and_reports_their_checks() -> None:
    config = load_config(None, ["--model.width=4", "--hallucinator.num_layers=2", "--hallucinator.hidden_dim=12"])
    with torch.device("meta"):
        model = build_method(config)
    assert [m.out_features for m in model.hallucinator.net[::2]] == [12, 128]
    for override, message in (
        ("--hallucinator.num_layers=-1", r"^hallucinator\.num_layers: must be >= 0"),
        ("--hallucinator.hidden_dim=0", r"^hallucinator\.hidden_dim: must be positive"),
        ("--hallucinator.train_mode=reverse", r"^hallucinator\.train_mode: 'reverse' is not one of"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_config(None, ["--hallucinator.num_layers=4"])  # the check builds on the meta device: no random draw
    assert torch.equal(torch.rand(3), expected)


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
