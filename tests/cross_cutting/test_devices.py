"""The engine on each device: the CPU always, CUDA where there is one (skipped, with the reason, elsewhere).

Every precision trains a few steps to finite losses and a checkpoint that loads on the CPU. On CUDA
the first step's loss equals the CPU's (same seed, no augmentation so that no device random stream
is involved), and a compiled run trains. On a GPU machine: ``python -m pytest tests/cross_cutting/test_devices.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from hallucinator.cli import main
from hallucinator.engine import load_pretrained

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# fp16 autocast is refused on the CPU (test_fp16_on_the_cpu_is_refused)
DEVICE_PRECISIONS = [
    ("cpu", "32-true"),
    ("cpu", "bf16-mixed"),
    *(pytest.param("gpu", precision, marks=CUDA) for precision in ("32-true", "bf16-mixed", "16-mixed")),
]
TINY = [
    "--model.width=8",
    "--batch-size=16",
    "--data.limit=64",
    "--trainer.log_every_n_steps=1",
    "--trainer.progress_bar=false",
    "--trainer.cpu_threads=1",
    "--no-knn",
]


def losses(run: Path) -> list[float]:
    rows = []
    for path in sorted((run / "csv").glob("version_*/metrics.csv")):
        with path.open() as file:
            rows += [row for row in csv.DictReader(file) if row.get("train/loss")]
    return [float(row["train/loss"]) for row in sorted(rows, key=lambda row: int(row["step"]))]


def pretrain(archive: Path, run: Path, device: str, *extra: str) -> None:
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--data-dir",
            str(archive),
            "--output-dir",
            str(run),
            "--device",
            device,
            *TINY,
            *extra,
        ]
    )
    assert code == 0


@pytest.mark.parametrize(("device", "precision"), DEVICE_PRECISIONS)
def test_each_precision_trains_and_its_checkpoint_loads_on_the_cpu(
    cifar10_archive: Path, tmp_path: Path, device: str, precision: str
) -> None:
    pretrain(cifar10_archive, tmp_path, device, f"--trainer.precision={precision}", "--trainer.max_steps=3")
    trained = losses(tmp_path)
    assert len(trained) == 3 and all(math.isfinite(loss) for loss in trained)
    backbone, config = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    assert config.trainer.precision == precision
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in backbone.parameters())
    features = backbone.eval()(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, backbone.num_features) and torch.isfinite(features).all()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "auto",
            marks=pytest.mark.skipif(
                torch.cuda.is_available() or torch.backends.mps.is_available(), reason="auto picks this machine's GPU"
            ),
        ),
    ],
)
def test_fp16_on_the_cpu_is_refused(
    cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture, device: str
) -> None:
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--data-dir",
            str(cifar10_archive),
            "--output-dir",
            str(tmp_path),
            "--device",
            device,
            "--trainer.precision=16",
            *TINY,
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "trainer.precision" in error and "bf16-mixed" in error
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error(cifar10_archive: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--data-dir",
            str(cifar10_archive),
            "--output-dir",
            str(tmp_path),
            "--device",
            "gpu",
            *TINY,
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "trainer.accelerator: gpu, but torch sees no GPU" in error and "--device cpu" in error


@CUDA
@pytest.mark.parametrize("method", ["simclr", "mocov2"])
def test_first_step_loss_on_cuda_equals_the_cpu_loss(cifar10_archive: Path, tmp_path: Path, method: str) -> None:
    same_inputs = ["--model.method", method]
    if method == "mocov2":  # one BatchNorm group: the groups would be drawn from each device's own stream
        same_inputs += ["--model.hparams.queue_size=64", "--model.hparams.shuffle_bn_splits=1"]
    same_inputs += ["--data.preset=none", "--trainer.max_steps=1", "--trainer.precision=32-true", "--seed=3"]
    pretrain(cifar10_archive, tmp_path / "cpu", "cpu", *same_inputs)
    pretrain(cifar10_archive, tmp_path / "gpu", "gpu", *same_inputs)
    # fp32 on both; cuDNN may run the convolutions in TF32, hence the tolerance
    assert losses(tmp_path / "gpu") == pytest.approx(losses(tmp_path / "cpu"), rel=1e-2)


@CUDA
def test_compiled_run_trains_on_cuda(cifar10_archive: Path, tmp_path: Path) -> None:
    pretrain(cifar10_archive, tmp_path, "gpu", "--trainer.compile=true", "--trainer.max_steps=3")
    trained = losses(tmp_path)
    assert len(trained) == 3 and all(math.isfinite(loss) for loss in trained)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [
        (False, False, "32-true"),
        (True, False, "bf16-mixed"),
        (False, True, "bf16-mixed"),
        (True, True, "bf16-mixed"),
    ],
)
def test_auto_precision_on_the_cpu_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str
) -> None:
    from hallucinator.engine import load_config
    from hallucinator.engine.train import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    precision, reason = resolve_precision(load_config("configs/quickstart.yaml"))
    assert precision == expected
    assert reason.startswith(f"trainer.precision auto: {expected}, this CPU")
    assert ("has native bf16" in reason) == (expected == "bf16-mixed")
    # an explicit choice is kept whatever the CPU
    explicit = load_config("configs/quickstart.yaml", ["--trainer.precision=32"])
    assert resolve_precision(explicit) == ("32-true", "trainer.precision: 32-true (set in the config)")


def test_auto_run_on_a_native_bf16_cpu_trains_in_bf16_and_says_why(
    cifar10_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    pretrain(cifar10_archive, tmp_path, "cpu", "--trainer.max_steps=1")
    assert "trainer.precision auto: bf16-mixed, this CPU" in caplog.text  # Lightning's INFO log, on stderr
    assert "precision: bf16-mixed" in (tmp_path / "config.yaml").read_text()
