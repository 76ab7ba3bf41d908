"""End-to-end pre-training throughput: our engine versus a script built from lightly's building blocks.

Both sides train the same backbone (``hallucinator.backbones`` ResNet-18, CIFAR stem) with the
same method and batch on the same CIFAR-10 images, and include loading, augmentation and the
optimisation step. Ours is ``hallucinator.engine.pretrain`` as shipped (whole-batch gathers,
augmentation on the device, the precision ``auto`` picks); lightly's is the usual recipe from
its docs: ``SimCLRTransform`` / ``MoCoV2Transform`` on PIL images in a standard ``DataLoader``,
its projection heads and ``NTXentLoss`` (with a memory bank for MoCo), plain fp32 unless
``--lightly-precision bf16-mixed`` (bf16 autocast). Both run
without the Hallucinator (lightly has none).

Each (implementation, method, width) runs in its own process, so its peak memory (max RSS) is
its own; the runs are interleaved round by round so that a change in machine load hits both
sides. Throughput is image pairs per second over the timed steps (after warm-up steps). With
``--crop-sizes 32 24`` ours also runs the quickstart's 24 px training crops: a cheaper workload than
lightly's 32 px, reported under its own key (``...-crop24``), never as the like-for-like ratio.

How far from the machine's limit: ours also reports the GFLOP/s its step achieves (the FLOPs of one
training step counted with ``torch.utils.flop_counter``, times steps/s) and that figure's fraction of
the machine's measured matmul peak in the step's precision (a short fp32 / bf16 GEMM probe); and its
**roofline limit**, ``max(FLOPs / peak, bytes / bandwidth)`` with the bytes the step moves
(``benchmarks/roofline.py``) and the machine's triad bandwidth, printed as ``..._roofline_fraction``
(the step's pairs/s over the limit's) and ``..._bound`` (which term sets the limit).
``--variants`` times the levers of a step's speed side by side (``throughput_variants.py``: ``torch.compile``
and its modes, the memory format, the SGD implementation, the batch, the threads; ``eager-cl``, the default, is the
engine as shipped), interleaved round by round; each variant's median pairs/s, its min-max over the rounds and its
ratio to ``--baseline`` (same method, width, precision and crop) are printed at the end. ``--device gpu`` runs both
sides on CUDA (lightly then augments on the CPU in its loader and copies batches to the GPU, as its docs do).

    python benchmarks/pretrain_throughput.py --data-dir ../shared/datasets/cifar10-jpeg.tar.gz
    python benchmarks/pretrain_throughput.py --device gpu --widths 64 --batch-size 512 \
        --precisions bf16-mixed --lightly-precision bf16-mixed --variants eager eager-cl compile-cl
    python benchmarks/pretrain_throughput.py --no-lightly --methods simclr --widths 16 --rounds 3 \
        --variants eager-cl compile-cl sgd-fused batch-512 threads-1

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling module
import roofline  # noqa: E402
import throughput_variants  # noqa: E402


def ours(args: argparse.Namespace) -> dict:
    import csv

    from hallucinator.engine import load_config, pretrain

    run = Path(args.output) / f"ours-{args.method}-{args.width}-{args.precision}-{args.crop_size}-{args.variant}"
    overrides = [
        f"--model.method={args.method}",
        f"--model.width={args.width}",
        "--hallucinator.enabled=false",
        f"--data.data_dir={args.data_dir}",
        f"--data.batch_size={args.batch_size}",
        f"--trainer.max_steps={args.warmup + args.steps}",
        f"--trainer.precision={args.precision}",
        f"--trainer.accelerator={args.device}",
        "--trainer.log_every_n_steps=1",
        "--trainer.progress_bar=false",
        f"--output_dir={run}",
    ]
    if args.crop_size != 32:
        overrides.append(f"--data.crop_size={args.crop_size}")
    if args.method.startswith("moco"):
        overrides.append("--model.hparams.queue_size=4096")
    # the variant's overrides last: they win (batch-512 over --batch-size)
    config = pretrain(load_config(None, overrides + throughput_variants.overrides(args.variant))).config
    (path,) = sorted((run / "csv").glob("version_*/metrics.csv"))[-1:]
    with path.open() as file:
        rates = [float(r["train/images_per_s"]) for r in csv.DictReader(file) if int(r["step"]) >= args.warmup]
    # pairs per second over the timed steps: total images / total time
    pairs_per_s = len(rates) / sum(1 / r for r in rates)
    figures = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if args.device == "gpu" else {}
    flops, moved = step_cost(config, args.device)  # after reading the peak: this step is not the run's
    return {
        **figures,
        "pairs_per_s": pairs_per_s,
        "precision": config.trainer.precision,  # "auto" resolved
        "batch_size": config.data.batch_size,
        "threads": torch.get_num_threads(),
        "step_gflop": flops / 1e9,
        "step_gb": moved / 1e9,
        "achieved_gflops": flops / config.data.batch_size * pairs_per_s / 1e9,
    }


def step_cost(config, device: str) -> tuple[int, int]:
    """FLOPs (matmuls and convolutions) and bytes moved (:class:`roofline.ByteCounter`) of one training step of
    ``config``'s model: forward, backward and the SGD update, on random views of the training crop size.

    FLOPs with ``torch.utils.flop_counter`` (they do not depend on the device or the precision); bytes in the
    run's precision (bf16 autocast halves the activations of the operations it casts).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from hallucinator.engine.module import build_method

    device_ = torch.device("cuda" if device == "gpu" else device)
    method = build_method(config).to(device_).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    size = config.data.training_crop_size
    views = [torch.randn(config.data.batch_size, 3, size, size, device=device_) for _ in range(2)]
    bf16 = config.trainer.precision == "bf16-mixed"
    with FlopCounterMode(display=False) as flops, roofline.ByteCounter() as moved:
        with torch.autocast(device_.type, dtype=torch.bfloat16, enabled=bf16):
            loss = method(*views)["loss"]
        loss.backward()
        optimizer.step()
    return flops.get_total_flops(), moved.total


