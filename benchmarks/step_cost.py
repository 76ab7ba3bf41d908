"""Cost of one pre-training step (forward, backward, SGD) by batch size and crop size, side by side.

The model alone: random tensors in, no loading or augmentation, so the figures isolate what
the batch and the training resolution cost. Used to pick the quickstart's recipe (batch 128 on
24 px crops; docs/training.md).

    python benchmarks/step_cost.py --method simclr --width 16 --shapes 256x32 128x32 256x24 128x24

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hallucinator import backbones, methods
from hallucinator.methods.memory import MomentumTarget


def step_seconds(method: str, width: int, batch: int, size: int, hallucinator: bool, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = methods.build(method, backbones.build("resnet18", cifar_stem=True, width=width), hallucinator=hallucinator)
    # as the engine does: channels_last unless oneDNN would corrupt the narrow net's gradients
    memory_format = torch.channels_last if backbones.channels_last_safe(model) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views = [torch.randn(batch, 3, size, size).contiguous(memory_format=memory_format) for _ in range(2)]

    def step() -> None:
        if isinstance(model, MomentumTarget):  # the EMA target moves each step, as in the engine's step
            model.update_target(model.momentum)
        model(*views)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr", choices=sorted(methods.METHODS))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["256x32", "128x32", "256x24", "128x24"],
        help="BATCHxSIZE: batch of image pairs x crop side in pixels",
    )
    parser.add_argument("--no-hallucinator", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    figures: dict[str, float] = {}
    for shape in args.shapes:
        batch, size = (int(part) for part in shape.split("x"))
        seconds = step_seconds(args.method, args.width, batch, size, not args.no_hallucinator, args.steps, args.warmup)
        figures[f"{shape}_ms"] = round(seconds * 1000, 1)
        figures[f"{shape}_pairs_per_s"] = round(batch / seconds, 1)
        print(f"batch {batch}, {size} px: {seconds * 1000:.0f} ms/step, {batch / seconds:.0f} pairs/s", flush=True)
    figures.update(method=args.method, width=args.width, threads=torch.get_num_threads())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
