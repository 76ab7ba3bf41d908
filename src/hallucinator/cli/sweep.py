"""``hallucinator sweep CONFIG --grid KEY=V1,V2 ... --seeds 0 1``: one pre-training run per grid point and seed.

    hallucinator sweep configs/quickstart.yaml --grid hallucinator.enabled=false,true --seeds 0 1 \\
        --output-dir runs/sweep

Each run is ``hallucinator pretrain CONFIG --output-dir OUTPUT_DIR/<arm>-s<seed> --seed S --KEY=V ...``
(any further ``--section.key=value`` or pretrain flag is passed to every run). Every combination
is validated before the first run starts. Runs go one after another, seed-major (every arm's seed 0
first, so a cut-short sweep still compares all arms), or ``--parallel N`` at once.

Resumable: ``OUTPUT_DIR/sweep.json`` records the runs that finished; rerunning the same command
skips them and continues an interrupted run from its last checkpoint (``--resume``). At the end
``OUTPUT_DIR/sweep.md`` holds the arms table of ``hallucinator report`` over every run finished in
the folder, also by earlier sweeps with other grids into it (mean ± sample std over seeds), and
``--json`` ends the output with it as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report is imported when the runs are done: it pulls in matplotlib
    from hallucinator.evaluation.report import RunSummary

STATUS_FILE = "sweep.json"
# evaluations a run may add after pre-training: name -> the evaluation command's arguments
EVALUATIONS = {"linear": ["linear", "--fast"], "metrics": ["metrics"]}


class SweepError(Exception):
    """Bad input: printed as ``hallucinator sweep: message`` with exit status 2."""


@dataclass(frozen=True)
class PlannedRun:
    """One pre-training run of the sweep: its directory name, seed and the grid's overrides."""

    name: str
    seed: int
    overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
    """``"a,[0,1],b"`` -> ``["a", "[0,1]", "b"]``: commas inside brackets or braces belong to a value."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if depth != 0 or not all(values):
        raise SweepError(f"--grid: cannot split {text!r} into values (an empty value or an unclosed bracket)")
    return values


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["hallucinator.enabled=false,true"]`` -> ``[("hallucinator.enabled", ["false", "true"])]``."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, equals, values = item.partition("=")
        key = key.strip().removeprefix("--")
        if not equals or not key:
            raise SweepError(f"--grid {item!r}: write KEY=V1,V2,... (e.g. --grid hallucinator.enabled=false,true)")
        if key in {k for k, _ in grid}:
            raise SweepError(f"--grid: {key} is given twice; list all its values in one --grid {key}=V1,V2")
        grid.append((key, split_values(values)))
    return grid


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", value).strip("_") or "_"


def plan(grid: list[tuple[str, list[str]]], seeds: list[int]) -> list[PlannedRun]:
    """Every grid point times every seed, seed-major; names use each key's last part unless that is ambiguous."""
    last_parts = [key.rsplit(".", 1)[-1] for key, _ in grid]
    short = [part if last_parts.count(part) == 1 else key for part, (key, _) in zip(last_parts, grid)]
    runs = []
    for seed in seeds:
        for values in itertools.product(*(values for _, values in grid)):
            arm = "-".join(f"{name}={_label(value)}" for name, value in zip(short, values)) or "run"
            overrides = tuple(f"--{key}={value}" for (key, _), value in zip(grid, values))
            runs.append(PlannedRun(f"{arm}-s{seed}", seed, overrides))
    return runs


def _read_status(output_dir: Path) -> dict[str, str]:
    path = output_dir / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


_STATUS_LOCK = threading.Lock()


