"""Can the augmentation leave a training step's critical path? Steps of the engine's pieces timed two ways.

- ``inline:T``: the engine's order today. Each step augments its batch, then runs the forward, backward and
  optimizer step; ``T`` torch intra-op threads.
- ``overlap:T+A``: a side thread augments step t + 1's batch while the main thread trains on step t's views;
  ``T`` intra-op threads on the main thread, ``A`` on the side thread.

The pieces are ``step_profile.py``'s: the quickstart's method, augmentation and optimizer (the engine's
builders), channels_last views, bf16 autocast with ``--precision bf16-mixed``, one batch of CIFAR-10 images
augmented anew each step. Every step's augmentation draws from a generator of its own, seeded from
``(seed, step)`` as the engine seeds it (``engine.module.step_seed``), on whichever thread runs it, and the
model's draws are seeded per step on the main thread; so both ways see the same views. The probe checks it:
``views_identical`` compares every step's views across the arms, and ``max_loss_difference`` the losses (equal
up to float rounding; the thread count may change the order of a reduction).

The arms run interleaved, each from the same freshly built model, for ``--rounds`` rounds. Printed: each arm's
median pairs/s with its min-max over the rounds and its ratio to the first arm, and for the first inline arm the
split of a step into augmentation and the rest (the overlap can save at most the smaller of the two).

    python benchmarks/augment_overlap.py --width 16 --precision bf16-mixed --batch-size 256
    python benchmarks/augment_overlap.py --arms inline:2 overlap:1+1 overlap:2+1 --rounds 5

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling module
import step_profile  # noqa: E402

from hallucinator.engine.module import seed_model_randomness, step_seed  # noqa: E402
from hallucinator.hallucinator import Hallucinator  # noqa: E402


def arm(text: str) -> tuple[str, int, int]:
    """``inline:T`` or ``overlap:T+A`` as (way, main threads, augmentation threads; 0 inline)."""
    way, _, threads = text.partition(":")
    main, _, side = threads.partition("+")
    if way == "inline" and main.isdigit() and not side and int(main) > 0:
        return way, int(main), 0
    if way == "overlap" and main.isdigit() and side.isdigit() and int(main) > 0 and int(side) > 0:
        return way, int(main), int(side)
    raise argparse.ArgumentTypeError(f"{text!r}: expected inline:T or overlap:T+A (thread counts, e.g. overlap:1+1)")


def run_arm(args: argparse.Namespace, way: str, threads: int, side_threads: int) -> dict:
    """``args.warmup`` untimed then ``args.steps`` timed steps one way; pairs/s, views' checksums and losses."""
    pieces = step_profile.engine_pieces(args)
    seed = pieces.config.seed
    shared = torch.Generator()  # the Hallucinator's one lam per batch, seeded per step as the engine does
    for module in pieces.method.modules():
        if isinstance(module, Hallucinator):
            module.batch_generator = shared
    images = step_profile.batch_images(args)
    bf16 = args.precision == "bf16-mixed"

    augment_threads: list[int] = []  # what the augmenting thread runs with, to report it

    def views_of(step: int) -> list[torch.Tensor]:
        augment_threads.append(torch.get_num_threads())
        generator = torch.Generator().manual_seed(step_seed(seed, step, 0))
        return step_profile.make_views(pieces, images, generator)

    def side_thread_setup() -> None:
        torch.get_num_threads()  # the thread's first use initialises its count from the process's; then ours
        torch.set_num_threads(side_threads)

    total = args.warmup + args.steps
    pool = ThreadPoolExecutor(1, initializer=side_thread_setup) if way == "overlap" else None
    if pool is not None:
        pool.submit(lambda: None).result()  # the side thread exists and has its threads before the main's are set
    torch.set_num_threads(threads)
    seen, losses, augment_s, started = [], [], 0.0, 0.0
    pending: Future | None = pool.submit(views_of, 0) if pool is not None else None
    for step in range(total):
        if step == args.warmup:
            started, augment_s = time.perf_counter(), 0.0
        if pending is not None and pool is not None:
            views = pending.result()
            pending = pool.submit(views_of, step + 1) if step + 1 < total else None
        else:
            begun = time.perf_counter()
            views = views_of(step)
            augment_s += time.perf_counter() - begun
        seed_model_randomness(seed, step, 0, shared)
        losses.append(step_profile.train_step(pieces, views, bf16))
        seen.append(views)  # summed after the timing
    seconds = time.perf_counter() - started
    if pool is not None:
        pool.shutdown()
    figures = {
        "pairs_per_s": args.steps * args.batch_size / seconds,
        "checksums": [[float(v.double().sum()) for v in views] for views in seen],
        "losses": losses,
        "augment_threads": max(augment_threads),
    }
    if way == "inline":
        figures.update(augment_ms=1000 * augment_s / args.steps, rest_ms=1000 * (seconds - augment_s) / args.steps)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_profile.add_step_arguments(parser, batch_size=256, crop_size=32)
    parser.add_argument(
        "--arms",
        nargs="+",
        type=arm,
        default=[arm(a) for a in ("inline:2", "inline:1", "overlap:1+1", "overlap:2+1")],
        help="inline:T or overlap:T+A; the first is the baseline of the ratios",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    names = [f"{way}:{t}" + (f"+{a}" if a else "") for way, t, a in args.arms]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name, (way, threads, side) in zip(names, args.arms):
            figures = run_arm(args, way, threads, side)
            results[name].append(figures)
            line = f"round {round_} {name}: {figures['pairs_per_s']:.1f} pairs/s"
            print(line + f" (augmenting with {figures['augment_threads']} threads)", flush=True)
    first = results[names[0]][0]
    # the same main-thread count gives the same losses to the bit; another may round a reduction differently
    by_threads: dict[int, list[float]] = {}
    for name, (_, threads, _) in zip(names, args.arms):
        by_threads.setdefault(threads, results[name][0]["losses"])
    summary: dict = {
        "views_identical": all(r["checksums"] == first["checksums"] for runs in results.values() for r in runs),
        "losses_identical_at_equal_threads": all(
            r["losses"] == by_threads[threads] for name, (_, threads, _) in zip(names, args.arms) for r in results[name]
        ),
        "max_loss_difference": max(
            abs(a - b) for runs in results.values() for r in runs for a, b in zip(r["losses"], first["losses"])
        ),
    }
    baseline = statistics.median(r["pairs_per_s"] for r in results[names[0]])
    for name, runs in results.items():
        rates = [r["pairs_per_s"] for r in runs]
        median = statistics.median(rates)
        summary[f"{name}_pairs_per_s"] = round(median, 1)
        summary[f"{name}_pairs_per_s_min"], summary[f"{name}_pairs_per_s_max"] = (
            round(min(rates), 1),
            round(max(rates), 1),
        )
        summary[f"{name}_ratio"] = round(median / baseline, 3)
        print(f"{name:14s} {median:8.1f} pairs/s ({min(rates):.1f}-{max(rates):.1f}), x{median / baseline:.3f}")
    inline = next((name for name in names if name.startswith("inline")), None)
    if inline is not None:
        for part in ("augment_ms", "rest_ms"):
            summary[f"{inline}_{part}"] = round(statistics.median(r[part] for r in results[inline]), 2)
        print(
            f"{inline}: augmentation {summary[f'{inline}_augment_ms']} ms, the rest {summary[f'{inline}_rest_ms']} ms"
        )
    summary.update(
        method=args.method, width=args.width, batch_size=args.batch_size, precision=args.precision, compile=args.compile
    )
    print(
        f"views identical across arms: {summary['views_identical']}; losses identical where the main thread count is:"
        f" {summary['losses_identical_at_equal_threads']} (max difference over all arms"
        f" {summary['max_loss_difference']:.2e})"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
