"""Where a pre-training step's time goes: one step of the engine's parts under ``torch.profiler``, by kind.

The step is the engine's, in its order (augmentation on the device, the method's forward with the
Hallucinator and the loss, backward, the optimizer), on real CIFAR-10 images, after warm-up steps.
Every operation's own (self) time is put in one kind: the augmentation, the loss, the Hallucinator's
forward and the optimizer by the region it runs in (``record_function``); everything else by the
operation: convolution forward, convolution backward (input and weight gradients: oneDNN computes
them in one ``convolution_backward``), BatchNorm (forward and backward), matmul (the heads), element-wise
(the rest). "python and dispatch" is the step's wall time that no operation accounts for. The
Hallucinator's backward runs inside autograd's backward and is counted by operation.

    python benchmarks/step_profile.py --width 16 --precision 32-true
    python benchmarks/step_profile.py --width 64 --precision bf16-mixed --batch-size 256

The last line printed is one JSON object with every figure (milliseconds per step by kind).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import ExitStack
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from hallucinator import losses
from hallucinator.engine import load_config
from hallucinator.engine.module import build_augmentation, build_method
from hallucinator.engine.optim import build_optimizer
from hallucinator.methods.memory import MomentumTarget

REGIONS = ("augmentation", "hallucinator", "loss", "optimizer")
KINDS = {  # operation name fragments -> kind, first match wins
    "convolution_backward": "convolution backward",
    "convolution": "convolution forward",
    "batch_norm": "batchnorm",
    "addmm": "matmul",
    "mm": "matmul",
    "linear": "matmul",
}


def kind_of(name: str, region: str | None) -> str:
    """The kind an operation's self time counts as: its region's, else by its name."""
    if region is not None:
        return region
    for fragment, kind in KINDS.items():
        if fragment in name:
            return kind
    return "element-wise"


def _regioned(function, region: str):
    def wrapped(*args, **kwargs):
        with record_function(region):
            return function(*args, **kwargs)

    return wrapped


def profile_step(args: argparse.Namespace) -> dict[str, float]:
    overrides = [
        f"--model.method={args.method}",
        f"--model.width={args.width}",
        f"--data.batch_size={args.batch_size}",
        f"--data.crop_size={args.crop_size}",
        f"--hallucinator.enabled={not args.no_hallucinator}",
        "--hallucinator.warmup_fraction=0",
    ]
    config = load_config("configs/quickstart.yaml", overrides)
    method = build_method(config).train().to(memory_format=torch.channels_last)
    augment = build_augmentation(config)
    assert augment is not None
    optimizer = build_optimizer(config, method)
    if args.synthetic:
        images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    else:
        from hallucinator.data import build_dataset

        dataset = build_dataset("cifar10", args.data_dir, "pretrain")
        images = dataset.images[: args.batch_size]
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
            with record_function("augmentation"), torch.no_grad():
                views = [v.contiguous(memory_format=torch.channels_last) for v in augment(images, generator=generator)]
            if isinstance(method, MomentumTarget):  # the EMA target moves each step, as in the engine's step
                method.update_target(method.momentum)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = method(*views)["loss"]
            loss.backward()
            with record_function("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        for _ in range(args.warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            wall = (time.perf_counter() - started) / args.steps
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name in REGIONS or not event.name.startswith("aten::"):
            continue
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
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--synthetic", action="store_true", help="random uint8 images instead of CIFAR-10")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop-size", type=int, default=24)
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--no-hallucinator", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = profile_step(args)
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
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
