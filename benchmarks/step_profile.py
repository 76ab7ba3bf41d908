"""Where a pre-training step's time goes: one step of the engine's parts under ``torch.profiler``, by kind.

The step is the engine's, in its order (augmentation on the device, the method's forward with the
Hallucinator and the loss, backward, the optimizer), on real CIFAR-10 images, after warm-up steps.
Every operation's own (self) time is put in one kind: the augmentation, the loss, the Hallucinator's
forward and the optimizer by the region it runs in (``record_function``); everything else by the
operation: convolution forward, convolution backward (input and weight gradients: oneDNN computes
them in one ``convolution_backward``), BatchNorm (forward and backward), matmul (the heads), element-wise
(the rest). "python and dispatch" is the step's wall time that no operation accounts for. The
Hallucinator's backward runs inside autograd's backward and is counted by operation.

``--compile`` compiles the backbone as ``trainer.compile`` does; inductor's generated kernels are then timed
by name: those with a BatchNorm in them as "batchnorm (fused)", the others as "element-wise (fused)". This is
the BatchNorm + ReLU fusion eager PyTorch lacks on the CPU: ``fused_batchnorm_relu_kernels`` counts the kernels
that compute a BatchNorm and its ReLU in one (forward: statistics, normalisation, running statistics, ReLU;
backward: BatchNorm's backward with ReLU's ``threshold_backward``), and ``fused_kernels`` lists them all.

    python benchmarks/step_profile.py --width 16 --precision 32-true
    python benchmarks/step_profile.py --width 64 --precision bf16-mixed --batch-size 256
    python benchmarks/step_profile.py --width 16 --precision bf16-mixed --compile true

The last line printed is one JSON object with every figure (milliseconds per step by kind).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from hallucinator import backbones, losses
from hallucinator.engine import load_config
from hallucinator.engine.config import Config
from hallucinator.engine.module import build_augmentation, build_method, compile_in_place
from hallucinator.engine.optim import build_optimizer
from hallucinator.methods.base import SSLMethod
from hallucinator.methods.memory import MomentumTarget

REGIONS = ("augmentation", "hallucinator", "loss", "optimizer")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICKSTARTS = {
    "simclr": CONFIGS / "quickstart.yaml",
    **{path.stem.removeprefix("quickstart_"): path for path in sorted(CONFIGS.glob("quickstart_*.yaml"))},
}
"""``--method`` -> the quickstart config whose step is profiled (each method's own recipe and hyper-parameters)."""
FUSED = (
    "cpp_fused"  # inductor's generated CPU kernels, e.g. graph_0_cpp_fused__native_batch_norm_legit_functional_relu_0
)
KINDS = {  # operation name fragments -> kind, first match wins
    "convolution_backward": "convolution backward",
    "convolution": "convolution forward",
    "batch_norm": "batchnorm",
    "addmm": "matmul",
    "mm": "matmul",
    "linear": "matmul",
}


def kind_of(name: str, region: str | None) -> str:
    """The kind an operation's (or an inductor kernel's) self time counts as: its region's, else by its name."""
    if region is not None:
        return region
    if FUSED in name:
        return "batchnorm (fused)" if "batch_norm" in name else "element-wise (fused)"
    for fragment, kind in KINDS.items():
        if fragment in name:
            return kind
    return "element-wise"


def _regioned(function, region: str):
    def wrapped(*args, **kwargs):
        with record_function(region):
            return function(*args, **kwargs)

    return wrapped


class Pieces(NamedTuple):
    """The engine's parts of a step, as ``PretrainModule`` builds them."""

    config: Config
    method: SSLMethod
    augment: torch.nn.Module
    optimizer: torch.optim.Optimizer
    channels_last: bool
    """Whether the method and its views are channels_last: as the engine, not for nets too narrow for oneDNN."""


def engine_pieces(args: argparse.Namespace) -> Pieces:
    """The method's quickstart config (:data:`QUICKSTARTS`) for ``args`` (width, batch, crop, Hallucinator, compile) and the engine's
    method (training mode, compiled as ``trainer.compile`` says), augmentation and optimizer built from it."""
    overrides = [
        f"--data.batch_size={args.batch_size}",
        f"--data.crop_size={args.crop_size}",
        f"--hallucinator.enabled={not args.no_hallucinator}",
        "--hallucinator.warmup_fraction=0",
        f"--trainer.compile={args.compile}",
    ]
    width = [] if args.width is None else [f"--model.width={args.width}"]  # a ViT has none
    config = load_config(QUICKSTARTS[args.method], overrides + width)
    torch.manual_seed(config.seed)
    method = build_method(config).train()
    channels_last = backbones.channels_last_safe(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    compile_in_place(config, method)
    augment = build_augmentation(config)
    assert augment is not None
    return Pieces(config, method, augment, build_optimizer(config, method), channels_last)


def batch_images(args: argparse.Namespace) -> torch.Tensor:
    """One batch of uint8 images: the first CIFAR-10 training images, or random ones with ``--synthetic``."""
    if args.synthetic:
        return torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    from hallucinator.data import build_dataset

    return build_dataset("cifar10", args.data_dir, "pretrain").images[: args.batch_size]


def make_views(pieces: Pieces, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """The engine's views of ``images``: augmented without autograd, channels_last when the method is."""
    form = torch.channels_last if pieces.channels_last else torch.contiguous_format
    with record_function("augmentation"), torch.no_grad():
        return [v.contiguous(memory_format=form) for v in pieces.augment(images, generator=generator)]


def train_step(pieces: Pieces, views: list[torch.Tensor], bf16: bool) -> float:
    """The engine's step after the views: EMA target, forward (bf16 autocast or not), backward, SGD; the loss."""
    method, optimizer = pieces.method, pieces.optimizer
    if isinstance(method, MomentumTarget):  # the EMA target moves each step, as in the engine's step
        method.update_target(method.momentum)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = method(*views)["loss"]
    loss.backward()
    with record_function("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def profile_step(args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """Milliseconds per step by kind, and the names of inductor's fused kernels (none without ``--compile``)."""
    if args.compile != "false":
        import torch._inductor.config as inductor

        inductor.cpp.enable_kernel_profile = True  # each generated kernel records its name
    pieces = engine_pieces(args)
    method = pieces.method
    images = batch_images(args)
    generator = torch.Generator().manual_seed(0)
    bf16 = args.precision == "bf16-mixed"
    module = __import__(type(method).__module__, fromlist=["_"])
    with ExitStack() as patches:  # the regions: the method module's own names for the losses, the Hallucinator
        for name in dir(losses):
            if callable(getattr(losses, name)) and hasattr(module, name):
                patches.enter_context(mock.patch.object(module, name, _regioned(getattr(module, name), "loss")))
        if method.hallucinator is not None:
            h = method.hallucinator
            patches.enter_context(mock.patch.object(h, "pair", _regioned(h.pair, "hallucinator")))

        def step() -> None:
            train_step(pieces, make_views(pieces, images, generator), bf16)

        for _ in range(args.warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            wall = (time.perf_counter() - started) / args.steps
    by_kind: dict[str, float] = defaultdict(float)
    fused: set[str] = set()
    for event in prof.events():
        if event.name in REGIONS or not (event.name.startswith("aten::") or FUSED in event.name):
            continue
        if FUSED in event.name:
            fused.add(event.name)
        region, parent = None, event.cpu_parent
        while parent is not None:
            if parent.name in REGIONS:
                region = parent.name
                break
            parent = parent.cpu_parent
        by_kind[kind_of(event.name, region)] += event.self_cpu_time_total / 1000 / args.steps
    figures = {kind: round(ms, 2) for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1])}
    figures["python and dispatch"] = round(max(0.0, wall * 1000 - sum(by_kind.values())), 2)
    figures["step"] = round(wall * 1000, 2)
    return figures, sorted(fused)


def add_step_arguments(parser: argparse.ArgumentParser, batch_size: int, crop_size: int) -> None:
    """The options :func:`engine_pieces` reads (data, method, width, batch, crop, precision, compile)."""
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--synthetic", action="store_true", help="random uint8 images instead of CIFAR-10")
    parser.add_argument(
        "--method", choices=sorted(QUICKSTARTS), default="simclr", help="the method of that quickstart config"
    )
    parser.add_argument("--width", type=int, help="the ResNet's width (default: the quickstart's, 16)")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--crop-size", type=int, default=crop_size)
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--no-hallucinator", action="store_true")
    parser.add_argument(
        "--compile", choices=("false", "true", "max-autotune"), default="false", help="trainer.compile of the backbone"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser, batch_size=128, crop_size=24)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures, fused = profile_step(args)
    total = figures["step"]
    for kind, ms in figures.items():
        if kind != "step":
            print(f"{kind:22s} {ms:9.2f} ms  {100 * ms / total:5.1f} %")
    print(f"{'step (wall)':22s} {total:9.2f} ms")
    summary = {
        "ms_per_step": figures,
        "method": args.method,
        "width": args.width,
        "batch_size": args.batch_size,
        "crop_size": args.crop_size,
        "precision": args.precision,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
    }
    if fused:
        bn_relu = [n for n in fused if "batch_norm" in n and ("relu" in n or "threshold_backward" in n)]
        print(f"{len(fused)} inductor kernels, {len(bn_relu)} of them a BatchNorm with its ReLU (names in the JSON)")
        summary.update(fused_kernels=fused, fused_batchnorm_relu_kernels=len(bn_relu))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
