"""The registry: each method's defaults, ``build`` and ``register_method``, and the names and hyper-parameters it refuses."""

from __future__ import annotations

import inspect

import pytest
import torch

from hallucinator import Hallucinator, methods
from tests.conftest import SMALL


def test_registry_defaults_are_the_methods_own_hyper_parameters(tiny_net) -> None:
    assert sorted(methods.METHODS) == sorted(SMALL) == list(methods.METHOD_NAMES)
    v1, v2 = methods.METHODS["mocov1"].hparams, methods.METHODS["mocov2"].hparams
    for hparams in (v1, v2):
        assert (hparams["dim"], hparams["queue_size"], hparams["momentum"]) == (128, 65536, 0.999)
    # temperature and head follow the version the name fixes: v1 T 0.07, linear; v2 T 0.2, MLP
    built = [methods.build(name, tiny_net(), hallucinator=False, queue_size=16) for name in ("mocov1", "mocov2")]
    assert [(m.version, m.temperature, len(m.projector)) for m in built] == [(1, 0.07, 1), (2, 0.2, 3)]
    assert methods.METHODS["dino"].hparams["out_dim"] == 65536  # DINO's own; configs/quickstart_dino.yaml: 4096
    assert methods.METHODS["simsiam"].hparams["dim"] == 2048
    assert all(spec.hparams["hallucination_weight"] == 0.5 for spec in methods.METHODS.values())
    # the public CIFAR recipes (solo-learn) of the five methods beyond the paper
    byol, mocov3 = methods.METHODS["byol"].hparams, methods.METHODS["mocov3"].hparams
    for hparams in (byol, mocov3):
        assert (hparams["dim"], hparams["hidden_dim"], hparams["pred_hidden_dim"]) == (256, 4096, 4096)
        assert (hparams["momentum"], hparams["final_momentum"]) == (0.99, 1.0)
    assert mocov3["temperature"] == 0.2
    bt, vic = methods.METHODS["barlowtwins"].hparams, methods.METHODS["vicreg"].hparams
    assert (bt["dim"], bt["hidden_dim"], bt["proj_layers"], bt["lambd"], bt["scale_loss"]) == (
        2048,
        2048,
        3,
        0.0051,
        0.1,
    )
    assert (vic["dim"], vic["sim_coeff"], vic["std_coeff"], vic["cov_coeff"]) == (2048, 25.0, 25.0, 1.0)
    nnclr = methods.METHODS["nnclr"].hparams
    assert (nnclr["dim"], nnclr["hidden_dim"], nnclr["pred_hidden_dim"], nnclr["temperature"], nnclr["queue_size"]) == (
        256,
        2048,
        4096,
        0.2,
        65536,
    )


def test_build_defaults_are_the_class_signatures(tiny_net) -> None:
    """One source of defaults: what ``build(name)`` passes a class is the class's own default, except what the
    name fixes (MoCo's ``version``)."""
    for name, spec in methods.METHODS.items():
        signature = inspect.signature(spec.cls)
        for key, value in spec.hparams.items():
            assert signature.parameters[key].default == value, (name, key)
        assert set(spec.hparams) | set(spec.fixed) | {"backbone", "hallucinator"} >= set(signature.parameters) - {
            "loss_form"
        }
    assert methods.METHODS["mocov1"].fixed == {"version": 1} and methods.METHODS["mocov2"].fixed == {"version": 2}
    assert methods.METHODS["dino"].multi_crop and not methods.METHODS["simclr"].multi_crop
    assert (methods.METHODS["simsiam"].augmentation, methods.METHODS["byol"].augmentation) == ("simsiam", "simclr")
    # what build() made is what the class makes by itself (the same draws from the same seed)
    torch.manual_seed(0)
    by_name = methods.build("byol", tiny_net(), **SMALL["byol"])
    torch.manual_seed(0)
    by_class = methods.BYOL(tiny_net(), **SMALL["byol"])
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), by_class.state_dict().values()))


def test_a_decorated_class_is_registered_under_its_name() -> None:
    from hallucinator.methods.registry import register_method

    @register_method("test_only_simclr", augmentation="simsiam", loss_scale=2.0)
    class Scaled(methods.SimCLR):
        pass

    try:
        spec = methods.METHODS["test_only_simclr"]
        assert (spec.cls, spec.fixed, spec.augmentation) == (Scaled, {"loss_scale": 2.0}, "simsiam")
        assert "loss_scale" not in spec.hparams and spec.hparams["temperature"] == 0.5
        with pytest.raises(ValueError, match="'test_only_simclr' is already registered"):
            register_method("test_only_simclr")(Scaled)
    finally:
        del methods.METHODS["test_only_simclr"]


def test_build_picks_class_version_and_defaults(tiny_net) -> None:
    v1 = methods.build("mocov1", tiny_net())
    assert isinstance(v1, methods.MoCo) and v1.version == 1 and v1.temperature == 0.07
    assert isinstance(v1.hallucinator, Hallucinator) and v1.hallucinator.dim == 128
    assert isinstance(methods.build("simsiam", tiny_net(), hallucinator=False), methods.SimSiam)
    custom = Hallucinator(dim=8, num_layers=1)
    assert methods.build("simclr", tiny_net(), hallucinator=custom, dim=8).hallucinator is custom


def test_build_rejects_unknown_names_hparams_and_mismatched_hallucinators(tiny_net) -> None:
    with pytest.raises(ValueError, match=r"choose one of \['barlowtwins', 'byol', 'dino', 'mocov1', .*'vicreg'\]"):
        methods.build("swav", tiny_net())
    with pytest.raises(ValueError, match=r"\['tau'\].*valid ones are .*'temperature'"):
        methods.build("simclr", tiny_net(), tau=0.1)
    with pytest.raises(ValueError, match="Hallucinator\\(dim=128"):
        methods.build("mocov2", tiny_net(), hallucinator=Hallucinator(dim=64))
    with pytest.raises(ValueError, match="hallucination_weight"):
        methods.build("simclr", tiny_net(), hallucination_weight=1.5)
