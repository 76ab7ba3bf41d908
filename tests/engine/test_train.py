"""The training run (``engine.train``): what it lets through to the console, 2-process DDP, and resume.

Console: Lightning's advertising and internal deprecations are dropped.

DDP: 2 processes on CPU (gloo, launched by torchrun) against an independent single-batch computation.
BatchNorm is per process under DDP (SyncBatchNorm needs GPUs), so the first-step loss of a
2-process run equals the single-process loss of the same global batch only up to BatchNorm
statistics. The test therefore computes the expected loss by hand: each process's half goes
through the initial network on its own (its own BatchNorm statistics), the projections are
concatenated, and NT-Xent over the whole global batch is written out here. The single-process
run must match the same computation with one half of 16.

Resume: an interrupted run continues exactly where the uninterrupted one would be (loss, lr, queue, RNG).
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_module

from hallucinator.data import build_dataset, eval_transform
from hallucinator.data.subset import stratified_subset
from hallucinator.engine import load_config, pretrain
from hallucinator.engine.config import Config
from hallucinator.engine.module import build_method
from hallucinator.engine.train import quiet_lightning
from tests.conftest import free_port


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_tips_are_dropped_and_other_messages_kept():
    collect = Collect()
    rank_zero_module.log.addHandler(collect)
    try:
        with quiet_lightning():
            rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
            rank_zero_info("GPU available: False, used: False")
        rank_zero_info("💡 Tip: outside the block nothing is filtered")
    finally:
        rank_zero_module.log.removeHandler(collect)
    assert collect.messages == ["GPU available: False, used: False", "💡 Tip: outside the block nothing is filtered"]


def test_lightning_internal_deprecation_is_dropped_and_other_warnings_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning
            )
            warnings.warn("data.batch_size is larger than the dataset", UserWarning)
    assert [str(w.message) for w in caught] == ["data.batch_size is larger than the dataset"]


PROJECT_ROOT = Path(__file__).resolve().parents[2]
BATCH = 16
# relative tolerance of a run's loss against the float64 computation here, by the precision it trains in
# (pinned: `auto` is bf16 on AVX-512 BF16 / AMX CPUs). fp32: a float32 forward pass. bf16 autocast rounds
# every conv / matmul input to bf16's 8 significant bits (relative error up to 2^-9 each); over the
# network and the loss those stay within one bf16 epsilon, 2^-7 (seen: 1.4e-3 on an AMX CPU).
PRECISION_TOLERANCE = {"32-true": 1e-4, "bf16-mixed": 2**-7}


def args(archive: Path, run: Path, precision: str) -> list[str]:
    return [
        "configs/base/small.yaml",
        f"--data-dir={archive}",
        f"--output-dir={run}",
        "--model.method=simclr",
        "--model.width=8",
        "--no-hallucinator",
        "--data.preset=none",  # both views = the plain image: no per-process augmentation streams
        f"--batch-size={BATCH}",
        f"--data.limit={BATCH}",
        "--optimizer.base_lr=0",  # the checkpoint then holds the initial weights
        "--trainer.max_steps=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.progress_bar=false",
        "--trainer.cpu_threads=1",
        "--device=cpu",
        f"--trainer.precision={precision}",
        "--no-knn",
    ]


def first_loss(run: Path) -> float:
    (path,) = (run / "csv").glob("version_*/metrics.csv")
    with path.open() as file:
        return float(next(csv.DictReader(file))["train/loss"])


def nt_xent_by_hand(q: torch.Tensor, k: torch.Tensor, temperature: float) -> float:
    z = F.normalize(torch.cat([q, k]), dim=1).double()
    n = q.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    log_prob = logits.log_softmax(dim=1)[torch.arange(2 * n), positives]
    return float(-log_prob.mean())


def expected_loss(archive: Path, run: Path, processes: int) -> float:
    config = load_config(run / "config.yaml")
    method = build_method(config)
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    method.load_state_dict(
        {key.removeprefix("method."): value for key, value in state.items() if key.startswith("method.")}
    )
    method.train()
    dataset = build_dataset("cifar10", archive, "pretrain")
    # data.limit: the seeded, class-stratified subset (hallucinator.data.subset), then epoch 0's order of it
    images = dataset.images[stratified_subset(dataset.labels, BATCH, config.seed)]
    # epoch 0's order, as documented in StepBatches: randperm seeded by seed * 1_000_003 + epoch
    order = torch.randperm(BATCH, generator=torch.Generator().manual_seed(config.seed * 1_000_003))
    x = eval_transform("cifar10", 32)(images[order])
    with torch.no_grad():
        halves = [method.projector(method.backbone(part)) for part in x.chunk(processes)]
    z = torch.cat(halves)
    return nt_xent_by_hand(z, z, method.temperature)


@pytest.mark.parametrize("precision", PRECISION_TOLERANCE)
def test_two_process_ddp_matches_single_process(cifar10_archive: Path, tmp_path: Path, precision: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    ddp = tmp_path / "ddp"
    command = [*torchrun, "-m", "hallucinator", "pretrain", *args(cifar10_archive, ddp, precision)]
    command += ["--trainer.devices=2", "--trainer.strategy=ddp"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, "-m", "hallucinator", "pretrain", *args(cifar10_archive, single, precision)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    ddp_loss, single_loss = first_loss(ddp), first_loss(single)
    rel = PRECISION_TOLERANCE[precision]
    assert ddp_loss == pytest.approx(expected_loss(cifar10_archive, ddp, processes=2), rel=rel)
    assert single_loss == pytest.approx(expected_loss(cifar10_archive, single, processes=1), rel=rel)
    # same initial weights in both runs (same seed); only BatchNorm's statistics differ
    a = torch.load(ddp / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(single / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(a["method.backbone.conv1.weight"], b["method.backbone.conv1.weight"])


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
