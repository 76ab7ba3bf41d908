"""Cost of the online linear probe: pre-training steps with and without it, interleaved, side by side.

The model alone (random views in, no loading or augmentation, which would only dilute the
ratio): forward, backward and SGD of the method, then, in the probed arm, one step of the
probe on the detached view-1 features. Steps of the two arms alternate, so a machine shared
with other work slows both alike; the figure is the ratio of their median step times.

    python benchmarks/online_linear_cost.py --method simclr --width 16 --batch 128 --size 24

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hallucinator import backbones, methods
from hallucinator.engine.online_linear import OnlineLinear
from hallucinator.methods.memory import MomentumTarget


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr", choices=sorted(methods.METHODS))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = methods.build(args.method, backbones.build("resnet18", cifar_stem=True, width=args.width))
    memory_format = torch.channels_last if backbones.channels_last_safe(model) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    probe = OnlineLinear(model.num_features, args.classes)
    views = [torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=memory_format) for _ in range(2)]
    labels = torch.randint(0, args.classes, (args.batch,))

    probe_times: list[float] = []

    def step(probed: bool) -> float:
        started = time.perf_counter()
        if isinstance(model, MomentumTarget):  # the EMA target moves each step, as in the engine's step
            model.update_target(model.momentum)
        out = model(*views)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if probed:
            probe_started = time.perf_counter()
            probe.step(out["features"], labels)
            probe_times.append(time.perf_counter() - probe_started)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step(True), step(False)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.steps):
        for probed in (True, False) if i % 2 else (False, True):
            times[probed].append(step(probed))
    plain, probed = statistics.median(times[False]), statistics.median(times[True])
    probe_alone = statistics.median(probe_times[args.warmup :])
    figures = {
        "step_ms_plain": round(plain * 1000, 2),
        "step_ms_probe": round(probed * 1000, 2),
        "overhead_percent": round(100 * (probed / plain - 1), 2),
        "probe_ms": round(probe_alone * 1000, 3),
        "probe_percent_of_step": round(100 * probe_alone / plain, 3),
        "method": args.method,
        "width": args.width,
        "batch": args.batch,
        "size": args.size,
        "threads": torch.get_num_threads(),
    }
    print(
        f"{args.method} width {args.width}, batch {args.batch} at {args.size} px: {plain * 1000:.1f} ms/step plain, "
        f"{probed * 1000:.1f} ms with the probe ({figures['overhead_percent']:+.2f} %); the probe's step alone "
        f"{probe_alone * 1000:.2f} ms ({figures['probe_percent_of_step']:.3f} % of a step)"
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
