"""``hallucinator show-augmentations``: what it draws for a config."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from hallucinator.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_show_augmentations_draws_every_global_and_local_crop(cifar10_archive: Path, tmp_path: Path) -> None:
    output = tmp_path / "crops.png"
    args = ["show-augmentations", "--config", str(CONFIGS / "quickstart_dino.yaml"), "--data-dir", str(cifar10_archive)]
    assert main([*args, "--output", str(output), "--num-images", "2"]) == 0
    from PIL import Image

    width, height = Image.open(output).size
    assert width > 3 * height  # a source and 6 crops per row, 2 rows


def test_show_augmentations_writes_a_png(tmp_path: Path):
    root = tmp_path / "data"
    for k in range(3):
        path = root / "train" / f"c{k}" / "x.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()).save(path)
    output = tmp_path / "grid.png"
    code = main(
        [
            "show-augmentations",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(root),
            "--preset",
            "cifar10-mocov2",
            "--output",
            str(output),
            "--num-images",
            "3",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(output) as image:
        assert image.size[0] > 300 and image.size[1] > 300


def test_show_augmentations_reports_bad_input_in_one_line(tmp_path: Path, capsys):
    missing = ["show-augmentations", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")]
    assert main([*missing, "--output", str(tmp_path / "grid.png")]) == 2
    assert capsys.readouterr().err.startswith(f"hallucinator show-augmentations: cifar10 not found at {tmp_path}")
    assert main(["show-augmentations", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--preset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()
