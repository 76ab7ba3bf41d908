"""Same run, two precisions: does bf16 autocast train as well as fp32, and how much faster is it?

The evidence `trainer.precision: auto` rests on (docs/training.md, "Precision"): a precision may
become a device's default only if, side by side, it is faster and the kNN top-1 it reaches is
within the seed spread of fp32's. For each seed the script pre-trains CONFIG once per precision
(interleaved, so that drifts of the machine's speed hit both alike), everything else equal, then
evaluates every run with the same fp32 kNN on the test set.

    python benchmarks/precision_parity.py --device cpu --seeds 0 1      # a CPU with AVX-512 BF16 / AMX
    python benchmarks/precision_parity.py --device gpu --seeds 0 1 2
    python benchmarks/precision_parity.py --seeds 0 -- --trainer.max_steps=200   # config overrides after --

Runs go to OUTPUT_DIR/<precision>_s<seed>; a finished run is not trained again and an interrupted
one resumes, so the script can be stopped and started again. The last line printed is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from hallucinator.cli import main as hallucinator
from hallucinator.evaluation.report import load_evaluation

PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def device_name(device: str) -> str:
    if device in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def train_and_evaluate(args: argparse.Namespace, precision: str, seed: int) -> dict[str, float]:
    """One pre-training + kNN; returns its kNN top-1 and training pairs/s (from ``RUN/evaluation.json``)."""
    run = Path(args.output_dir) / f"{precision}_s{seed}"
    done = load_evaluation(run)
    if "knn" not in done:
        resume = ["--resume"] if (run / "checkpoints" / "last.ckpt").is_file() else []
        code = hallucinator(
            [
                "pretrain",
                args.config,
                "--output-dir",
                str(run),
                "--seed",
                str(seed),
                "--device",
                args.device,
                f"--trainer.precision={PRECISIONS[precision]}",
                "--trainer.progress_bar=false",
                "--no-knn",
                *(["--data-dir", args.data_dir] if args.data_dir else []),
                *resume,
                *args.overrides,
            ]
        )
        if code != 0:
            raise SystemExit(f"pre-training {run} failed (exit code {code}); see its output above")
        limits = ["--train-limit", str(args.knn_limit), "--test-limit", str(args.knn_limit)] if args.knn_limit else []
        # the same fp32 evaluation for every run: only the training precision differs
        code = hallucinator(
            ["knn", str(run / "checkpoints" / "last.ckpt"), "--precision", "32", "--no-progress", *limits]
        )
        if code != 0:
            raise SystemExit(f"kNN of {run} failed (exit code {code})")
        done = load_evaluation(run)
    return {"knn_top1": done["knn"]["top1"], "pairs_per_s": done["train"]["images_per_second"]}


def spread(values: list[float]) -> float | None:
    """Sample standard deviation; ``None`` for one value (strict JSON has no NaN)."""
    return statistics.stdev(values) if len(values) > 1 else None


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/quickstart.yaml")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    parser.add_argument(
        "--precisions",
        nargs=2,
        default=["32", "bf16"],
        choices=sorted(PRECISIONS),
        help="the reference precision, then the one under test",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data-dir", default=None, help="dataset root or archive (default: the config's)")
    parser.add_argument("--output-dir", default="runs/precision_parity")
    parser.add_argument("--knn-limit", type=int, default=None, help="kNN on N train and N test images (quick checks)")
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1 :]  # config overrides for every run, e.g. --trainer.max_steps=200
    reference, candidate = args.precisions

    runs: dict[str, list[dict[str, float]]] = {reference: [], candidate: []}
    for seed in args.seeds:
        for precision in (reference, candidate):
            runs[precision].append(train_and_evaluate(args, precision, seed))
            print(f"{precision} seed {seed}: {runs[precision][-1]}", flush=True)

    figures: dict[str, object] = {"device": device_name(args.device), "config": args.config, "seeds": args.seeds}
    for precision, results in runs.items():
        top1 = [r["knn_top1"] for r in results]
        figures[f"knn_top1_{precision}"] = top1
        figures[f"knn_top1_{precision}_mean"] = statistics.fmean(top1)
        figures[f"knn_top1_{precision}_std"] = spread(top1)
        figures[f"pairs_per_s_{precision}"] = statistics.fmean(r["pairs_per_s"] for r in results)
    figures["speedup"] = figures[f"pairs_per_s_{candidate}"] / figures[f"pairs_per_s_{reference}"]
    difference = figures[f"knn_top1_{candidate}_mean"] - figures[f"knn_top1_{reference}_mean"]
    figures["knn_top1_difference"] = difference
    # one seed has no spread to compare with: no verdict then
    noise = None
    if len(args.seeds) > 1:
        noise = max(figures[f"knn_top1_{reference}_std"], figures[f"knn_top1_{candidate}_std"])
    figures["within_seed_spread"] = None if noise is None else abs(difference) <= noise
    print(
        f"{candidate} vs {reference} on {figures['device']}: {figures['speedup']:.2f}x the pairs/s, "
        f"kNN top-1 {difference:+.2f} points (seed spread {'n/a' if noise is None else f'{noise:.2f}'}, "
        f"{len(args.seeds)} seeds)"
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