def _record_done(output_dir: Path, status: dict[str, str], name: str) -> None:
    """Marks run ``name`` done in ``status`` and in ``OUTPUT_DIR/sweep.json``; safe from many threads at once.

    The lock serialises the runs that finish together under ``--parallel`` (one shared temporary name raced:
    the second ``replace`` found the first one's file gone); the temporary is also unique per write, so two
    sweeps into one folder cannot remove each other's. The replace is atomic: a sweep killed mid-write keeps
    the previous record.
    """
    path = output_dir / STATUS_FILE
    with _STATUS_LOCK:
        status[name] = "done"
        text = json.dumps(status, indent=2, sort_keys=True) + "\n"
        descriptor, tmp = tempfile.mkstemp(dir=output_dir, prefix=f".{STATUS_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _add_sweep_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="a config key and its values (YAML; commas inside [...] belong to a value); repeatable",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of every grid point (default: 0)")
    parser.add_argument("--output-dir", required=required, help="the sweep's folder: one run directory per run inside")
    parser.add_argument(
        "--parallel",
        type=int,
        help="runs at once (default 1); each gets cores/N CPU threads unless trainer.cpu_threads is set",
    )
    parser.add_argument(
        "--evaluate",
        nargs="+",
        choices=EVALUATIONS,
        help="after each run, also `hallucinator linear --fast` and/or `hallucinator metrics` on its "
        "checkpoint (their figures enter the table)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs' commands and exit")
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line of the arms")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="pre-train a config over a grid of overrides and seeds, then tabulate the arms",
        description="One `hallucinator pretrain` run per grid point and seed, resumable, then a table of the arms "
        "(mean ± sample std over seeds). Further pretrain flags and --section.key=value overrides go to every run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  hallucinator sweep configs/quickstart.yaml --grid hallucinator.enabled=false,true "
        "--seeds 0 1 --output-dir runs/sweep",
    )
    parser.add_argument("config", help="YAML config file (see configs/)")
    _add_sweep_flags(parser, required=False)
    parser.add_argument(
        "pretrain_args",
        nargs=argparse.REMAINDER,
        help="further pretrain flags and --section.key=value overrides, passed to every run",
    )
    parser.set_defaults(func=run)


def _split_arguments(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own flags (before or after CONFIG) and the arguments meant for every pretrain run."""
    late = argparse.ArgumentParser(prog="hallucinator sweep", add_help=False)
    _add_sweep_flags(late, required=args.output_dir is None)
    late_args, extra = late.parse_known_args(args.pretrain_args)
    merged = argparse.Namespace(config=args.config)
    for name, default in (("grid", None), ("seeds", [0]), ("output_dir", None), ("parallel", 1), ("evaluate", [])):
        early, later = getattr(args, name), getattr(late_args, name)
        value = (early or []) + (later or []) if name == "grid" else later if later is not None else early
        setattr(merged, name, default if value is None else value)
    merged.dry_run, merged.json = args.dry_run or late_args.dry_run, args.json or late_args.json
    return merged, [a for a in extra if a != "--"]


def _validate(config: str, runs: list[PlannedRun], extra: list[str]) -> None:
    """Resolves every run's config before anything trains, so a typo in the last grid value stops at once."""
    from hallucinator.cli import parse_arguments
    from hallucinator.cli.pretrain import config_overrides
    from hallucinator.cli.pretrain import register as register_pretrain
    from hallucinator.engine import ConfigError, load_config

    parser = argparse.ArgumentParser(add_help=False)
    register_pretrain(parser.add_subparsers())
    for planned in runs:
        args = parse_arguments(parser, ["pretrain", config, "--seed", str(planned.seed), *planned.overrides, *extra])
        try:
            load_config(args.config, config_overrides(args))
        except ConfigError as error:
            raise SweepError(f"{planned.name}: config error: {error}") from error


def _commands(
    config: str, output_dir: Path, planned: PlannedRun, extra: list[str], resume: bool, evaluations: list[str]
) -> list[list[str]]:
    """The run's pretrain command, then its evaluation commands (each records into the run's evaluation.json)."""
    run_dir = output_dir / planned.name
    pretrain = [
        "pretrain",
        config,
        "--output-dir",
        str(run_dir),
        "--seed",
        str(planned.seed),
        *planned.overrides,
        *extra,
    ]
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    evaluate = [[*EVALUATIONS[name], checkpoint, "--json", "--no-progress"] for name in evaluations]
    return [
        [sys.executable, "-m", "hallucinator", *arguments]
        for arguments in [pretrain + ["--resume"] if resume else pretrain, *evaluate]
    ]


def run(args: argparse.Namespace) -> int:
    try:
        return _sweep(args)
    except SweepError as error:
        print(f"hallucinator sweep: {error}", file=sys.stderr)
        return 2


def _sweep(args: argparse.Namespace) -> int:
    args, extra = _split_arguments(args)
    if args.parallel < 1:
        raise SweepError(f"--parallel must be >= 1, got {args.parallel}")
    if any(a.split("=")[0] in ("--output-dir", "--seed", "--resume") for a in extra):
        raise SweepError("--output-dir, --seed and --resume are the sweep's own: use --output-dir and --seeds of sweep")
    if args.parallel > 1 and not any(a.startswith("--trainer.cpu_threads") for a in extra):
        extra.append(f"--trainer.cpu_threads={max(1, (os.cpu_count() or 1) // args.parallel)}")
    runs = plan(parse_grid(args.grid), args.seeds)
    if len({r.name for r in runs}) != len(runs):
        raise SweepError("two grid points give the same run name; use values that differ in letters or digits")
    _validate(args.config, runs, extra)
    output_dir = Path(args.output_dir)
    status = _read_status(output_dir)
    todo = [r for r in runs if status.get(r.name) != "done"]
    resumable = {r.name for r in todo if (output_dir / r.name / "checkpoints" / "last.ckpt").is_file()}
    commands = {r.name: _commands(args.config, output_dir, r, extra, r.name in resumable, args.evaluate) for r in todo}
    print(
        f"sweep: {len(runs)} run{'s' if len(runs) != 1 else ''} ({len(runs) - len(todo)} finished, {len(resumable)} to resume, "
        f"{len(todo) - len(resumable)} to start) in {output_dir}",
        flush=True,
    )
    if args.dry_run:
        for run_commands in commands.values():
            print(" && ".join(shlex.join(["hallucinator", *command[3:]]) for command in run_commands))
        return 0
    output_dir.mkdir(parents=True, exist_ok=True)
    failed = _run_all(todo, commands, output_dir, status, args.parallel, resumable)
    # every run finished in the folder, by this sweep or an earlier one into it (a study grows by sweeps)
    finished = sorted(output_dir / name for name, state in status.items() if state == "done")
    _summarise([run for run in finished if run.is_dir()], output_dir, args.json)
    if failed:
        print(
            f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}; their logs are in their run directories; "
            "rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_all(
    todo: list[PlannedRun],
    commands: dict[str, list[list[str]]],
    output_dir: Path,
    status: dict[str, str],
    parallel: int,
    resumable: set[str],
) -> list[str]:
    """Runs the commands, recording each finished run at once; returns the names of the runs that failed."""
    failed: list[str] = []

    def say(line: str) -> None:  # one write per line: print's separate newline interleaves across threads
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def one(index: int, planned: PlannedRun) -> None:
        run_dir = output_dir / planned.name
        run_dir.mkdir(parents=True, exist_ok=True)
        say(f"[{index}/{len(todo)}] {planned.name}: {'resumed' if planned.name in resumable else 'started'}")
        started = time.perf_counter()
        code = 0
        for command in commands[planned.name]:
            if parallel == 1:  # live progress on the console
                code = subprocess.run(command).returncode
            else:  # several at once: one log per run (interleaved output is unreadable)
                with (run_dir / "sweep.log").open("a") as log:
                    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                break
        minutes = (time.perf_counter() - started) / 60
        if code == 0:
            _record_done(output_dir, status, planned.name)
        else:
            failed.append(planned.name)
        say(
            f"[{index}/{len(todo)}] {planned.name}: {'done' if code == 0 else f'failed (exit {code})'} "
            f"after {minutes:.1f} min"
        )

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(one, i, planned) for i, planned in enumerate(todo, start=1)]:
            future.result()
    return failed


