"""Training-step time of each method with and without the Hallucinator, measured interleaved.

One step = forward of both views, backward, SGD update. For each method the two variants
share the backbone architecture and hyper-parameters (the paper's CIFAR defaults) and
run alternately, repetition after repetition, so that load changes on the machine hit
both; the figure is the ratio of the medians.

    python benchmarks/hallucinator_overhead.py                      # ResNet-18, CIFAR stem, width 64, batch 256
    python benchmarks/hallucinator_overhead.py --width 32 --batch-size 128 --repeats 5

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hallucinator import backbones, methods
from hallucinator.methods.memory import MomentumTarget


def step_time(
    model: methods.SSLMethod,
    optimizer: torch.optim.Optimizer,
    views: tuple[torch.Tensor, torch.Tensor],
    bf16: bool = False,
) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one training step (CPU time is less affected by other jobs)."""
    if views[0].is_cuda:
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    if isinstance(model, MomentumTarget):  # the EMA target moves each step, as in the engine's step
        model.update_target(model.momentum)
    with torch.autocast(views[0].device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(*views)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    if views[0].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def step_flops(model: methods.SSLMethod, views: tuple[torch.Tensor, torch.Tensor]) -> int:
    """FLOPs of one forward + backward (matmuls and convolutions), independent of machine load."""
    with FlopCounterMode(display=False) as counter:
        model(*views)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    variants = {}
    for on in (False, True):
        backbone = backbones.build("resnet18", cifar_stem=True, width=args.width)
        model = methods.build(name, backbone, hallucinator=on).to(device).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.06, momentum=0.9)
        variants[on] = (model, optimizer)
    views = tuple(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device) for _ in range(2))
    flops = {on: step_flops(variants[on][0], views) for on in (False, True)}
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.warmup + args.repeats):
        # alternate which variant goes first, so neither always runs right after the other
        for on in (False, True) if repeat % 2 == 0 else (True, False):
            elapsed, elapsed_cpu = step_time(*variants[on], views, bf16=args.precision == "bf16-mixed")
            if repeat >= args.warmup:
                wall[on].append(elapsed)
                cpu[on].append(elapsed_cpu)
    without, with_ = statistics.median(wall[False]), statistics.median(wall[True])
    cpu_without, cpu_with = statistics.median(cpu[False]), statistics.median(cpu[True])
    hallucinator_params = sum(p.numel() for p in variants[True][0].hallucinator.parameters())
    return {
        "step_s_without": round(without, 4),
        "step_s_with": round(with_, 4),
        "ratio": round(with_ / without, 4),
        "cpu_s_without": round(cpu_without, 4),
        "cpu_s_with": round(cpu_with, 4),
        "cpu_ratio": round(cpu_with / cpu_without, 4),
        "gflops_without": round(flops[False] / 1e9, 2),
        "gflops_with": round(flops[True] / 1e9, 2),
        "flop_ratio": round(flops[True] / flops[False], 4),
        "hallucinator_params": hallucinator_params,
        "hallucinated_dim": variants[True][0].hallucinator.dim,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=sorted(methods.METHODS), choices=sorted(methods.METHODS))
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = the paper's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per variant (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", choices=("32-true", "bf16-mixed"), default="32-true", help="autocast of the step"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for name in args.methods:
        results[name] = measure(name, args, device)
        r = results[name]
        print(
            f"{name:8s} wall: without {r['step_s_without']:.3f} s  with {r['step_s_with']:.3f} s  ratio {r['ratio']:.3f} | "
            f"CPU: {r['cpu_s_without']:.3f} s / {r['cpu_s_with']:.3f} s  ratio {r['cpu_ratio']:.3f} | "
            f"FLOPs: {r['gflops_without']:.1f} G / {r['gflops_with']:.1f} G  ratio {r['flop_ratio']:.4f}  "
            f"(Hallucinator: {r['hallucinator_params']:,} parameters on {r['hallucinated_dim']}-d features)",
            flush=True,
        )
    config = {
        "backbone": "resnet18",
        "cifar_stem": True,
        "width": args.width,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": str(device),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        config["gpu"] = torch.cuda.get_device_name(device)
        config["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    print(json.dumps({"config": config, "methods": results}))


if __name__ == "__main__":
    main()
