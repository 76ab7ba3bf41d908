"""How fast this machine runs the convolutions of a thin ResNet-18, against its matmul peak, per precision.

The roofline of ``pretrain_throughput.py`` takes the machine's compute limit from large (1024 x 1024) matmuls.
A width-16 ResNet-18's 3 x 3 convolutions have 16 to 128 channels: their kernels may reach far less of that
peak, and less so in bf16 than in fp32. This times each stage's convolution (the shape of every 3 x 3,
stride-1 convolution of its basic blocks: ``width * 2**stage`` channels at ``crop / 2**stage`` pixels, the
CIFAR stem), forward and both backward gradients, channels_last as the engine runs it, and reports its
GFLOP/s (FLOPs from ``torch.utils.flop_counter``) and its fraction of the matmul peak of the same precision.

    python benchmarks/conv_rates.py --width 16 --batch-size 256 --crop-size 32 --threads 2

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling module
import roofline  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def conv_step_rate(channels: int, pixels: int, batch_size: int, dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of one 3 x 3 convolution ``channels -> channels`` at ``pixels`` px: forward, input and weight grads."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, channels, pixels, pixels, generator=generator).to(dtype)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(dtype)
    x = x.to(memory_format=torch.channels_last).requires_grad_()
    weight = weight.to(memory_format=torch.channels_last).requires_grad_()

    def step() -> None:
        out = F.conv2d(x, weight, padding=1)
        out.backward(torch.ones_like(out))

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / roofline.best_seconds(step, torch.device("cpu"), seconds) / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16, help="the ResNet's first stage channels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per shape and precision (best run)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {name: roofline.gemm_peak_gflops("cpu", name, 1024, args.seconds) for name in DTYPES}
    print(f"matmul peak (1024 x 1024): fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s")
    stages = []
    for stage in range(4):
        channels, pixels = args.width * 2**stage, max(1, args.crop_size // 2**stage)
        rates = {
            name: conv_step_rate(channels, pixels, args.batch_size, dtype, args.seconds)
            for name, dtype in DTYPES.items()
        }
        row = {"channels": channels, "pixels": pixels}
        for name, rate in rates.items():
            row[f"{name}_gflops"] = round(rate, 1)
            row[f"{name}_peak_fraction"] = round(rate / peaks[name], 3)
        row["bf16_over_fp32"] = round(rates["bf16"] / rates["fp32"], 2)
        stages.append(row)
        print(
            f"{channels:4d} channels at {pixels:3d} px: fp32 {rate_text(row, 'fp32')}, bf16 {rate_text(row, 'bf16')}, "
            f"bf16 / fp32 {row['bf16_over_fp32']:.2f}"
        )
    summary = {
        "gemm_peak_gflops_fp32": round(peaks["fp32"], 1),
        "gemm_peak_gflops_bf16": round(peaks["bf16"], 1),
        "stages": stages,
        "width": args.width,
        "batch_size": args.batch_size,
        "crop_size": args.crop_size,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(summary))
    return summary


def rate_text(row: dict, name: str) -> str:
    return f"{row[f'{name}_gflops']:.1f} GFLOP/s ({row[f'{name}_peak_fraction']:.2f} of its peak)"


if __name__ == "__main__":
    main()
