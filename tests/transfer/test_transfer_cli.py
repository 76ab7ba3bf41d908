"""``hallucinator make-detection-set``: writes both layouts with progress; bad input is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys

from hallucinator.cli import main
from hallucinator.transfer import CocoDetection, VOCDetection


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
