"""``hallucinator pretrain`` end to end on real CIFAR-10 images: every method, with and without the Hallucinator."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hallucinator.cli import main
from hallucinator.engine import load_pretrained

# width-8 nets, 16-image batches, 64 images: a few seconds per run
TINY = [
    "--model.width=8",
    "--batch-size=16",
    "--data.limit=64",
    "--trainer.max_steps=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.progress_bar=false",
    "--trainer.cpu_threads=1",
    "--device=cpu",
]
SMALL_HEADS = {
    "mocov1": ["--model.hparams.queue_size=64"],
    "mocov2": ["--model.hparams.queue_size=64"],
    "simclr": [],
    "simsiam": ["--model.hparams.dim=64", "--model.hparams.pred_hidden_dim=16"],
    "byol": ["--model.hparams.hidden_dim=32", "--model.hparams.pred_hidden_dim=32"],
    "barlowtwins": ["--model.hparams.dim=64", "--model.hparams.hidden_dim=64"],
    "vicreg": ["--model.hparams.dim=64", "--model.hparams.hidden_dim=64"],
    "mocov3": ["--model.hparams.hidden_dim=32", "--model.hparams.pred_hidden_dim=32"],
    "nnclr": ["--model.hparams.hidden_dim=32", "--model.hparams.pred_hidden_dim=32", "--model.hparams.queue_size=64"],
}


def metrics(run: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((run / "csv").glob("version_*/metrics.csv")):
        with path.open() as file:
            rows += list(csv.DictReader(file))
    return rows


def pretrain(cifar10_archive: Path, run: Path, *extra: str) -> int:
    return main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--data-dir",
            str(cifar10_archive),
            "--output-dir",
            str(run),
            *TINY,
            *extra,
        ]
    )


@pytest.mark.parametrize("hallucinator", [True, False], ids=["hal", "plain"])
@pytest.mark.parametrize("method", sorted(SMALL_HEADS))
def test_each_method(cifar10_archive: Path, tmp_path: Path, method: str, hallucinator: bool) -> None:
    extra = ["--model.method", method, *SMALL_HEADS[method], "--no-knn"]
    if not hallucinator:
        extra.append("--no-hallucinator")
    assert pretrain(cifar10_archive, tmp_path, *extra) == 0
    rows = [row for row in metrics(tmp_path) if row["train/loss"]]  # the last row holds the final evaluation
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert all(math.isfinite(float(r["train/loss"])) for r in rows)
    assert all(("train/loss_hallucinated" in r and r["train/loss_hallucinated"] != "") == hallucinator for r in rows)
    hardness = (
        ["train/pos_similarity", "train/extrap_similarity", "train/hal_similarity"]
        if hallucinator
        else ["train/pos_similarity"]
    )
    assert all(-1 <= float(r[key]) <= 1 for r in rows for key in hardness)  # every run logs the Fig. 4 cosines
    assert (tmp_path / "config.yaml").is_file() and not list(tmp_path.rglob("*.tmp"))
    backbone, config = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    assert config.model.method == method and config.hallucinator.enabled == hallucinator
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, backbone.num_features)


def test_final_knn_is_printed(cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pretrain(cifar10_archive, tmp_path, "--knn-limit", "200") == 0
    out = capsys.readouterr().out
    assert "kNN evaluation: features of 200 bank and 200 test images ..." in out  # announced before the work
    assert out.index("kNN evaluation") < out.index("kNN top-1 on the cifar10 test set (a fixed random 200 images):")


def test_online_linear_top1_on_the_test_set_goes_to_evaluation_json(
    cifar10_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hallucinator.cli.pretrain as cli_pretrain

    monitors = []

    def small_monitor(config, limit=None):  # the whole-test-set path, on 200 images to stay fast
        monitors.append(original(config, 200))
        return monitors[-1]

    original = cli_pretrain._knn_monitor
    monkeypatch.setattr(cli_pretrain, "_knn_monitor", small_monitor)
    assert pretrain(cifar10_archive, tmp_path) == 0
    figures = json.loads((tmp_path / "evaluation.json").read_text())["online_linear"]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    weights = checkpoint["online_linear"]["weights"]
    backbone, _ = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    monitor = monitors[-1]
    with torch.no_grad():  # the probe's test top-1 recomputed from the checkpoint and the test images
        features = backbone.eval()(monitor.transform(monitor.test_images))
        predicted = (features @ weights["weight"].T + weights["bias"]).argmax(dim=1)
    expected = 100 * (predicted == monitor.test_labels).float().mean().item()
    assert figures["top1"] == pytest.approx(expected, abs=0.51)  # one of 200 images may flip (BatchNorm folding)
    assert 0 <= figures["train_top1_last_epoch"] <= 100 and figures["dataset"] == "cifar10"
    assert pretrain(cifar10_archive, tmp_path / "off", "--no-online-linear", "--no-knn") == 0
    assert "online_linear" not in json.loads((tmp_path / "off" / "evaluation.json").read_text())


def test_bad_value_names_the_key(cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pretrain(cifar10_archive, tmp_path, "--optimizer.name=adam") == 2
    err = capsys.readouterr().err
    assert "optimizer.name: 'adam' is not one of ['sgd', 'lars', 'adamw']" in err
    assert not (tmp_path / "checkpoints").exists()


def test_print_config_applies_short_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [
        "pretrain",
        "configs/table1/cifar10_mocov2_hal.yaml",
        "--print-config",
        "--epochs",
        "3",
        "--no-hallucinator",
    ]
    assert main([*args, "--seed=5", "--model.hparams.temperature=0.3"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs: 3" in out and "enabled: false" in out and "seed: 5" in out
    assert "temperature: 0.3" in out and "method: mocov2" in out


# values YAML would turn into another string, a number, a boolean or null
LITERAL_VALUES = ["2024_01", "0123", "on", "null", "yes", "1e3", "~", "0x1F", "[a]", "a: b", "12:30"]


@pytest.mark.parametrize("value", LITERAL_VALUES)
@pytest.mark.parametrize("position", ["before", "after"])  # before or after CONFIG (argparse's remainder)
def test_path_and_name_flags_are_taken_as_typed(value: str, position: str, capsys: pytest.CaptureFixture) -> None:
    import yaml

    flags = ["--output-dir", value, "--data-dir", value, "--dataset", value]
    config = "configs/quickstart.yaml"
    argv = ["pretrain", *flags, config] if position == "before" else ["pretrain", config, *flags]
    assert main([*argv, "--print-config"]) == 0, capsys.readouterr().err
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["output_dir"] == value
    assert resolved["data"]["data_dir"] == value and resolved["data"]["dataset"] == value


def test_class_list_flag_is_taken_as_typed(capsys: pytest.CaptureFixture) -> None:
    argv = ["pretrain", "configs/table2/imagenet200_mocov2_hal.yaml", "--class-list", "0123", "--print-config"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "class_list: '0123'" in capsys.readouterr().out


def test_a_dotted_override_wins_over_the_short_flag(capsys: pytest.CaptureFixture) -> None:
    argv = ["pretrain", "configs/quickstart.yaml", "--output-dir=runs/a", "--output_dir=runs/b", "--print-config"]
    assert main(argv) == 0
    assert "output_dir: runs/b" in capsys.readouterr().out


def test_resume_with_another_method_is_refused(cifar10_archive: Path, tmp_path: Path, capsys) -> None:
    assert pretrain(cifar10_archive, tmp_path, "--model.method=simclr", "--no-knn") == 0
    saved = (tmp_path / "config.yaml").read_text()
    code = pretrain(cifar10_archive, tmp_path, "--model.method=mocov2", "--resume", "--no-knn", "--trainer.max_steps=4")
    assert code == 2
    assert "model.method" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == saved  # the run's own config survives the refusal


def test_resume_with_another_width_is_refused_in_a_few_lines(cifar10_archive: Path, tmp_path: Path, capsys) -> None:
    assert pretrain(cifar10_archive, tmp_path, "--no-knn") == 0
    saved = (tmp_path / "config.yaml").read_text()
    assert pretrain(cifar10_archive, tmp_path, "--model.width=16", "--resume", "--no-knn", "--trainer.max_steps=4") == 2
    err = capsys.readouterr().err
    assert "holds a different model than this config (simclr, resnet18 width 16)" in err
    assert "size mismatch" in err and f"resume with the run's own config ({tmp_path / 'config.yaml'})" in err
    assert len(err) < 1500  # counts and a few keys, not every parameter of the network
    assert (tmp_path / "config.yaml").read_text() == saved


def test_resuming_a_finished_run_keeps_its_recorded_throughput(cifar10_archive: Path, tmp_path: Path) -> None:
    from hallucinator.evaluation.report import load_evaluation

    assert pretrain(cifar10_archive, tmp_path, "--no-knn") == 0
    first = load_evaluation(tmp_path)["train"]
    assert first["images_per_second"] > 0
    assert pretrain(cifar10_archive, tmp_path, "--no-knn", "--resume") == 0  # nothing left to train
    again = load_evaluation(tmp_path)["train"]
    assert again["steps"] == first["steps"] and again["images_per_second"] == first["images_per_second"]


def test_throughput_over_resumed_segments_is_pairs_over_step_time() -> None:
    from types import SimpleNamespace

    from hallucinator.cli.pretrain import _pairs_per_second_over_segments

    # 100 steps at 200 pairs/s (batch 64: 32 s), then 200 more at 400 pairs/s (32 s): 19,200 pairs in 64 s
    resumed = SimpleNamespace(global_step=300, images_per_second=400.0)
    assert _pairs_per_second_over_segments({"steps": 100, "images_per_second": 200.0}, resumed) == pytest.approx(300.0)
    assert _pairs_per_second_over_segments({}, resumed) == 400.0


def test_missing_data_is_one_line_even_with_the_knn_monitor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the paper configs monitor kNN, whose datasets are opened before training
    code = main(
        [
            "pretrain",
            "configs/table1/cifar10_simclr_hal.yaml",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--output-dir",
            str(tmp_path / "run"),
            "--device=cpu",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("hallucinator pretrain: cifar10 not found at") and "Traceback" not in err


def test_full_cache_disk_is_one_line_not_a_crash(
    cifar10_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import errno
    import os

    def no_room(fd: int, offset: int, length: int) -> None:  # a full disk, where memory-map writes would SIGBUS
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    assert pretrain(cifar10_archive, tmp_path / "run", "--data.cache_dir", str(tmp_path / "cache"), "--no-knn") == 2
    err = capsys.readouterr().err
    assert err.startswith("hallucinator pretrain: no room in the cache directory") and err.count("\n") == 1
    assert "for the decoded cifar10 pretrain split (154 MB" in err and "--data.cache_dir" in err


def test_corrupt_image_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image, format="JPEG")
    for split in ("train", "test"):
        (tmp_path / "data" / split / "a").mkdir(parents=True)
        (tmp_path / "data" / split / "a" / "good.jpg").write_bytes(image.getvalue())
    (tmp_path / "data" / "train" / "a" / "broken.jpg").write_bytes(image.getvalue()[:20])
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--dataset=imagefolder",
            "--data-dir",
            str(tmp_path / "data"),
            "--output-dir",
            str(tmp_path / "run"),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            *TINY,
            "--no-knn",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("hallucinator pretrain: 1 unreadable images in") and "train/a/broken.jpg" in err
    assert "--data.skip_unreadable=true" in err and err.count("\n") == 1


def test_a_vit_backbone_pretrains_and_loads(cifar10_archive: Path, tmp_path: Path) -> None:
    vit = [
        "--model.backbone=vit_tiny",
        "--model.cifar_stem=false",
        "--model.width=64",
        "--data.crop_size=24",
        "--no-knn",
    ]
    assert pretrain(cifar10_archive, tmp_path, *vit) == 0
    backbone, config = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    assert config.model.backbone == "vit_tiny" and backbone.patch_embed.patch_size == (4, 4)
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 192)  # trained on 24 px crops, evaluated at 32 px


@pytest.mark.parametrize("command", ["pretrain", "sweep"])
def test_an_impossible_config_stops_when_read_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """BYOL with a symmetric extrapolation failed only at step 0 inside forward; now before anything runs."""
    config = "configs/quickstart_byol.yaml"
    if command == "pretrain":
        argv = ["pretrain", config, "--hallucinator.extrapolation_mode=symmetric", "--print-config"]
    else:
        argv = ["sweep", config, "--grid", "hallucinator.extrapolation_mode=asymmetric,symmetric"]
        argv += ["--output-dir", str(tmp_path / "sweep")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hallucinator.extrapolation_mode: BYOL scores its predictions" in err, err
    assert not (tmp_path / "sweep").exists()


def test_flags_anywhere_and_overrides_in_order_are_parsed_once_and_args_left_as_parsed(
    capsys: pytest.CaptureFixture,
) -> None:
    from hallucinator.cli import build_parser, parse_arguments
    from hallucinator.cli.pretrain import config_overrides

    argv = ["pretrain", "--seed", "3", "c.yaml", "--trainer.max_epochs", "2", "--no-knn", "--optimizer.base_lr=-0.1"]
    args = parse_arguments(build_parser(), [*argv, "--batch-size", "16", "--knn-limit", "9"])
    parsed = dict(vars(args))
    assert (args.config, args.no_knn, args.knn_limit) == ("c.yaml", True, 9)
    assert config_overrides(args) == [
        "--data.batch_size=16",  # the short flags first (before or after CONFIG), then the dotted ones in order
        "--seed=3",
        "--trainer.max_epochs",
        "2",
        "--optimizer.base_lr=-0.1",
    ]
    assert vars(args) == parsed
    with pytest.raises(SystemExit):  # other commands take no overrides: an unknown argument stays an error
        parse_arguments(build_parser(), ["knn", "run/last.ckpt", "--trainer.max_epochs=2"])
    assert "unrecognized arguments: --trainer.max_epochs=2" in capsys.readouterr().err
