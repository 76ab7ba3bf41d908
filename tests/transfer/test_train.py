"""The fine-tuning loop (hallucinator.transfer.train): config, schedule, flips, synchronised BatchNorm,
evaluation wiring, loss going down, resume, and a 2-process DDP run on CPU."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from torch import nn

from hallucinator.engine.config import ConfigError
from hallucinator.transfer import CocoDetection, VOCDetection
from hallucinator.transfer.models import backbone_state
from hallucinator.transfer.train import (
    NaiveSyncBatchNorm,
    SolverConfig,
    TransferConfig,
    build_model,
    convert_sync_batchnorm,
    evaluate,
    hflip,
    load_transfer_config,
    lr_factor,
    parameter_groups,
    resolved_data,
    training_target,
    transfer,
)
from tests.conftest import run_ranks
from tests.transfer.conftest import fast_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "transfer").glob("*.yaml"))
WORLD = 2


def config_for(recipe: Path, checkpoint: Path, data_dir: Path, output_dir: Path, *overrides: str) -> TransferConfig:
    return load_transfer_config(
        recipe,
        [f"--model.checkpoint={checkpoint}", f"--data.data_dir={data_dir}", f"--output_dir={output_dir}", *overrides],
    )


def logged(run: Path, column: str = "train/loss") -> dict[int, float]:
    """step -> value over every (re)start of the run."""
    out = {}
    for path in sorted((run / "csv").glob("version_*/metrics.csv")):
        with path.open() as file:
            for row in csv.DictReader(file):
                if row.get(column):
                    out[int(row["step"])] = float(row[column])
    return out


# ---- config


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path: Path) -> None:
    config = load_transfer_config(path, ["--model.checkpoint=x.ckpt"])
    assert config.solver.steps[-1] < config.solver.max_steps


def test_the_paper_recipes_are_mocos_schedules_and_the_defaults() -> None:
    voc = load_transfer_config(ROOT / "configs/transfer/voc_r50c4_24k.yaml", ["--model.checkpoint=x"])
    assert (voc.data.format, voc.model.arch, voc.solver.batch_size, voc.solver.base_lr) == ("voc", "c4", 16, 0.02)
    assert (voc.solver.max_steps, voc.solver.steps, voc.solver.warmup_steps) == (24_000, [18_000, 22_000], 100)
    assert voc.data.train_sizes == list(range(480, 801, 32)) and voc.data.test_size == 800
    coco = load_transfer_config(ROOT / "configs/transfer/coco_r50c4_2x.yaml", ["--model.checkpoint=x"])
    assert (coco.model.task, coco.solver.max_steps, coco.solver.steps, coco.solver.warmup_steps) == (
        "instance-segmentation",
        180_000,
        [120_000, 160_000],
        1000,
    )
    assert coco.data.train_sizes == [640, 672, 704, 736, 768, 800] and coco.data.test_size == 800
    # without a file, each format gets its recipe
    assert load_transfer_config(None, ["--model.checkpoint=x"]) == voc
    plain_coco = load_transfer_config(None, ["--model.checkpoint=x", "--data.format=coco"])
    assert plain_coco == replace(coco, model=replace(coco.model, task="detection"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "model.checkpoint: pass the pre-training checkpoint"),
        (["--model.checkpoint=x", "--solver.bacth_size=2"], "solver.bacth_size: unknown key"),
        (["--model.checkpoint=x", "--model.arch=c5"], "model.arch: 'c5' is not one of ['c4', 'fpn']"),
        (["--model.checkpoint=x", "--model.task=instance-segmentation"], "VOC's detection layout has none"),
        (
            ["--model.checkpoint=x", "--solver.steps=[20, 10]"],
            "solver.steps: iterations must be positive and ascending",
        ),
        (["--model.checkpoint=x", "--data.train_sizes=[]"], "data.train_sizes: give at least one"),
    ],
)
def test_bad_config_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_transfer_config(None, overrides)


def test_splits_and_years_are_read_from_the_folder(small_set, tmp_path: Path) -> None:
    coco = resolved_data(
        load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={small_set.root}", "--data.format=coco"])
    )
    assert (coco.data.train_split, coco.data.test_split) == ("train", "val")  # the small set's names
    voc = resolved_data(load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={small_set.root}"]))
    assert (voc.data.train_split, voc.data.test_split, voc.data.voc_years) == ("trainval", "test", ["2007"])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    real = resolved_data(
        load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={tmp_path}", "--data.format=coco"])
    )
    assert (real.data.train_split, real.data.test_split) == ("train2017", "val2017")  # COCO's, named by the error
    with pytest.raises(ValueError, match="has COCO's layout .* --format coco"):
        resolved_data(load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={tmp_path}"]))


# ---- optimisation


def test_lr_factor_is_a_linear_warm_up_times_step_decay() -> None:
    solver = SolverConfig(steps=[7, 11], gamma=0.1, warmup_steps=5, warmup_factor=0.001)
    # the same schedule by torch's own schedulers: LinearLR from warmup_factor over the warm-up, times MultiStepLR
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    chained = torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, end_factor=1.0, total_iters=5),
            torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[7, 11], gamma=0.1),
        ]
    )
    for step in range(15):
        assert lr_factor(solver, step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), step
        optimizer.step()
        chained.step()


def test_normalisation_layers_take_no_weight_decay() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.GroupNorm(1, 2))
    decayed, plain = parameter_groups(model, 1e-4)
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-4
    norm_ids = {id(p) for i in (1, 3) for p in model[i].parameters()}
    assert {id(p) for p in plain["params"]} == norm_ids
    assert {id(p) for p in decayed["params"]} == {id(p) for p in model.parameters()} - norm_ids


# ---- data


def test_hflip_mirrors_image_boxes_and_masks_together() -> None:
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    image[:, 2:5, 3:9] = 255  # an object at x 3..9, y 2..5 (continuous coordinates)
    masks = (image[:1] > 0).to(torch.uint8)
    target = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0]]), "labels": torch.tensor([1]), "masks": masks}
    flipped_image, flipped = hflip(image, target)
    columns = flipped_image[0].nonzero()[:, 1]
    assert flipped["boxes"].tolist() == [[20 - 9.0, 2.0, 20 - 3.0, 5.0]]
    assert (columns.min().item(), columns.max().item() + 1) == (20 - 9, 20 - 3)  # the pixels moved with the box
    assert torch.equal(flipped["masks"][0], flipped_image[0] > 0) and torch.equal(flipped["labels"], target["labels"])


def test_crowd_objects_are_left_out_of_training_targets() -> None:
    target = {
        "boxes": torch.arange(12.0).reshape(3, 4),
        "labels": torch.tensor([1, 2, 3]),
        "iscrowd": torch.tensor([0, 1, 0]),
        "masks": torch.ones(3, 2, 2, dtype=torch.uint8),
        "image_id": 5,
    }
    kept = training_target(target, masks=True)
    assert kept["labels"].tolist() == [1, 3] and kept["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert set(kept) == {"boxes", "labels", "masks"} and len(kept["masks"]) == 2


# ---- synchronised BatchNorm


def _sync_bn_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()))[0]
        with torch.no_grad():
            norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5])), norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        # unequal halves (the RoIs of two processes differ in number): rank 0 takes 2 images, rank 1 four
        part = (x[:2] if rank == 0 else x[2:]).clone().requires_grad_(True)
        out = norm(part)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads = {"input": part.grad, "weight": norm.weight.grad.clone(), "bias": norm.bias.grad.clone()}
        for g in ("weight", "bias"):  # DDP would average these over the processes; here summed by hand
            dist.all_reduce(grads[g])
        torch.save(
            {
                "type": type(norm).__name__,
                "out": out.detach(),
                "grads": grads,
                "running": (norm.running_mean, norm.running_var),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_naive_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path: Path) -> None:
    rank0, rank1 = run_ranks(_sync_bn_worker, tmp_path, WORLD)
    assert rank0["type"] == NaiveSyncBatchNorm.__name__
    # one process with the whole batch, in plain BatchNorm
    x = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    norm = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5])), norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    outs = norm(x)
    weights = torch.cat(
        [torch.arange(outs[:2].numel()).reshape(outs[:2].shape), torch.arange(outs[2:].numel()).reshape(outs[2:].shape)]
    )
    (outs * weights.double()).sum().backward()
    torch.testing.assert_close(torch.cat([rank0["out"], rank1["out"]]), outs.detach())
    torch.testing.assert_close(torch.cat([rank0["grads"]["input"], rank1["grads"]["input"]]), x.grad)
    for name in ("weight", "bias"):
        torch.testing.assert_close(rank0["grads"][name], getattr(norm, name).grad)
    for ours, theirs in zip(rank0["running"], (norm.running_mean, norm.running_var)):
        torch.testing.assert_close(ours, theirs)
    assert torch.equal(rank0["running"][0], rank1["running"][0])


def test_without_a_process_group_naive_sync_batchnorm_is_batchnorm() -> None:
    x = torch.randn(4, 3, 5, 5)
    plain = nn.BatchNorm2d(3)
    synced = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    assert isinstance(synced, NaiveSyncBatchNorm)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)


# ---- the model and its evaluation


def test_backbone_comes_from_the_checkpoint_or_is_random(small_set, r18_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(r18_checkpoint, weights_only=True)["state_dict"]
    stored = {key.removeprefix("method.backbone."): value for key, value in checkpoint.items()}
    config = config_for(fast_recipe(tmp_path / "r.yaml"), r18_checkpoint, small_set.root, tmp_path)
    detector, loaded = build_model(config, num_classes=10)
    assert loaded == len(stored) == len(backbone_state(detector))
    for name, tensor in backbone_state(detector).items():
        assert torch.equal(tensor, stored[name]), name
    torch.manual_seed(1)
    scratch, none = build_model(replace(config, model=replace(config.model, init="random")), num_classes=10)
    assert none == 0
    assert not torch.equal(backbone_state(scratch)["conv1.weight"], stored["conv1.weight"])


class Oracle(nn.Module):
    """A stand-in detector answering each image with the given outputs, in order."""

    def __init__(self, outputs: list[dict]) -> None:
        super().__init__()
        self.transform = SimpleNamespace(min_size=(96,))
        self.outputs = iter(outputs)

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return [next(self.outputs) for _ in images]


def _answers(targets: list[dict], masks: list[torch.Tensor] | None = None, empty: bool = False) -> list[dict]:
    out = []
    for k, target in enumerate(targets):
        keep = slice(0, 0) if empty else slice(None)
        answer = {"boxes": target["boxes"][keep], "labels": target["labels"][keep]}
        answer["scores"] = torch.ones(len(answer["labels"]))
        if masks is not None:
            answer["masks"] = masks[k][keep][:, None].float()
        out.append(answer)
    return out


def test_evaluation_of_perfect_and_empty_predictions(small_set) -> None:
    coco = CocoDetection(small_set.root, "val", masks=True)
    targets = [coco[i][1] for i in range(len(coco))]
    for empty, expected in ((False, 100.0), (True, 0.0)):
        answers = _answers(targets, [t["masks"] for t in targets], empty)
        figures = evaluate(Oracle(answers), coco, "instance-segmentation", test_size=96, batch_size=4)
        assert set(figures) == {f"{kind}_{n}" for kind in ("bbox", "segm") for n in ("AP", "AP50", "AP75")}
        assert all(value == pytest.approx(expected) for value in figures.values()), figures
    voc = VOCDetection(small_set.root, image_set="test", classes=small_set.classes)
    for empty, expected in ((False, 100.0), (True, 0.0)):
        figures = evaluate(Oracle(_answers(voc.targets(), empty=empty)), voc, "detection", test_size=96, batch_size=4)
        names = {"bbox_AP", "bbox_AP50", "bbox_AP75", "voc_AP", "voc_AP50", "voc_AP75", "voc07_AP50"}
        assert set(figures) == names and all(v == pytest.approx(expected) for v in figures.values()), figures


def test_difficult_voc_objects_neither_count_nor_penalise(small_set, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(small_set.root / "VOC2007", root / "VOC2007")
    test_ids = (root / "VOC2007/ImageSets/Main/test.txt").read_text().split()
    path = root / "VOC2007/Annotations" / f"{test_ids[0]}.xml"
    tree = ET.parse(path)
    tree.getroot().find("object/difficult").text = "1"  # the first test image's first object
    tree.write(path)
    voc = VOCDetection(root, image_set="test", classes=small_set.classes)
    targets = voc.targets()
    assert targets[0]["difficult"].tolist()[0] and sum(int(t["difficult"].sum()) for t in targets) == 1
    found = _answers(targets)  # the difficult object detected too: not a false positive
    missed = _answers(targets)  # the difficult object missed: not a miss
    missed[0] = {key: value[1:] for key, value in missed[0].items()}
    for answers in (found, missed):
        figures = evaluate(Oracle(answers), voc, "detection", test_size=96)
        assert all(value == pytest.approx(100.0) for value in figures.values()), figures


# ---- training


def test_loss_goes_down_on_the_small_set(small_set, r18_checkpoint: Path, tmp_path: Path) -> None:
    solver = {"max_steps": 30, "base_lr": 0.08, "warmup_steps": 3}
    config = config_for(
        fast_recipe(tmp_path / "r.yaml", solver=solver), r18_checkpoint, small_set.root, tmp_path / "run"
    )
    result = transfer(config)
    losses = logged(tmp_path / "run")
    assert result.global_step == 30 and sorted(losses) == list(range(30))
    first, last = [sum(losses[s] for s in steps) / 5 for steps in (range(5), range(25, 30))]
    # measured: 4.08 -> 2.50 (ratio 0.61; the classification loss 2.40 -> 1.08), 2026-12-07 on this 2-core EPYC;
    # the run is seeded, so the bound's margin is for other CPUs' rounding
    assert last < 0.8 * first, (first, last)
    assert set(result.metrics) >= {"bbox_AP", "bbox_AP50", "bbox_AP75", "backbone_tensors_loaded"}


class SignalAt(pl.Callback):
    """Sends a real signal to this process after ``step`` optimisation steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupted_run_resumes_where_the_whole_run_is(small_set, r18_checkpoint: Path, tmp_path: Path) -> None:
    recipe = fast_recipe(tmp_path / "r.yaml", solver={"max_steps": 6, "steps": [4], "warmup_steps": 2})
    whole = transfer(config_for(recipe, r18_checkpoint, small_set.root, tmp_path / "whole"))
    cut = config_for(recipe, r18_checkpoint, small_set.root, tmp_path / "cut")
    first = transfer(cut, [SignalAt(3)])
    assert first.interrupted == "SIGTERM" and first.global_step == 3 and not first.metrics
    assert not (tmp_path / "cut" / "evaluation.json").exists()
    resumed = transfer(cut, resume=True)
    assert resumed.global_step == whole.global_step == 6
    # the same draws (order, flips, sizes, sampled RoIs) and the same lr: the same losses, step by step
    assert logged(tmp_path / "cut") == pytest.approx(logged(tmp_path / "whole"), rel=1e-4)
    assert logged(tmp_path / "cut", "train/lr") == pytest.approx(logged(tmp_path / "whole", "train/lr"))
    assert resumed.train_seconds > first.train_seconds  # summed over both segments
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        transfer(config_for(recipe, r18_checkpoint, small_set.root, tmp_path / "none"), resume=True)


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    # what torchrun sets: Lightning then joins these processes instead of starting its own
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank))
    os.environ.update(LOCAL_RANK=str(rank), NODE_RANK="0")
    config = load_transfer_config(Path(out_dir) / "recipe.yaml")
    norms: list[str] = []

    class Norms(pl.Callback):
        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            norms.extend(type(m).__name__ for m in pl_module.detector.modules() if isinstance(m, nn.BatchNorm2d))

    result = transfer(config, [Norms()])
    torch.save(
        {"step": result.global_step, "rank": result.global_rank, "metrics": result.metrics, "norms": norms},
        Path(out_dir) / f"rank{rank}.pt",
    )


def test_two_process_ddp_run_with_synchronised_batchnorm(small_set, r18_checkpoint: Path, tmp_path: Path) -> None:
    fast_recipe(
        tmp_path / "recipe.yaml",
        model={"checkpoint": str(r18_checkpoint)},
        data={"data_dir": str(small_set.root)},
        solver={"max_steps": 3},
        trainer={"devices": WORLD, "strategy": "ddp"},
        output_dir=str(tmp_path / "run"),
    )
    rank0, rank1 = run_ranks(_ddp_worker, tmp_path, WORLD)
    assert (rank0["rank"], rank1["rank"]) == (0, 1) and rank0["step"] == rank1["step"] == 3
    assert rank0["norms"] and set(rank0["norms"]) == {"NaiveSyncBatchNorm"}
    assert "bbox_AP" in rank0["metrics"] and not rank1["metrics"]  # rank 0 evaluates
    assert (tmp_path / "run" / "evaluation.json").is_file() and sorted(logged(tmp_path / "run")) == [0, 1, 2]
