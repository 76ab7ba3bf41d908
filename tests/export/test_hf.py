"""``--format hf``: a Hugging Face style folder that hallucinator, timm and torchvision load, as its model card says."""

from __future__ import annotations

import json
import re

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

import hallucinator
from hallucinator.cli import main
from hallucinator.data import eval_transform
from hallucinator.engine.checkpoint import load_pretrained
from tests.export.conftest import method_checkpoint

CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
EVALUATION = {
    "knn": {"top1": 41.25, "top5": 88.5, "k": 200, "temperature": 0.1, "dataset": "cifar10"},
    "linear_fast": {"top1": 45.5, "best_top1": 46.0, "epochs": 30, "dataset": "cifar10"},
    "train": {"seconds": 3780.0, "steps": 7, "epochs": 1.0, "images_per_second": 812.5, "machine": "1x H200"},
}
NETWORKS = {  # backbone, width, CIFAR stem; timm.create_model's arguments (None: timm cannot build the network)
    "resnet18-w16-cifar": ("resnet18", 16, True, None),
    "resnet18-w64": ("resnet18", 64, False, "'resnet18'"),
    "vit_tiny": ("vit_tiny", 64, False, "'vit_tiny_patch16_224'"),
}
TIMM_KWARGS = {"vit_tiny": ", patch_size=4, img_size=32"}


@pytest.fixture(scope="module")
def images(cifar10_subset) -> torch.Tensor:
    """One real image of each class, normalised as the run's evaluation does."""
    pixels, labels = cifar10_subset
    first = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(10)])
    return eval_transform("cifar10", 32)(pixels[first])


def _export(tmp_path, capsys, network: str, evaluation: dict | None = None):
    backbone, width, cifar_stem, _ = NETWORKS[network]
    checkpoint = method_checkpoint(tmp_path / "run", backbone=backbone, width=width, cifar_stem=cifar_stem)
    if evaluation is not None:
        (tmp_path / "run" / "evaluation.json").write_text(json.dumps(evaluation))
    out = tmp_path / "export"
    assert main(["export", str(checkpoint), str(out), "--format", "hf"]) == 0
    return checkpoint, out, capsys.readouterr().out


@pytest.mark.parametrize("network", NETWORKS)
def test_every_printed_and_documented_load_command_gives_the_original_features(tmp_path, capsys, images, network):
    checkpoint, out, printed = _export(tmp_path, capsys, network)
    original, _ = load_pretrained(checkpoint)
    with torch.no_grad():
        expected = original.eval()(images)
    commands = dict(re.findall(r"^load it with ([^:]+): (.*)$", printed, re.M))
    assert next(iter(commands)) == "hallucinator"
    timm_arguments = NETWORKS[network][3]
    assert ("timm" in commands) == (timm_arguments is not None) and ("torchvision" in commands) == (
        network == "resnet18-w64"
    )
    if timm_arguments is not None:  # the command: timm's architecture, the file, its keyword arguments
        assert commands["timm, from the weights file"] == (
            f"import timm; model = timm.create_model({timm_arguments}, pretrained=True, pretrained_cfg_overlay="
            f"dict(file={str(out / 'model.safetensors')!r}), num_classes=0{TIMM_KWARGS.get(network, '')}).eval()"
        )
    card = (out / "README.md").read_text()
    blocks = [block.strip() for block in re.findall(r"```python\n(.*?)```", card, re.S)]
    # the card's blocks are the printed commands, one statement a line; the first adds an example on uint8 images
    assert set(commands.pop("hallucinator").split("; ")) < set(blocks[0].splitlines())
    assert blocks[1:] == [command.replace("; ", "\n") for command in commands.values()]
    for name, code in [("hallucinator", blocks[0]), *commands.items()]:
        namespace: dict = {}
        exec(code, namespace)  # load_state_dict and timm's pretrained loading are strict: a wrong key raises
        model = namespace["backbone"] if "backbone" in namespace else namespace["model"]
        assert not model.training
        with torch.no_grad():
            torch.testing.assert_close(model(images), expected, msg=code)
        if name == "hallucinator":
            assert model.num_features == original.num_features
            assert namespace["features"].shape == (4, original.num_features)  # the card's example on uint8 images
        if name == "timm":  # timm's data config, from config.json's pretrained_cfg, is the run's normalisation
            data_config = timm.data.resolve_data_config({}, model=model)
            assert tuple(data_config["input_size"]) == (3, 32, 32) and data_config["crop_pct"] == 1.0
            assert list(data_config["mean"]) == CIFAR10_MEAN and list(data_config["std"]) == CIFAR10_STD


def test_the_folder_describes_the_run(tmp_path, capsys):
    checkpoint, out, _ = _export(tmp_path, capsys, "resnet18-w16-cifar", EVALUATION)
    assert sorted(path.name for path in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert (config["backbone"], config["width"], config["cifar_stem"]) == ("resnet18", 16, True)
    assert (config["image_size"], config["num_features"], config["key_names"]) == (32, 128, "torchvision")
    assert config["input"]["mean"] == CIFAR10_MEAN and config["input"]["std"] == CIFAR10_STD
    assert config["input"]["layout"] == "NCHW" and "eval_transform('cifar10', 32)" in config["input"]["preprocessing"]
    assert config["method"] == "simclr" and config["method_hparams"]["temperature"] == 0.5
    assert config["hallucinator"]["enabled"] is True and config["hallucinator"]["num_layers"] == 3
    assert config["evaluation"] == {key: value for key, value in EVALUATION.items() if key != "train"}
    assert config["training"]["steps"] == 7 and config["training"]["machine"] == "1x H200"
    assert "output_dir" not in config["config"] and "data_dir" not in config["config"]["data"]
    assert "architecture" not in config  # timm cannot build a width-16 CIFAR-stem ResNet
    # torchvision's names: the stock resnet18's keys less fc (the shapes are the narrow net's)
    reference = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(load_file(out / "model.safetensors")) == reference
    card = (out / "README.md").read_text()
    assert card.startswith("---\npipeline_tag: image-feature-extraction\n")
    assert "# resnet18 (width 16, CIFAR stem), pre-trained with simclr + Hallucinator on cifar10" in card
    for figure in ("| knn | top1 41.25, top5 88.5, k 200", "| wall time | 1.1 h |", "| machine | 1x H200 |"):
        assert figure in card
    assert "| steps trained | 7 (epochs: 1) |" in card and "812.5 pairs/s" in card


def test_wrong_inputs_are_one_line_errors(tmp_path, capsys):
    checkpoint = method_checkpoint(tmp_path / "run")
    (tmp_path / "file").write_text("")
    assert main(["export", str(checkpoint), str(tmp_path / "file"), "--format", "hf"]) == 2
    assert capsys.readouterr().err == (
        f"hallucinator export: {tmp_path / 'file'} is a file; --format hf writes a folder: pass a directory path\n"
    )
    with pytest.raises(FileNotFoundError, match="has no config.json: pass a folder written by `hallucinator export"):
        hallucinator.load_backbone(tmp_path)
    (tmp_path / "run" / "evaluation.json").write_text("{not json")
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--format", "hf"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"hallucinator export: .*evaluation\.json is not valid JSON \(.*\); fix or delete it.*", line)
