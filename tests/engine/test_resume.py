"""Resume: an interrupted run continues exactly where the uninterrupted one would be (loss, lr, queue, RNG)."""

from __future__ import annotations

import copy
import csv
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from hallucinator.engine import load_config, pretrain
from hallucinator.engine.config import Config


def tiny(archive: Path, run: Path, method: str = "mocov2") -> Config:
    # 5 steps per epoch, 2 epochs: the interruption at step 3 is mid-epoch
    return load_config(
        None,
        [
            f"--model.method={method}",
            "--model.width=8",
            *(["--model.hparams.queue_size=48"] if method.startswith("moco") else []),
            f"--data.data_dir={archive}",
            "--data.batch_size=16",
            "--data.limit=80",
            "--trainer.max_epochs=2",
            "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=1",
            "--trainer.progress_bar=false",
            "--trainer.cpu_threads=1",
            "--optimizer.warmup_epochs=1",
            f"--output_dir={run}",
        ],
    )


def losses(run: Path) -> dict[int, tuple[float, float]]:
    """step -> (loss, lr) over every (re)start of the run."""
    out = {}
    for path in sorted((run / "csv").glob("version_*/metrics.csv")):
        with path.open() as file:
            for row in csv.DictReader(file):
                out[int(row["step"])] = (float(row["train/loss"]), float(row["train/lr"]))
    return out


class SignalAt(pl.Callback):
    """Sends a real signal to this process after ``step`` optimisation steps."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.precision_sensitive  # trains in the precision `auto` picks: both are checked (test_precision_modes.py)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_epoch_then_resume_matches_uninterrupted(cifar10_archive: Path, tmp_path: Path, signum) -> None:
    config = tiny(cifar10_archive, tmp_path / "whole")
    before = copy.deepcopy(config)
    whole = pretrain(config)
    assert whole.global_step == 10 and whole.interrupted is None
    # the caller's config is left as it was; the run's resolved copy comes back
    assert config == before and config.data.image_size is None and whole.config.data.image_size == 32
    assert whole.config.trainer.precision != "auto"

    handler = signal.getsignal(signum)
    first = pretrain(tiny(cifar10_archive, tmp_path / "cut"), [SignalAt(3, signum)])
    assert signal.getsignal(signum) == handler  # our handler is gone after the run
    assert first.interrupted == signal.Signals(signum).name and first.global_step == 3
    assert first.checkpoint.is_file()
    resumed = pretrain(tiny(cifar10_archive, tmp_path / "cut"), resume=True)
    assert resumed.global_step == 10

    expected, got = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(got) == list(range(10))
    for step in range(10):  # same batches, views, lam, lr and MoCo queue => the same losses
        assert got[step][0] == pytest.approx(expected[step][0], rel=1e-5), step
        assert got[step][1] == pytest.approx(expected[step][1], rel=1e-6), step
    queue = "method.queue"
    a = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any(k.startswith(queue) for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


class PoisonAt(pl.Callback):
    """Makes the loss NaN from ``step`` on by poisoning one weight before the forward pass."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.method.backbone.parameters()).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar10_archive: Path, tmp_path: Path) -> None:
    from hallucinator.engine import TrainingDiverged

    config = tiny(cifar10_archive, tmp_path, "simclr")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7 .*Lower optimizer\.base_lr") as info:
        pretrain(config, [PoisonAt(7)])
    assert "last.ckpt" in str(info.value)
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5  # the end of epoch 1, before the poisoning
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


# inductor fuses and reorders the eager kernels' arithmetic: fp32 agrees to rounding; in bf16 autocast
# each fused kernel may round its intermediates to bf16 (8 significant bits) where eager kept fp32, or
# the other way round, so the losses agree within one bf16 epsilon, 2^-7 (seen: 8.6e-4 on an AMX CPU)
COMPILE_TOLERANCE = {"32-true": 1e-4, "bf16-mixed": 2**-7}


@pytest.mark.parametrize("precision", COMPILE_TOLERANCE)
def test_compiled_run_matches_eager_and_resumes_without_compilation(
    cifar10_archive: Path, tmp_path: Path, precision: str
) -> None:
    eager = tiny(cifar10_archive, tmp_path / "eager", method="simclr")
    eager.trainer.max_steps, eager.trainer.precision = 2, precision
    pretrain(eager)
    compiled = tiny(cifar10_archive, tmp_path / "compiled", method="simclr")
    compiled.trainer.max_steps, compiled.trainer.compile, compiled.trainer.precision = 2, True, precision
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    pretrain(compiled)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the backbone was compiled
    expected, got = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    for step in range(2):
        assert got[step][0] == pytest.approx(expected[step][0], rel=COMPILE_TOLERANCE[precision]), step

    state = torch.load(tmp_path / "compiled/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)  # the plain backbone's keys
    resumed = tiny(cifar10_archive, tmp_path / "compiled", method="simclr")
    resumed.trainer.max_steps, resumed.trainer.precision = 3, precision
    assert pretrain(resumed, resume=True).global_step == 3