def by_grid_point(arms: dict[str, list[RunSummary]]) -> dict[str, list[RunSummary]]:
    """The arms named by their grid point as ``--grid`` wrote it (the run directory less :func:`plan`'s ``-s<seed>``).

    Kept as :func:`group_arms` named them (by the config keys that differ) when that is ambiguous: two grid
    points of one config pooled into one arm, or one grid point split over two (a config edited between sweeps).
    """
    points = [{run.name.removesuffix(f"-s{run.seed}") for run in members} for members in arms.values()]
    names = [next(iter(point)) for point in points if len(point) == 1]
    if len(names) != len(arms) or len(set(names)) != len(names):
        return arms
    return dict(zip(names, arms.values()))


def _summarise(finished: list[Path], output_dir: Path, as_json: bool) -> None:
    """``OUTPUT_DIR/sweep.md``: the arms table over the finished runs, printed too."""
    from hallucinator.evaluation.report import COLUMNS, arms_table, group_arms, load_run

    runs = [load_run(run_dir) for run_dir in finished]
    arms = by_grid_point(group_arms(runs))
    table = arms_table(arms) if runs else "no finished runs yet"
    (output_dir / "sweep.md").write_text(f"# Sweep {output_dir.name}\n\n{table}\n")
    print(table)
    if as_json:
        rows = [
            {
                "arm": name,
                "seeds": [r.seed for r in members],
                **{attr: [getattr(r, attr) for r in members] for _, attr in COLUMNS},
            }
            for name, members in arms.items()
        ]
        print(json.dumps({"arms": rows}))
