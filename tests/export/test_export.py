"""The state-dict exports (``torchvision``, ``detectron2``, ``timm``) and ``export_checkpoint``, from Python and the CLI."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torchvision

from hallucinator import backbones
from hallucinator.cli import export as cli_export
from hallucinator.cli import main
from hallucinator.export import (
    CHECKPOINT_FORMATS,
    detectron2_key,
    detectron2_model,
    export_checkpoint,
    export_state_dict,
    timm_counterpart,
    timm_loading_code,
    timm_state_dict,
)
from tests.evaluation.conftest import fabricate_checkpoint
from tests.export.conftest import method_checkpoint, printed_command

# detectron2's ResNet names (before its matching heuristics): stem.conv1[_norm], resN.i.convK[_norm], shortcut[_norm]
DETECTRON2_NAME = re.compile(
    r"^(stem\.conv1(_norm)?|res[2-5]\.\d+\.(conv[1-3](_norm)?|shortcut(_norm)?))\.(weight|bias|running_mean|running_var)$"
)


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return backbones.build("resnet50").state_dict()


def test_backbone_keys_are_torchvision_keys(resnet50_state):
    reference = torchvision.models.resnet50().state_dict()
    assert set(resnet50_state) == set(reference) - {"fc.weight", "fc.bias"}


def test_detectron2_names_follow_mocos_convert_script():
    # the renaming of MoCo's convert-pretrain-to-detectron2.py, written out by hand
    expected = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1_norm.running_var",
        "layer1.0.conv3.weight": "res2.0.conv3.weight",
        "layer1.0.bn2.bias": "res2.0.conv2_norm.bias",
        "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
        "layer3.5.bn3.running_mean": "res4.5.conv3_norm.running_mean",
        "layer4.0.downsample.1.weight": "res5.0.shortcut_norm.weight",
    }
    assert {key: detectron2_key(key) for key in expected} == expected


def test_detectron2_export_round_trip(tmp_path, resnet50_state):
    path = export_state_dict(resnet50_state, tmp_path / "r50.pkl", "detectron2", arch="resnet50")
    with path.open("rb") as handle:
        data = pickle.load(handle)
    assert data["matching_heuristics"] is True and data["__author__"] == "hallucinator"
    model = data["model"]
    assert all(DETECTRON2_NAME.match(name) for name in model), [n for n in model if not DETECTRON2_NAME.match(n)]
    kept = {k: v for k, v in resnet50_state.items() if not k.endswith("num_batches_tracked")}
    assert len(model) == len(kept)  # one name per tensor, nothing merged

    def back(name: str) -> str:  # the inverse renaming, independently of the code under test
        name = re.sub(r"^stem\.", "", name)
        name = re.sub(r"^res([2-5])\.", lambda m: f"layer{int(m.group(1)) - 1}.", name)
        name = re.sub(r"conv([1-3])_norm\.", r"bn\1.", name)
        return name.replace("shortcut_norm.", "downsample.1.").replace("shortcut.", "downsample.0.")

    restored = {back(name): torch.from_numpy(value) for name, value in model.items()}
    assert restored.keys() == kept.keys()
    assert all(torch.equal(restored[k], kept[k]) for k in kept)


def test_torchvision_export_loads_with_only_fc_missing(tmp_path, resnet50_state):
    path = export_state_dict(resnet50_state, tmp_path / "r50.pth", "torchvision", arch="resnet50")
    model = torchvision.models.resnet50()
    result = model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and result.unexpected_keys == []
    backbone = backbones.build("resnet50")
    backbone.load_state_dict(resnet50_state)
    model.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), backbone.eval()(x))


def test_narrow_backbone_warns_and_unknown_format_fails(tmp_path):
    narrow = backbones.build("resnet18", cifar_stem=True, width=8).state_dict()
    with pytest.warns(UserWarning, match="width-64"):
        export_state_dict(narrow, tmp_path / "r18.pth", "torchvision", arch="resnet18")
    with pytest.raises(ValueError, match="detectron2"):
        export_state_dict(narrow, tmp_path / "r18.x", "onnx")
    assert detectron2_model(narrow)["model"]["stem.conv1.weight"].shape == (8, 3, 3, 3)


def test_export_checkpoint_and_cli(tmp_path, capsys):
    checkpoint = fabricate_checkpoint(tmp_path / "run", width=64)
    backbone = backbones.build("resnet18", cifar_stem=True, width=64)
    stored = torch.load(checkpoint, weights_only=True)["state_dict"]
    backbone.load_state_dict({k.removeprefix("method.backbone."): v for k, v in stored.items() if "backbone" in k})
    with pytest.warns(UserWarning, match="conv1.weight"):  # the CIFAR stem's 3x3 conv
        out = export_checkpoint(checkpoint, tmp_path / "r18.pth")
    exported = torch.load(out, weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in backbone.state_dict().items())
    with pytest.warns(UserWarning, match="conv1.weight"):
        assert main([str(a) for a in ("export", checkpoint, tmp_path / "d2.pkl", "--format", "detectron2")]) == 0
    assert "detectron2" in capsys.readouterr().out
    with (tmp_path / "d2.pkl").open("rb") as handle:
        assert "res5.1.conv2_norm.weight" in pickle.load(handle)["model"]
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


# ---- timm


def test_timm_export_of_a_vit_loads_strictly_into_timm(tmp_path):
    import timm

    torch.manual_seed(0)
    vit = backbones.build("vit_tiny", image_size=32)
    path = export_state_dict(vit.state_dict(), tmp_path / "vit.pth", "timm", arch="vit_tiny", image_size=32)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, patch_size=4, img_size=32)
    result = model.load_state_dict(torch.load(path, weights_only=True))
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), vit.eval()(x))
    assert timm_loading_code("vit_tiny", 32) == (
        "timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, patch_size=4, img_size=32)"
    )
    with pytest.raises(ValueError, match="--format timm"):
        export_state_dict(vit.state_dict(), tmp_path / "vit-tv.pth", "torchvision", arch="vit_tiny")


def test_timm_export_of_a_resnet_and_safetensors(tmp_path, resnet50_state):
    import timm
    from safetensors.torch import load_file

    path = export_state_dict(resnet50_state, tmp_path / "r50.safetensors", "timm", arch="resnet50", safetensors=True)
    weights = load_file(path)
    assert weights.keys() == resnet50_state.keys() and all(
        torch.equal(weights[k], v) for k, v in resnet50_state.items()
    )
    model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    assert not any(model.load_state_dict(weights))  # no missing, no unexpected key
    backbone = backbones.build("resnet50")
    backbone.load_state_dict(resnet50_state)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), backbone.eval()(x))
    with pytest.raises(ValueError, match="detectron2 reads its pickled format only"):
        export_state_dict(resnet50_state, tmp_path / "r50.pkl", "detectron2", arch="resnet50", safetensors=True)
    with pytest.raises(ValueError, match="no timm counterpart"):
        export_state_dict(resnet50_state, tmp_path / "x.pth", "timm", arch="vgg11")


def test_timm_export_from_the_cli(tmp_path, capsys):
    checkpoint = fabricate_checkpoint(tmp_path / "run", backbone="vit_tiny", width=64)
    out = tmp_path / "vit.safetensors"
    assert main(["export", str(checkpoint), str(out), "--format", "timm", "--safetensors"]) == 0
    printed = capsys.readouterr().out
    assert (
        "timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, patch_size=4, img_size=32)"
        in printed
    )
    import timm
    from safetensors.torch import load_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, patch_size=4, img_size=32)
    assert not any(model.load_state_dict(load_file(out)))
    namespace: dict = {}
    exec(printed_command(printed, "load them with: "), namespace)  # the printed command, as a user runs it
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(namespace["model"].eval()(x), model.eval()(x))


# ---- every printed load command works (issue 27, item 7)


@pytest.mark.parametrize("safetensors", [False, True], ids=["pickle", "safetensors"])
def test_the_printed_timm_command_of_a_standard_resnet_loads_it_strictly(tmp_path, capsys, safetensors):
    checkpoint = method_checkpoint(tmp_path / "run", width=64, cifar_stem=False)
    out = tmp_path / ("r18.safetensors" if safetensors else "r18.pth")
    assert main(["export", str(checkpoint), str(out), "--format", "timm", *(["--safetensors"] * safetensors)]) == 0
    command = printed_command(capsys.readouterr().out, "load them with: ")
    assert "timm.create_model('resnet18', pretrained=False, num_classes=0)" in command
    namespace: dict = {}
    exec(command, namespace)  # load_state_dict is strict: a missing or unexpected key would raise
    from hallucinator.engine.checkpoint import load_pretrained

    backbone, _ = load_pretrained(checkpoint)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(namespace["model"].eval()(x), backbone.eval()(x))


def test_timm_refuses_what_it_cannot_build_naming_the_formats_that_work(tmp_path, capsys):
    # timm's plain ResNet stem is always a 64-channel 7x7 conv + max-pool: neither a narrow width nor the CIFAR stem
    assert timm_counterpart("resnet18", width=16, cifar_stem=False) is None
    assert timm_counterpart("resnet18", width=64, cifar_stem=True) is None
    assert timm_counterpart("vit_tiny", image_size=32) == ("vit_tiny_patch16_224", {"patch_size": 4, "img_size": 32})
    for width, cifar_stem in ((16, False), (64, True)):
        state = backbones.build("resnet18", cifar_stem=cifar_stem, width=width).state_dict()
        with pytest.raises(ValueError, match="use --format torchvision / hf / onnx"):
            timm_state_dict(state, "resnet18")
    checkpoint = fabricate_checkpoint(tmp_path / "run", width=16)  # the quickstart's network: width 16, CIFAR stem
    out = tmp_path / "r18.pth"
    assert main(["export", str(checkpoint), str(out), "--format", "timm"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("hallucinator export: --format timm: timm's resnet18 cannot hold these weights")
    assert line.endswith("use --format torchvision / hf / onnx") and "timm.create_model" not in captured.out
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:.*width-64")  # the narrow net's, tested above
@pytest.mark.parametrize(("width", "cifar_stem"), [(16, True), (64, False)], ids=["narrow-cifar", "standard"])
def test_the_printed_torchvision_command_loads_the_weights(tmp_path, capsys, width, cifar_stem):
    checkpoint = method_checkpoint(tmp_path / "run", width=width, cifar_stem=cifar_stem)
    assert main(["export", str(checkpoint), str(tmp_path / "r18.pth")]) == 0
    command = printed_command(capsys.readouterr().out, "load them with: ")
    assert ("torchvision.models.resnet18()" in command) == (width == 64 and not cifar_stem)
    namespace: dict = {}
    exec(command, namespace)
    from hallucinator.engine.checkpoint import load_pretrained

    backbone, _ = load_pretrained(checkpoint)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(namespace["model"].eval()(x), backbone.eval()(x))


def test_options_that_do_not_apply_to_the_format_are_refused(tmp_path, capsys):
    checkpoint = fabricate_checkpoint(tmp_path / "run")
    cases = {
        ("--format", "onnx", "--safetensors"): "--safetensors applies to --format torchvision / timm, not onnx",
        ("--format", "hf", "--safetensors"): "--safetensors applies to --format torchvision / timm, not hf",
        ("--part", "projector"): "--part projector: only --format onnx exports more than the backbone",
    }
    for options, message in cases.items():
        assert main(["export", str(checkpoint), str(tmp_path / "out"), *options]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="exports a whole checkpoint"):
        export_state_dict({}, tmp_path / "x.onnx", "onnx")
    assert cli_export.FORMATS == CHECKPOINT_FORMATS  # the CLI's copy (its parser imports no torch)
