"""``hallucinator transfer``: one command from a checkpoint and a COCO or VOC folder to AP;
``hallucinator make-detection-set``: writes both layouts with progress. Bad input is one line and exit status 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hallucinator.cli import main
from hallucinator.cli import transfer as cli
from hallucinator.transfer import CocoDetection, VOCDetection, models
from tests.transfer.conftest import fast_recipe

COCO_KEYS = {"bbox_AP", "bbox_AP50", "bbox_AP75"}
SEGM_KEYS = {"segm_AP", "segm_AP50", "segm_AP75"}
VOC_KEYS = {"voc07_AP50", "voc_AP", "voc_AP50", "voc_AP75"}


def backbone_tensors(checkpoint: Path) -> int:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return sum(key.startswith("method.backbone.") for key in state)


def test_flag_choices_are_the_models(capsys) -> None:
    assert cli.TASKS == models.TASKS and cli.ARCHS == models.ARCHS


@pytest.mark.parametrize(
    ("fmt", "task", "init", "expected"),
    [
        ("coco", "detection", "checkpoint", COCO_KEYS),
        ("coco", "instance-segmentation", "checkpoint", COCO_KEYS | SEGM_KEYS),
        ("voc", "detection", "random", COCO_KEYS | VOC_KEYS),
    ],
)
def test_one_command_writes_the_run_directory_and_the_figures(
    small_set, r18_checkpoint: Path, tmp_path: Path, capsys, fmt: str, task: str, init: str, expected: set[str]
) -> None:
    out = tmp_path / "run"
    recipe = fast_recipe(tmp_path / "recipe.yaml")
    args = ["transfer", str(r18_checkpoint), "--config", str(recipe), "--format", fmt, "--task", task]
    args += ["--data-dir", str(small_set.root), "--output-dir", str(out), "--init", init, "--max-steps", "2", "--json"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) == expected | {"backbone_tensors_loaded", "steps", "train_seconds", "test_images"}
    assert all(0.0 <= figures[key] <= 100.0 for key in expected)
    assert figures["backbone_tensors_loaded"] == (backbone_tensors(r18_checkpoint) if init == "checkpoint" else 0)
    assert figures["steps"] == 2 and figures["test_images"] == 6
    assert json.loads((out / "evaluation.json").read_text()) == figures
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["data"]["format"], saved["model"]["task"], saved["model"]["init"]) == (fmt, task, init)
    assert saved["trainer"]["precision"] == "32-true"  # detection stays in fp32 unless asked
    assert (out / "checkpoints" / "last.ckpt").is_file() and not list(out.rglob("*.tmp"))
    assert list((out / "csv").glob("version_0/metrics.csv")) and (out / "tensorboard").is_dir()


def test_resume_continues_to_the_same_step(small_set, r18_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    recipe = fast_recipe(tmp_path / "recipe.yaml")
    args = ["transfer", str(r18_checkpoint), "--config", str(recipe), "--format", "coco"]
    args += ["--data-dir", str(small_set.root), "--output-dir", str(out), "--json"]
    assert main([*args, "--max-steps", "1"]) == 0
    assert main([*args, "--max-steps", "3", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hallucinator transfer: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_and_exit_status_2(small_set, r18_checkpoint: Path, tmp_path: Path, capsys) -> None:
    recipe = fast_recipe(tmp_path / "recipe.yaml")
    base = ["transfer", str(r18_checkpoint), "--config", str(recipe), "--output-dir", str(tmp_path / "o")]
    data = ["--data-dir", str(small_set.root)]

    def fails(*args: str) -> str:
        assert main([*base, *args]) == 2
        return _one_line_error(capsys)

    missing = ["transfer", str(tmp_path / "none.ckpt"), "--config", str(recipe), *data, "--format", "coco"]
    assert main([*missing, "--output-dir", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in _one_line_error(capsys)
    assert "is not a directory (--data-dir)" in fails("--data-dir", str(tmp_path / "nowhere"), "--format", "coco")
    # the other format's layout
    coco_only = tmp_path / "coco_only"
    (coco_only / "annotations").mkdir(parents=True)
    (coco_only / "annotations" / "instances_train.json").write_text(
        (small_set.root / "annotations" / "instances_train.json").read_text()
    )
    assert "has COCO's layout" in fails("--data-dir", str(coco_only), "--format", "voc")
    # missing images, then a missing annotation file (the test split's)
    assert "12 of the 12 images that the annotations name are missing" in fails(
        "--data-dir", str(coco_only), "--format", "coco"
    )
    shutil.copytree(small_set.root / "train", coco_only / "train")
    assert "instances_val.json not found" in fails("--data-dir", str(coco_only), "--format", "coco")
    # VOC's 20 classes do not name CIFAR's objects
    plain = fast_recipe(tmp_path / "plain.yaml", data={"classes": None})
    assert main([*base[:3], str(plain), *base[4:], *data, "--format", "voc"]) == 2
    assert "unknown class" in (err := _one_line_error(capsys)) and "data.classes" in err
    # bad config keys and values
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": str(recipe), "solver": {"max_step": 3}}))
    assert main([*base[:3], str(bad), *base[4:], *data]) == 2
    assert "config error: solver.max_step: unknown key" in _one_line_error(capsys)
    assert "instance-segmentation trains on masks" in fails(*data, "--format", "voc", "--task", "instance-segmentation")
    assert "solver.batch_size: 64 is more than the 12 training images" in fails(
        *data, "--format", "coco", "--batch-size", "64"
    )
    assert "config file not found" in fails(*data, "--config", str(tmp_path / "none.yaml"))


# ---- make-detection-set


def test_make_detection_set_writes_both_layouts(cifar10_archive, tmp_path, capsys):
    out = tmp_path / "set"
    args = ["--data-dir", str(cifar10_archive), "--output", str(out), "--train-images", "3", "--test-images", "2"]
    assert main(["make-detection-set", *args, "--canvas", "64", "80", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "train: 3/3 canvases" in printed and "test: 2/2 canvases" in printed
    assert "3 train canvases" in printed and f"to {out}" in printed
    train = CocoDetection(out, "train")
    test = VOCDetection(out, image_set="test", classes=train.classes)
    assert len(train) == 3 and len(test) == 2 and train[0][0].shape == (3, 64, 80)


def test_errors_are_one_line_with_exit_status_2(cifar10_archive, tmp_path, capsys):
    assert main(["make-detection-set", "--data-dir", str(tmp_path / "none"), "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hallucinator make-detection-set: cifar10 not found at") and err.count("\n") == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    args = ["--data-dir", str(cifar10_archive), "--output", str(tmp_path / "full")]
    assert main(["make-detection-set", *args]) == 2
    assert "is not empty: choose a new one or delete it" in capsys.readouterr().err
    assert main(["make-detection-set", *args[:2], "--output", str(tmp_path / "b"), "--test-images", "0"]) == 2
    assert "at least one canvas" in capsys.readouterr().err


def test_help_lists_the_command():
    out = subprocess.run([sys.executable, "-m", "hallucinator", "--help"], capture_output=True, text=True).stdout
    assert "make-detection-set" in out
