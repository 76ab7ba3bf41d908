"""Config files, overrides and validation; lr schedule and loss-weight warm-up against hand-computed values."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest

from hallucinator.engine.config import (
    Config,
    ConfigError,
    TrainerConfig,
    dump_config,
    from_dict,
    load_config,
    normalised,
    parse_overrides,
    validate,
)
from hallucinator.engine.schedules import lr_factor, warmup_weight
from hallucinator.methods import METHOD_NAMES


def test_base_inheritance_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("model: {method: mocov2, width: 16, hparams: {temperature: 0.2}}\nseed: 3\n")
    (tmp_path / "cell.yaml").write_text("base: base.yaml\nmodel: {hparams: {queue_size: 4096}}\n")
    config = load_config(tmp_path / "cell.yaml", ["--trainer.max_epochs=7", "--hallucinator.enabled", "false"])
    assert config.model.method == "mocov2" and config.model.width == 16
    assert config.model.hparams == {"temperature": 0.2, "queue_size": 4096}  # merged, not replaced
    assert config.seed == 3 and config.trainer.max_epochs == 7 and config.hallucinator.enabled is False
    # the dump is a complete config that loads back to the same values
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_override_syntax() -> None:
    assert parse_overrides(["--a.b=1", "c.d=[1, 2]", "--e", "x"]) == {"a": {"b": 1}, "c": {"d": [1, 2]}, "e": "x"}
    with pytest.raises(ConfigError, match="--key=value"):
        parse_overrides(["--dangling"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--optimizer.schedule=cosin", r"optimizer\.schedule: 'cosin' is not one of \['cosine', 'step', 'constant'\]"),
        ("--model.method=swav", r"model\.method: 'swav' is not one of"),
        ("--trainer.precision=bf17", r"trainer\.precision: 'bf17' is not one of"),
        ("--trainer.max_epochs=ten", r"trainer\.max_epochs: expected an integer"),
        ("--hallucinator.extrapolation=[0.5, 0.1]", r"hallucinator\.extrapolation: need beta1 <= beta2"),
        ("--hallucinator.weight=2", r"hallucinator\.weight: must be in \[0, 1\]"),
        ("--data.crop_size=0", r"data\.crop_size: must be > 0, got 0"),
        ("--trainer.max_epoch=3", r"trainer\.max_epoch: unknown key; allowed keys here: \['max_epochs'"),
        ("--trainer.compile=fast", r"trainer\.compile: 'fast' is not one of \[false, true, 'max-autotune'\]"),
        ("--trainer.compile_scope=heads", r"trainer\.compile_scope: 'heads' is not one of \['backbone', 'method'\]"),
        (
            "--model.hparams.queue_size=64",
            r"model\.hparams: unknown hyper-parameter\(s\) \['queue_size'\] for 'simclr'",
        ),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_precision_aliases_and_types() -> None:
    config = load_config(None, ["--trainer.precision=bf16", "--optimizer.weight_decay=5e-4"])
    assert config.trainer.precision == "bf16-mixed"
    short = Config(trainer=TrainerConfig(precision="bf16"))
    with pytest.raises(ConfigError, match="trainer.precision: 'bf16'"):  # validate only checks: no normalising
        validate(short)
    assert short.trainer.precision == "bf16" and normalised(short).trainer.precision == "bf16-mixed"
    assert short.trainer.precision == "bf16"  # normalised() returned a copy
    assert config.optimizer.weight_decay == 5e-4  # YAML reads "5e-4" as a string; the float field converts it
    assert isinstance(config.hallucinator.extrapolation, tuple)


def test_linear_lr_scaling() -> None:
    config = from_dict({"optimizer": {"base_lr": 0.3}, "data": {"batch_size": 128}})
    assert config.lr() == pytest.approx(0.3 * 128 / 256)
    config.optimizer.scale_lr = False
    assert config.lr() == pytest.approx(0.3)


def test_schedules_by_hand() -> None:
    config = Config()
    config.optimizer.warmup_epochs = 2
    spe, total = 10, 100
    assert lr_factor(config, 0, spe, total) == pytest.approx(1 / 20)
    assert lr_factor(config, 19, spe, total) == pytest.approx(1.0)
    # cosine over the 80 steps after warm-up: step 60 is halfway
    assert lr_factor(config, 60, spe, total) == pytest.approx(0.5)
    assert lr_factor(config, 40, spe, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    config.optimizer.schedule, config.optimizer.milestones, config.optimizer.warmup_epochs = "step", [3, 6], 0
    assert [lr_factor(config, s, spe, total) for s in (29, 30, 59, 60)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_hallucination_weight_warmup_by_hand() -> None:
    config = Config()
    assert warmup_weight(config, 0, 10, 100) == 0.5  # off by default: the paper's average from step 0
    config.hallucinator.warmup_fraction = 0.5
    assert [warmup_weight(config, s, 10, 100) for s in (0, 25, 50, 90)] == pytest.approx([0, 0.25, 0.5, 0.5])
    config.hallucinator.warmup_fraction, config.hallucinator.warmup_epochs = 0.0, 2
    assert warmup_weight(config, 10, 10, 100) == pytest.approx(0.25)


def test_crop_size_sets_training_views_only() -> None:
    import torch

    from hallucinator.engine.module import build_augmentation

    config = load_config(None, ["--data.crop_size=24"])
    view1, view2 = build_augmentation(config)(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert view1.shape == view2.shape == (4, 3, 24, 24)
    assert config.data.image_size is None  # evaluation keeps the native 32 px


def test_class_list_is_for_imagenet200_only() -> None:
    assert load_config(None, ["--data.dataset=imagenet200", "--data.class_list=random"]).data.class_list == "random"
    with pytest.raises(
        ConfigError, match="data.class_list: only imagenet200 takes a class list, this config trains cifar10"
    ):
        load_config(None, ["--data.class_list=random"])


# the methods whose losses score predictions against stop-gradient targets (docs/methods.md)
STOP_GRADIENT_METHODS = {"simsiam", "byol", "mocov3", "nnclr", "dino"}


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_symmetric_extrapolation_is_refused_when_read_for_stop_gradient_methods(method: str) -> None:
    """Refused by validate (so --print-config and the sweep), not at step 0 inside forward."""
    overrides = [f"--model.method={method}", "--hallucinator.extrapolation_mode=symmetric"]
    if method in STOP_GRADIENT_METHODS:
        with pytest.raises(ConfigError, match=r"^hallucinator.extrapolation_mode: \w+ scores its predictions"):
            load_config(None, overrides)
        # without the Hallucinator the mode is moot
        load_config(None, [*overrides, "--hallucinator.enabled=false"])
    else:
        assert load_config(None, overrides).hallucinator.extrapolation_mode == "symmetric"
    with pytest.raises(ConfigError, match=r"hallucinator.extrapolation_mode: 'mirror' is not one of"):
        load_config(None, ["--hallucinator.extrapolation_mode=mirror"])


@pytest.mark.parametrize("method", sorted(STOP_GRADIENT_METHODS))
def test_the_method_refuses_a_symmetric_hallucinator_when_built(method: str) -> None:
    from hallucinator import Hallucinator, backbones, methods

    backbone = backbones.build("resnet18", cifar_stem=True, width=4)
    factory = partial(Hallucinator, extrapolation_mode="symmetric")
    with pytest.raises(ValueError, match="stop-gradient targets"):
        methods.build(method, backbone, hallucinator=factory)


@pytest.mark.parametrize("method", ["mocov2", "nnclr"])
def test_a_queue_the_global_batch_does_not_divide_is_refused_when_read(method: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^model.hparams.queue_size: 4096 is not a multiple of the 96 keys enqueued per step \(data.batch_size=96\)",
    ):
        load_config(None, [f"--model.method={method}", "--model.hparams.queue_size=4096", "--data.batch_size=96"])
    assert load_config(None, [f"--model.method={method}", "--model.hparams.queue_size=4096", "--data.batch_size=128"])


def test_hallucinator_variant_keys_reach_the_module_and_bad_values_name_the_key() -> None:
    from hallucinator.engine.module import build_method
    from hallucinator.hallucinator_variants import AdversarialHallucinator, FrozenHallucinator, GuardedHallucinator

    overrides = ["--model.width=4", "--hallucinator.train_mode=adversarial", "--hallucinator.adversarial_strength=0.03"]
    h = build_method(load_config(None, overrides)).hallucinator
    assert isinstance(h, AdversarialHallucinator) and h.adversarial_strength == 0.03
    h = build_method(
        load_config(None, ["--model.width=4", "--hallucinator.guard_weight=2", "--hallucinator.guard_margin=0.1"])
    ).hallucinator
    assert isinstance(h, GuardedHallucinator) and (h.guard_weight, h.guard_margin) == (2.0, 0.1)
    h = build_method(load_config(None, ["--model.width=4", "--hallucinator.train_mode=frozen"])).hallucinator
    assert isinstance(h, FrozenHallucinator)
    with pytest.raises(ConfigError, match=r"hallucinator.train_mode: 'reverse' is not one of"):
        load_config(None, ["--hallucinator.train_mode=reverse"])
    with pytest.raises(ConfigError, match=r"hallucinator.adversarial_strength: must be in \(0, 1\]"):
        load_config(None, ["--hallucinator.train_mode=adversarial", "--hallucinator.adversarial_strength=2"])
    with pytest.raises(ConfigError, match="hallucinator.guard_weight: the hardness guard needs train_mode joint"):
        load_config(None, ["--hallucinator.train_mode=frozen", "--hallucinator.guard_weight=1"])


def test_concat_loss_form_is_read_for_simclr_and_moco_and_refused_elsewhere() -> None:
    from hallucinator.engine.module import build_method

    concat = ["--hallucinator.loss_form=concat", "--model.width=4"]
    for method in ("simclr", "mocov1", "mocov2"):
        assert build_method(load_config(None, [f"--model.method={method}", *concat])).loss_form == "concat"
    with pytest.raises(ConfigError, match=r"^hallucinator.loss_form: BYOL has no concatenated loss form"):
        load_config(None, ["--model.method=byol", *concat])
    with pytest.raises(ConfigError, match=r"^hallucinator.warmup_fraction: loss_form concat is one loss"):
        load_config(None, [*concat, "--hallucinator.warmup_fraction=0.5"])
    with pytest.raises(ConfigError, match=r"^hallucinator.loss_form: 'sum' is not one of"):
        load_config(None, ["--hallucinator.loss_form=sum"])
    # MoCo's queue then takes 2N keys a step
    with pytest.raises(ConfigError, match=r"^model.hparams.queue_size: 384 is not a multiple of the 256 keys"):
        load_config(None, ["--model.method=mocov2", *concat, "--data.batch_size=128", "--model.hparams.queue_size=384"])


def test_trainer_compile_says_what_torch_compile_compiles_and_how(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from hallucinator.engine.module import compile_in_place

    compiled: list[tuple[str, dict | None]] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, options=None: compiled.append((self.name, options)))
    method = nn.Module()
    method.name, method.backbone = "method", nn.Module()
    method.backbone.name = "backbone"
    for overrides in ([], ["--trainer.compile=false"]):
        compile_in_place(load_config(None, overrides), method)
    assert compiled == []
    compile_in_place(load_config(None, ["--trainer.compile=true"]), method)  # as before the option had modes
    compile_in_place(load_config(None, ["--trainer.compile=max-autotune"]), method)
    compile_in_place(load_config(None, ["--trainer.compile=true", "--trainer.compile_scope=method"]), method)
    assert compiled == [
        ("backbone", None),
        ("backbone", {"max_autotune": True, "triton.cudagraphs": True, "coordinate_descent_tuning": True}),
        ("method", {"fallback_random": True}),  # the method's random draws as in eager mode
    ]
