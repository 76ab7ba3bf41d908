"""PretrainModule: the memory format it trains in, and model-side randomness under data parallelism.

Randomness: one ``lam`` per global batch, masks of each process's own. Two real processes (gloo) each build
the engine's ``PretrainModule``, seed step 3 as its ``training_step`` does first (``seed_model_randomness``
with the module's shared generator), then draw what a training step draws: the Hallucinator's per-batch
``lam``, a per-sample ``lam`` and a dropout mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from hallucinator.engine.config import load_config
from hallucinator.engine.module import PretrainModule, seed_model_randomness, step_seed
from tests.conftest import run_ranks


def test_narrow_networks_fall_back_from_channels_last_with_a_warning() -> None:
    config = load_config(None, ["--model.width=8"])
    with pytest.warns(UserWarning, match="channels_last.*model.width >= 16"):
        module = PretrainModule(config, steps_per_epoch=1)
    assert not module.channels_last
    view1, _ = module._views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert view1.is_contiguous()


def test_channels_last_is_used_when_safe() -> None:
    module = PretrainModule(load_config(None, ["--model.width=16"]), steps_per_epoch=1)
    assert module.channels_last
    assert module.method.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_center_crop_warmup_uses_plain_crops_for_the_first_epochs(monkeypatch) -> None:
    from hallucinator.data import presets
    from hallucinator.engine.module import step_seed

    config = load_config(None, ["--model.width=16", "--data.center_crop_warmup_epochs=2"])
    module = PretrainModule(config, steps_per_epoch=1)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    epoch = [0]
    monkeypatch.setattr(PretrainModule, "current_epoch", property(lambda self: epoch[0]))
    for epoch[0], center_crop_views in ((0, ()), (1, ()), (2, (1,))):
        expected = presets.build("cifar10-simclr", center_crop_views=center_crop_views)(
            images, generator=torch.Generator().manual_seed(step_seed(0, 0, 0))
        )
        for view, reference in zip(module._views(images), expected):
            torch.testing.assert_close(view, reference)
    assert PretrainModule(load_config(None, ["--model.width=16"]), steps_per_epoch=1).warmup_augment is None


def test_build_method_builds_the_configured_hallucinator_and_no_other(monkeypatch) -> None:
    """SimSiam's 2048-d Hallucinator used to be built with defaults and replaced: two big MLPs, more random draws."""
    import functools
    from functools import partial

    from hallucinator import backbones, methods
    from hallucinator.engine.module import build_method
    from hallucinator.hallucinator import Hallucinator

    built = []
    original = Hallucinator.__init__

    @functools.wraps(original)  # keeps the signature, which HallucinatorOptions.build reads
    def counting(self, *args, **kwargs) -> None:
        built.append((args, kwargs))
        original(self, *args, **kwargs)

    overrides = ["--model.method=simsiam", "--model.width=8", "--hallucinator.num_layers=2", "--seed=3"]
    config = load_config(None, overrides)  # (its check builds one on the meta device: no memory, no draws)
    monkeypatch.setattr(Hallucinator, "__init__", counting)
    torch.manual_seed(0)
    method = build_method(config)
    assert len(built) == 1 and built[0][0] == (2048,) and built[0][1]["num_layers"] == 2
    assert method.hallucinator.dim == 2048 and sum(isinstance(m, torch.nn.Linear) for m in method.hallucinator.net) == 2
    # Independently: the same draws as building the backbone, then the method with that one Hallucinator.
    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    reference = methods.build("simsiam", backbone, hallucinator=partial(Hallucinator, num_layers=2))
    for (key, value), (ref_key, ref_value) in zip(method.state_dict().items(), reference.state_dict().items()):
        assert key == ref_key and torch.equal(value, ref_value), key


def test_the_old_crop_box_key_p_still_configures_the_center_fraction() -> None:
    from hallucinator.data.augment import CenterSuppressedResizedCrop
    from hallucinator.engine.module import build_augmentation

    with pytest.warns(FutureWarning, match="data.augment.center_fraction"):
        two_views = build_augmentation(load_config(None, ["--data.augment.p=0.7"]))
    crops = [op for op in two_views.view1.ops if isinstance(op, CenterSuppressedResizedCrop)]
    assert [crop.center_fraction for crop in crops] == [0.7]


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
