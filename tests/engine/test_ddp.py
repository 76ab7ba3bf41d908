"""2-process DDP on CPU (gloo, launched by torchrun) against an independent single-batch computation.

BatchNorm is per process under DDP (SyncBatchNorm needs GPUs), so the first-step loss of a
2-process run equals the single-process loss of the same global batch only up to BatchNorm
statistics. The test therefore computes the expected loss by hand: each process's half goes
through the initial network on its own (its own BatchNorm statistics), the projections are
concatenated, and NT-Xent over the whole global batch is written out here. The single-process
run must match the same computation with one half of 16.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hallucinator.data import build_dataset, eval_transform
from hallucinator.data.subset import stratified_subset
from hallucinator.engine import load_config
from hallucinator.engine.module import build_method
from tests.conftest import free_port

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
