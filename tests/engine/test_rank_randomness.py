"""Model-side randomness under data parallelism: one ``lam`` per global batch, masks of each process's own.

Two real processes (gloo) each build the engine's ``PretrainModule``, seed step 3 as its ``training_step``
does first (``seed_model_randomness`` with the module's shared generator), then draw what a training step
draws: the Hallucinator's per-batch ``lam``, a per-sample ``lam`` and a dropout mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from hallucinator.engine.config import load_config
from hallucinator.engine.module import PretrainModule, seed_model_randomness, step_seed
from tests.conftest import run_ranks

WORLD, STEP = 2, 3
OVERRIDES = [
    "--model.width=4",
    "--trainer.channels_last=false",
    "--data.preset=none",
    "--trainer.online_linear=false",
    "--seed=7",
]


def _draws(module: PretrainModule, rank: int) -> dict[str, torch.Tensor]:
    seed_model_randomness(module.config.seed, STEP, rank, module._shared_generator)  # training_step's first line
    hallucinator = module.method.hallucinator
    assert hallucinator is not None
    batch_lam = torch.tensor(hallucinator.sample_lambda(torch.zeros(4, 2)))
    hallucinator.per_sample = True
    per_sample = hallucinator.sample_lambda(torch.zeros(64, 2))
    mask = nn.Dropout(0.5)(torch.ones(256))
    return {"batch_lam": batch_lam, "per_sample_lam": per_sample, "dropout": mask}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        module = PretrainModule(load_config("configs/quickstart.yaml", OVERRIDES), steps_per_epoch=10)
        torch.save(_draws(module, dist.get_rank()), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_lam_is_shared_across_ranks_and_masks_are_not(tmp_path: Path) -> None:
    rank0, rank1 = run_ranks(_worker, tmp_path, WORLD)
    assert torch.equal(rank0["batch_lam"], rank1["batch_lam"])  # one lam per global batch
    assert not torch.equal(rank0["per_sample_lam"], rank1["per_sample_lam"])  # other samples, other draws
    assert not torch.equal(rank0["dropout"], rank1["dropout"])
    # rank 0 draws what a single process draws, so 1-process runs keep their random streams
    single = _draws(PretrainModule(load_config("configs/quickstart.yaml", OVERRIDES), steps_per_epoch=10), 0)
    for key in single:
        assert torch.equal(single[key], rank0[key]), key


def test_the_seeding_is_a_pure_function_of_seed_step_and_rank() -> None:
    shared = torch.Generator()
    seed_model_randomness(7, STEP, 1, shared)
    first = (torch.rand(3), torch.rand(3, generator=shared))
    seed_model_randomness(7, STEP, 1, shared)
    again = (torch.rand(3), torch.rand(3, generator=shared))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # independently: the shared stream is step_seed(seed, step), rank r's global stream step_seed(seed, step, r)
    assert torch.equal(first[1], torch.rand(3, generator=torch.Generator().manual_seed(step_seed(7, STEP))))
    assert torch.equal(first[0], torch.rand(3, generator=torch.Generator().manual_seed(step_seed(7, STEP, 1))))