def lightly_script(args: argparse.Namespace) -> dict:
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
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    model = nn.Sequential(backbone, head).to(device)
    momentum_model = copy.deepcopy(model)
    deactivate_requires_grad(momentum_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        PILImages(transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    steps, started = 0, None
    while steps < args.warmup + args.steps:
        for x0, x1 in loader:
            if steps == args.warmup:
                synchronize(device)
                started = time.perf_counter()
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            with autocast:
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
    synchronize(device)
    return {"pairs_per_s": args.steps * args.batch_size / (time.perf_counter() - started)}


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = ours(args) if args.impl == "ours" else lightly_script(args)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and args.device == "gpu":
        figures.setdefault("peak_gpu_mb", torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(figures))


def _suffix(crop: int, variant: str) -> str:
    """Key suffix of a non-default variant and crop size (the defaults keep the keys of earlier runs)."""
    return ("" if variant == DEFAULT_VARIANT else f"-{variant}") + ("" if crop == 32 else f"-crop{crop}")


DEFAULT_VARIANT = "eager-cl"


def variant_name(name: str) -> str:
    """``--variants``' type: a name ``throughput_variants`` knows (checked before any run starts)."""
    try:
        throughput_variants.overrides(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return name


def main(argv: list[str] | None = None) -> dict:
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
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="ours: e.g. auto 32-true bf16-mixed")
    parser.add_argument(
        "--lightly-precision",
        choices=("32-true", "bf16-mixed"),
        default="32-true",
        help="the lightly script's autocast",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=variant_name,
        default=[DEFAULT_VARIANT],
        help="ours: the engine as shipped (eager-cl) or with a lever changed, e.g. compile-cl, "
        "compile-max-autotune-cl, compile-method-cl, sgd-fused, batch-512, threads-1 (throughput_variants.py)",
    )
    parser.add_argument(
        "--baseline", type=variant_name, default=DEFAULT_VARIANT, help="the variant the others' ratios are to (run too)"
    )
    parser.add_argument(
        "--crop-sizes",
        nargs="+",
        type=int,
        default=[32],
        help="ours: training crop sides; 24 is the quickstart's (a different workload from lightly's 32)",
    )
    parser.add_argument("--no-lightly", action="store_true", help="ours only")
    parser.add_argument("--partial", action="store_true", help="also print the JSON summary so far after every run")
    parser.add_argument(
        "--gemm-size", type=int, default=0, help="side of the peak-probe matmuls (0: 1024 CPU, 8192 GPU)"
    )
    parser.add_argument("--gemm-seconds", type=float, default=1.0, help="time spent on each peak probe")
    parser.add_argument("--crop-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=DEFAULT_VARIANT, help=argparse.SUPPRESS)
    parser.add_argument("--output", default="/tmp/hallucinator-throughput")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "METHOD", "WIDTH", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.impl, args.method, width, args.precision = args.worker
        args.width = int(width)
        worker(args)
        return {}

    summary: dict[str, float | str] = {}
    lightly = not args.no_lightly and importlib.util.find_spec("lightly") is not None
    if not lightly:
        summary["lightly"] = "skipped (--no-lightly)" if args.no_lightly else "not installed"
        print(f"lightly {summary['lightly']}: only ours runs", flush=True)
    lp = args.lightly_precision
    runs = [("lightly", m, w, lp, 32, DEFAULT_VARIANT) for m in args.methods for w in args.widths] if lightly else []
    # variants outermost: with --partial, a run stopped early has the cheap eager figures first
    runs += [
        ("ours", m, w, p, c, v)
        for v in _variants(args)
        for m in args.methods
        for w in args.widths
        for p in args.precisions
        for c in args.crop_sizes
    ]
    # the machine's limit: the best matmul rate in each precision the step used
    size = args.gemm_size or (8192 if args.device == "gpu" else 1024)
    if args.threads:
        torch.set_num_threads(args.threads)
    for dtype in ("fp32", "bf16"):
        summary[f"gemm_peak_gflops_{dtype}"] = round(
            roofline.gemm_peak_gflops(args.device, dtype, size, args.gemm_seconds), 1
        )
        print(f"{dtype} matmul peak ({size} x {size}): {summary[f'gemm_peak_gflops_{dtype}']:.1f} GFLOP/s", flush=True)
    summary["gemm_size"] = size
    for kind, gbps in roofline.memory_bandwidth_gbps(args.device, seconds=args.gemm_seconds).items():
        summary[f"memory_bandwidth_gbps_{kind}"] = round(gbps, 1)
        print(f"memory bandwidth ({kind}): {gbps:.1f} GB/s", flush=True)

    results: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        for impl, method, width, precision, crop, variant in runs:
            command = [
                sys.executable,
                __file__,
                "--worker",
                impl,
                method,
                str(width),
                precision,
                "--crop-size",
                str(crop),
                "--variant",
                variant,
            ]
            for flag in ("data_dir", "batch_size", "steps", "warmup", "workers", "threads", "output", "device"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{impl} {method} w{width} {precision} {variant} failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            if impl == "ours":
                key = f"ours-{method}-w{width}-{precision}{_suffix(crop, variant)}"
            else:
                key = f"lightly-{method}-w{width}" + ("" if lp == "32-true" else f"-{lp}")
            results.setdefault(key, []).append(figures)
            line = f"round {round_} {key}: {figures['pairs_per_s']:.1f} pairs/s, peak {figures['peak_rss_mb']:.0f} MB"
            if "achieved_gflops" in figures:
                line += f", {figures['achieved_gflops']:.1f} GFLOP/s ({figures['step_gflop']:.1f} GFLOP"
                line += f" and {figures['step_gb']:.2f} GB moved a step)"
            print(line, flush=True)
            if args.partial:
                print(json.dumps(summarize(results, dict(summary), args, lightly)), flush=True)
    summary = summarize(results, summary, args, lightly)
    print_table(results, summary)
    print(json.dumps(summary))
    return summary


def summarize(results: dict[str, list[dict]], summary: dict, args: argparse.Namespace, lightly: bool) -> dict:
    """``summary`` (the GEMM peaks) with the medians and spreads, GFLOP/s, peak fractions, speed-ups over lightly
    and ratios to the baseline variant of ``results``."""
    lp = args.lightly_precision
    for key, runs_ in results.items():
        rates = [r["pairs_per_s"] for r in runs_]
        summary[f"{key}_pairs_per_s"] = round(statistics.median(rates), 1)
        summary[f"{key}_pairs_per_s_min"], summary[f"{key}_pairs_per_s_max"] = (
            round(min(rates), 1),
            round(max(rates), 1),
        )
        summary[f"{key}_peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in runs_))
        if "peak_gpu_mb" in runs_[0]:
            summary[f"{key}_peak_gpu_mb"] = round(max(r["peak_gpu_mb"] for r in runs_))
        if key.startswith("ours"):
            achieved = statistics.median(r["achieved_gflops"] for r in runs_)
            peak = summary[
                "gemm_peak_gflops_bf16" if runs_[0]["precision"] == "bf16-mixed" else "gemm_peak_gflops_fp32"
            ]
            summary[f"{key}_step_gflop"] = round(runs_[0]["step_gflop"], 2)
            summary[f"{key}_achieved_gflops"] = round(achieved, 1)
            summary[f"{key}_peak_fraction"] = round(achieved / peak, 4)
            # the roofline: the step at the matmul peak or at the triad bandwidth, whichever is slower
            flops, moved = runs_[0]["step_gflop"] * 1e9, runs_[0]["step_gb"] * 1e9
            limit = roofline.roofline_seconds(flops, moved, peak, summary["memory_bandwidth_gbps_triad"])
            pairs, batch = summary[f"{key}_pairs_per_s"], runs_[0]["batch_size"]
            summary[f"{key}_step_gb"] = round(runs_[0]["step_gb"], 3)
            summary[f"{key}_bound"] = "compute" if flops / (peak * 1e9) >= limit else "memory"
            summary[f"{key}_roofline_pairs_per_s"] = round(batch / limit, 1)
            summary[f"{key}_roofline_fraction"] = round(pairs * limit / batch, 4)
    for method, width, precision, crop in itertools.product(
        args.methods, args.widths, args.precisions, args.crop_sizes
    ):
        lightly_key = f"lightly-{method}-w{width}" + ("" if lp == "32-true" else f"-{lp}")
        base = summary.get(f"{lightly_key}_pairs_per_s") if lightly else None
        baseline = summary.get(f"ours-{method}-w{width}-{precision}{_suffix(crop, args.baseline)}_pairs_per_s")
        for variant in _variants(args):
            suffix = f"{method}-w{width}-{precision}{_suffix(crop, variant)}"
            pairs = summary.get(f"ours-{suffix}_pairs_per_s")
            if pairs is None:  # --partial: not all have run yet
                continue
            if base is not None:
                summary[f"speedup-{suffix}"] = round(pairs / base, 2)
            if baseline is not None and variant != args.baseline:
                summary[f"ratio-{suffix}"] = round(pairs / baseline, 3)
    summary.update(device=args.device, batch_size=args.batch_size, threads=torch.get_num_threads())
    return summary


def _variants(args: argparse.Namespace) -> list[str]:
    """The variants ours runs: the baseline first, then ``--variants`` (once each)."""
    return list(dict.fromkeys([args.baseline, *args.variants]))


def print_table(results: dict[str, list[dict]], summary: dict) -> None:
    """Each run's median pairs/s, its min-max over the rounds and its ratio to the baseline variant."""
    print(f"{'run':56s} {'pairs/s':>8s} {'min-max over rounds':>20s} {'spread':>7s} {'ratio':>6s}")
    for key in results:
        median, low, high = (summary[f"{key}_pairs_per_s{end}"] for end in ("", "_min", "_max"))
        ratio = summary.get(f"ratio-{key.removeprefix('ours-')}")
        spread = f"{100 * (high - low) / median:6.1f}%" if median else "-"
        line = f"{key:56s} {median:8.1f} {f'{low:.1f}-{high:.1f}':>20s} {spread:>7s}"
        print(line + (f" {ratio:6.3f}" if ratio is not None else ""))


if __name__ == "__main__":
    main()
