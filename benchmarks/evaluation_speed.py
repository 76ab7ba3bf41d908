"""Evaluation cost on this machine: kNN on a CIFAR-10-sized bank, the fast linear probe, feature extraction.

Synthetic features/images of CIFAR-10's sizes (50,000 train, 10,000 test); the accuracy
figures are in the tests. Prints figures and ends with one JSON line.

    python benchmarks/evaluation_speed.py [--dim 128] [--threads N] [--extract-only]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hallucinator import backbones
from hallucinator.evaluation.features import extract_features, frozen
from hallucinator.evaluation.knn import knn_classify
from hallucinator.evaluation.linear import LinearConfig, linear_probe_features


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=128, help="feature dimension (ResNet-18 width 16: 128)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--extract-images", type=int, default=512)
    parser.add_argument("--extract-only", action="store_true", help="only the feature-extraction figures")
    parser.add_argument(
        "--fold-widths", type=int, nargs="*", default=[16, 64], help="ResNet-18 widths whose BatchNorm folding is timed"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    train_y, test_y = torch.arange(50_000) % 10, torch.arange(10_000) % 10
    centres = torch.randn(10, args.dim, generator=generator)
    train_x = centres[train_y] + 2 * torch.randn(50_000, args.dim, generator=generator)
    test_x = centres[test_y] + 2 * torch.randn(10_000, args.dim, generator=generator)
    figures = {"threads": args.threads, "dim": args.dim}

    if not args.extract_only:
        # kNN: the whole bank in one chunk vs 8,192-row bank chunks (the running top-k merge)
        for name, bank_chunk in (("knn_s", 65_536), ("knn_chunked_s", 8_192)):
            _, seconds = timed(lambda: knn_classify(train_x, train_y, test_x, test_y, bank_chunk_size=bank_chunk))
            figures[name] = round(seconds, 2)
            print(f"kNN 50,000 x 10,000 x {args.dim}, k=200, bank chunk {bank_chunk}: {seconds:.2f} s")

        result, seconds = timed(lambda: linear_probe_features(train_x, train_y, test_x, test_y, LinearConfig()))
        figures["linear_fast_s"] = round(seconds, 1)
        print(
            f"fast linear probe, 100 epochs on 50,000 x {args.dim} features: {seconds:.1f} s (top-1 {result.top1:.1f} %)"
        )

    backbone = backbones.build("resnet18", cifar_stem=True, width=16)
    images = torch.randint(0, 256, (args.extract_images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    # fp32 in both memory formats, side by side (the evaluation commands use channels_last), then bf16
    for name, memory_format, precision in (
        ("32", torch.contiguous_format, "32"),
        ("32_channels_last", torch.channels_last, "32"),
        ("bf16", torch.contiguous_format, "bf16"),
    ):
        backbone = backbone.to(memory_format=memory_format)
        extract_features(backbone, images[:64], precision=precision)  # warm-up
        _, seconds = timed(lambda: extract_features(backbone, images, batch_size=512, precision=precision))
        rate = args.extract_images / seconds
        figures[f"extract_images_per_s_{name}"] = round(rate)
        # full protocol: 100 epochs over the 50,000 training images through the frozen backbone
        figures[f"full_linear_estimate_min_{name}"] = round(100 * 50_000 / rate / 60, 1)
        print(
            f"feature extraction, ResNet-18 width 16 CIFAR stem, {name}: {rate:.0f} images/s "
            f"(full linear protocol ~ {100 * 50_000 / rate / 60:.0f} min of backbone passes)"
        )

    # BatchNorm folding (what extract_features does): the eval-mode backbone vs its folded copy,
    # channels_last, alternating batch by batch so that machine load hits both alike
    for width in args.fold_widths:
        plain = backbones.build("resnet18", cifar_stem=True, width=width).to(memory_format=torch.channels_last).eval()
        batches = images.float().div(255).contiguous(memory_format=torch.channels_last).split(512)
        seconds = {"plain": 0.0, "folded": 0.0}
        with torch.no_grad(), frozen(plain) as folded:
            for model in (plain, folded):
                model(batches[0][:64])  # warm-up
            for batch in batches:
                for name, model in (("plain", plain), ("folded", folded)):
                    seconds[name] += timed(lambda: model(batch))[1]
        for name, total in seconds.items():
            figures[f"forward_w{width}_images_per_s_{name}"] = round(args.extract_images / total)
        figures[f"fold_speedup_w{width}"] = round(seconds["plain"] / seconds["folded"], 2)
        print(
            f"eval forward, ResNet-18 width {width}, channels_last: {args.extract_images / seconds['plain']:.0f} images/s "
            f"plain, {args.extract_images / seconds['folded']:.0f} with BatchNorm folded "
            f"({seconds['plain'] / seconds['folded']:.2f}x)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
