"""End-to-end pre-training throughput: our engine versus a script built from lightly's building blocks.

Both sides train the same backbone (``hallucinator.backbones`` ResNet-18, CIFAR stem) with the
same method and batch on the same CIFAR-10 images, and include loading, augmentation and the
optimisation step. Ours is ``hallucinator.engine.pretrain`` as shipped (whole-batch gathers,
augmentation on the device, the precision ``auto`` picks); lightly's is the usual recipe from
its docs: ``SimCLRTransform`` / ``MoCoV2Transform`` on PIL images in a standard ``DataLoader``,
its projection heads and ``NTXentLoss`` (with a memory bank for MoCo), plain fp32. Both run
without the Hallucinator (lightly has none).

Each (implementation, method, width) runs in its own process, so its peak memory (max RSS) is
its own; the runs are interleaved round by round so that a change in machine load hits both
sides. Throughput is image pairs per second over the timed steps (after warm-up steps). With
``--crop-sizes 32 24`` ours also runs the quickstart's 24 px training crops: a cheaper workload than
lightly's 32 px, reported under its own key (``...-crop24``), never as the like-for-like ratio.

    python benchmarks/pretrain_throughput.py --data-dir ../shared/datasets/cifar10-jpeg.tar.gz

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def ours(args: argparse.Namespace) -> dict:
    import csv

    from hallucinator.engine import load_config, pretrain

    run = Path(args.output) / f"ours-{args.method}-{args.width}-{args.precision}-{args.crop_size}"
    overrides = [
        f"--model.method={args.method}",
        f"--model.width={args.width}",
        "--hallucinator.enabled=false",
        f"--data.data_dir={args.data_dir}",
        f"--data.batch_size={args.batch_size}",
        f"--trainer.max_steps={args.warmup + args.steps}",
        f"--trainer.precision={args.precision}",
        "--trainer.accelerator=cpu",
        "--trainer.log_every_n_steps=1",
        "--trainer.progress_bar=false",
        f"--output_dir={run}",
    ]
    if args.crop_size != 32:
        overrides.append(f"--data.crop_size={args.crop_size}")
    if args.method.startswith("moco"):
        overrides.append("--model.hparams.queue_size=4096")
    pretrain(load_config(None, overrides))
    (path,) = sorted((run / "csv").glob("version_*/metrics.csv"))[-1:]
    with path.open() as file:
        rates = [float(r["train/images_per_s"]) for r in csv.DictReader(file) if int(r["step"]) >= args.warmup]
    # pairs per second over the timed steps: total images / total time
    return {"pairs_per_s": len(rates) / sum(1 / r for r in rates)}


def lightly_script(args: argparse.Namespace) -> dict:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform, SimCLRTransform
    from PIL import Image
    from torch import nn

    from hallucinator import backbones
    from hallucinator.data import build_dataset

    images = build_dataset("cifar10", args.data_dir, "pretrain").images

    class PILImages(torch.utils.data.Dataset):
        def __init__(self, transform) -> None:
            self.transform = transform

        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, index: int):
            return self.transform(Image.fromarray(images[index].permute(1, 2, 0).numpy()))

    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=args.width)
    dim = backbone.num_features
    if args.method == "simclr":
        transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
        head = SimCLRProjectionHead(dim, dim, 128)
        criterion = NTXentLoss(temperature=0.5)
    else:
        transform = MoCoV2Transform(input_size=32, gaussian_blur=0.0)
        head = MoCoProjectionHead(dim, dim, 128)
        criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))
    model = nn.Sequential(backbone, head)
    momentum_model = copy.deepcopy(model)
    deactivate_requires_grad(momentum_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        PILImages(transform), batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    steps, started = 0, None
    while steps < args.warmup + args.steps:
        for (x0, x1) in loader:
            if steps == args.warmup:
                started = time.perf_counter()
            if args.method == "simclr":
                loss = criterion(model(x0), model(x1))
            else:
                update_momentum(model, momentum_model, m=0.99)
                with torch.no_grad():
                    keys = momentum_model(x1)
                loss = criterion(model(x0), keys)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            if steps == args.warmup + args.steps:
                break
    return {"pairs_per_s": args.steps * args.batch_size / (time.perf_counter() - started)}


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    figures = ours(args) if args.impl == "ours" else lightly_script(args)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def _crop_suffix(crop: int) -> str:
    return "" if crop == 32 else f"-crop{crop}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--methods", nargs="+", default=["simclr", "mocov2"])
    parser.add_argument("--widths", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the lightly script")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="ours: e.g. auto 32-true bf16-mixed")
    parser.add_argument("--crop-sizes", nargs="+", type=int, default=[32],
                        help="ours: training crop sides; 24 is the quickstart's (a different workload from lightly's 32)")
    parser.add_argument("--crop-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--output", default="/tmp/hallucinator-throughput")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "METHOD", "WIDTH", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.impl, args.method, width, args.precision = args.worker
        args.width = int(width)
        worker(args)
        return

    runs = [("lightly", m, w, "32-true", 32) for m in args.methods for w in args.widths]
    runs += [("ours", m, w, p, c) for m in args.methods for w in args.widths for p in args.precisions
             for c in args.crop_sizes]
    results: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        for impl, method, width, precision, crop in runs:
            command = [sys.executable, __file__, "--worker", impl, method, str(width), precision, "--crop-size", str(crop)]
            for flag in ("data_dir", "batch_size", "steps", "warmup", "workers", "threads", "output"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{impl} {method} w{width} failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            key = f"{impl}-{method}-w{width}" + (f"-{precision}" if impl == "ours" else "") + _crop_suffix(crop)
            results.setdefault(key, []).append(figures)
            print(f"round {round_} {key}: {figures['pairs_per_s']:.1f} pairs/s, peak {figures['peak_rss_mb']:.0f} MB",
                  flush=True)

    summary: dict[str, float] = {}
    for key, runs_ in results.items():
        summary[f"{key}_pairs_per_s"] = round(statistics.median(r["pairs_per_s"] for r in runs_), 1)
        summary[f"{key}_peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in runs_))
    for method in args.methods:
        for width in args.widths:
            base = summary[f"lightly-{method}-w{width}_pairs_per_s"]
            for precision in args.precisions:
                for crop in args.crop_sizes:
                    suffix = f"{method}-w{width}-{precision}{_crop_suffix(crop)}"
                    summary[f"speedup-{suffix}"] = round(summary[f"ours-{suffix}_pairs_per_s"] / base, 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
