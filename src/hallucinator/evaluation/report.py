"""A Markdown comparison of pre-training runs in the layout of the paper's Table 1, plus the figures.

Each run directory (written by ``hallucinator pretrain``) supplies ``config.yaml`` (method,
dataset, Hallucinator on/off and warm-up, epochs, seed), ``csv/version_N/metrics.csv`` (the last
logged ``knn_top1`` and ``train/pos_similarity``) and, when the evaluation commands were
run on its checkpoint, ``evaluation.json`` (kNN, linear and representation metrics; these
take precedence over the training-time figures).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hallucinator.evaluation.plots import (
    metric_series,
    metrics_files,
    plot_budget_curve,
    plot_positive_similarity,
    plot_training_curves,
    read_metrics,
)

EVALUATION_FILE = "evaluation.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass
class RunSummary:
    """The figures of one run that the tables show (``None``: not measured)."""

    name: str
    method: str
    dataset: str
    hallucinator: bool
    warmup: str
    epochs: float | None
    seed: int | None
    knn_top1: float | None = None
    linear_top1: float | None = None
    """After the last epoch of the linear protocol (this project's figure)."""
    linear_best_top1: float | None = None
    """At the best test epoch (the figure the authors' code reports)."""
    linear_mode: str | None = None
    online_linear_top1: float | None = None
    pos_similarity: float | None = None
    """Held-out positive-pair cosine of backbone features (``hallucinator metrics``), else the last training value."""
    train_pos_similarity: float | None = None
    """cos(q, k) of the training pair, mean of the last :data:`HARDNESS_STEPS` logged steps: the hardness
    figures below are in the same (the method's embedding) space, so compare them with this, not ``pos_similarity``."""
    hal_similarity: float | None = None
    """cos(q_hat, k) of the hallucinated pair, likewise."""
    extrap_similarity: float | None = None
    """cos(q', k) of the extrapolated pair, likewise: ``hal < extrap`` means H made the positive harder."""
    alignment: float | None = None
    uniformity: float | None = None
    g2: float | None = None
    wall_seconds: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    """The resolved config as dotted keys, less the seed and the keys in :data:`NOT_RECIPE`."""

    @property
    def arm(self) -> tuple:
        """Runs share an arm only when their resolved configs differ in the seed alone.

        A key set to ``None`` counts as absent, as :func:`group_arms` names arms: a run older than a key whose
        default is ``None`` (its config.yaml lacks it) joins its arm instead of becoming an arm of the same name.
        """
        return tuple(sorted((key, repr(value)) for key, value in self.recipe.items() if value is not None))


# Keys that say where and how visibly a run ran, not what it trained: runs differing only in these
# (and the seed) are one arm. Everything else in the resolved config, precision included, splits arms.
# Threads, compilation and the optimizer's implementation change float rounding only, so a run older than
# a key (its config.yaml lacks it) still joins its arm.
NOT_RECIPE = frozenset(
    {
        "seed",
        "output_dir",
        "data.cache_dir",
        "data.download",
        "data.num_workers",
        "trainer.progress_bar",
        "trainer.loggers",
        "trainer.experiment",
        "trainer.mlflow_tracking_uri",
        "trainer.log_every_n_steps",
        "trainer.checkpoint_every_n_epochs",
        "trainer.last_every_n_steps",
        "trainer.knn_every_n_epochs",
        "trainer.cpu_threads",
        "trainer.compile",
        "trainer.compile_scope",
        "optimizer.implementation",
    }
)


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as ``{dotted.key: value}``, less :data:`NOT_RECIPE`.

    ``data.data_dir`` is reduced to its last path component, so the same archive reached by
    different paths is one dataset, while a subset archive (``cifar10-5k.tar.gz``) is another.
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", config)
    if flat.get("data.data_dir"):
        flat["data.data_dir"] = Path(str(flat["data.data_dir"])).name
    return {key: value for key, value in flat.items() if key not in NOT_RECIPE}


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory of ``RUN/checkpoints/*.ckpt``, or ``None`` for a checkpoint elsewhere."""
    checkpoint = Path(checkpoint).resolve()
    run = checkpoint.parent.parent
    return run if checkpoint.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def load_evaluation(run_dir: str | Path) -> dict:
    """``RUN_DIR/evaluation.json`` (the figures recorded by ``pretrain``, ``knn``, ``linear``, ``metrics``), or ``{}``."""
    path = Path(run_dir) / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_evaluation(run_dir: str | Path, key: str, figures: dict) -> Path:
    """Merges ``{key: figures}`` into ``RUN_DIR/evaluation.json`` (what :func:`load_run` reads)."""
    path = Path(run_dir) / EVALUATION_FILE
    data = load_evaluation(run_dir)
    data[key] = figures
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


# hardness is read as a mean over the end of the run: one step's cosine is noisy
HARDNESS_STEPS = 20


def _tail_mean(metrics: dict[str, np.ndarray], name: str, count: int = HARDNESS_STEPS) -> float | None:
    _, values = metric_series(metrics, name)
    return float(values[-count:].mean()) if len(values) else None


def _last(metrics: dict[str, np.ndarray], name: str) -> float | None:
    _, values = metric_series(metrics, name)
    return float(values[-1]) if len(values) else None


def _wall_seconds(run_dir: Path, evaluation: dict) -> float | None:
    """Training wall time: ``evaluation.json``'s ``train.seconds`` if recorded, else config.yaml -> last.ckpt mtimes.

    The fallback spans the last (re)start of the run: ``pretrain`` writes ``config.yaml``
    just before training and ``last.ckpt`` last.
    """
    if "train" in evaluation and "seconds" in evaluation["train"]:
        return float(evaluation["train"]["seconds"])
    config, checkpoint = run_dir / "config.yaml", run_dir / CHECKPOINT
    if config.is_file() and checkpoint.is_file():
        return max(0.0, checkpoint.stat().st_mtime - config.stat().st_mtime)
    return None


def _epochs(evaluation: dict, metrics: dict) -> float | None:
    """Epochs trained: exact from pretrain's record, else the epochs the CSV log has entered."""
    if "epochs" in evaluation.get("train", {}):
        return float(evaluation["train"]["epochs"])
    completed = metrics.get("epoch")
    return float(np.nanmax(completed)) + 1 if completed is not None and len(completed) else None


def load_run(run_dir: str | Path, name: str | None = None) -> RunSummary:
    """The :class:`RunSummary` of one run directory."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a run directory (no config.yaml); pass directories written by pretrain"
        )
    config = yaml.safe_load(config_path.read_text())
    evaluation = load_evaluation(run_dir)
    try:
        metrics = read_metrics(run_dir)
    except FileNotFoundError:
        metrics = {}
    hall = config.get("hallucinator", {})
    warmup = (
        f"{hall['warmup_epochs']:g} ep"
        if hall.get("warmup_epochs")
        else f"{hall['warmup_fraction']:.0%}"
        if hall.get("warmup_fraction")
        else "-"
    )
    linear = evaluation.get("linear_full") or evaluation.get("linear_fast") or {}
    representation = evaluation.get("metrics", {})
    return RunSummary(
        name=name or run_dir.name,
        method=config["model"]["method"],
        dataset=config["data"]["dataset"],
        hallucinator=bool(hall.get("enabled", False)),
        warmup=warmup if hall.get("enabled") else "-",
        epochs=_epochs(evaluation, metrics),
        seed=config.get("seed"),
        knn_top1=evaluation.get("knn", {}).get("top1", _last(metrics, "knn_top1")),
        linear_top1=linear.get("top1"),
        linear_best_top1=linear.get("best_top1"),
        linear_mode=linear.get("mode"),
        online_linear_top1=evaluation.get("online_linear", {}).get("top1"),
        pos_similarity=representation.get("pos_similarity", _last(metrics, "pos_similarity")),
        train_pos_similarity=_tail_mean(metrics, "pos_similarity"),
        hal_similarity=_tail_mean(metrics, "hal_similarity"),
        extrap_similarity=_tail_mean(metrics, "extrap_similarity"),
        alignment=representation.get("alignment"),
        uniformity=representation.get("uniformity", _last(metrics, "uniformity")),
        g2=representation.get("g2", _last(metrics, "g2")),
        wall_seconds=_wall_seconds(run_dir, evaluation),
        recipe=recipe_of(config),
    )


# ---- formatting

COLUMNS = (
    ("method", "method"),
    ("dataset", "dataset"),
    ("Hallucinator", "hallucinator"),
    ("warm-up", "warmup"),
    ("epochs", "epochs"),
    ("kNN top-1", "knn_top1"),
    ("linear top-1", "linear_top1"),
    ("linear best top-1", "linear_best_top1"),
    ("online linear top-1", "online_linear_top1"),
    ("pos. sim.", "pos_similarity"),
    ("train cos(q, k)", "train_pos_similarity"),
    ("train cos(q', k)", "extrap_similarity"),
    ("train cos(q_hat, k)", "hal_similarity"),
    ("alignment", "alignment"),
    ("uniformity", "uniformity"),
    ("G_2", "g2"),
    ("wall time", "wall_seconds"),
)
DIGITS = {
    "knn_top1": 2,
    "linear_top1": 2,
    "linear_best_top1": 2,
    "online_linear_top1": 2,
    "pos_similarity": 3,
    "hal_similarity": 3,
    "train_pos_similarity": 3,
    "extrap_similarity": 3,
    "alignment": 3,
    "uniformity": 3,
    "g2": 4,
}


def _cell(attribute: str, values: list) -> str:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "-"
    if attribute == "hallucinator":
        return "✓" if present[0] else "✗"
    if attribute == "epochs":
        return f"{statistics.fmean(present):.3g}"
    if attribute == "wall_seconds":
        return f"{statistics.fmean(present) / 60:.1f} min"
    if attribute not in DIGITS:
        return str(present[0])
    mean = statistics.fmean(present)
    spread = f" ± {statistics.stdev(present):.{DIGITS[attribute]}f}" if len(present) > 1 else ""
    return f"{mean:.{DIGITS[attribute]}f}{spread}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def runs_table(runs: Sequence[RunSummary]) -> str:
    """One row per run."""
    rows = [[run.name, *(_cell(attr, [getattr(run, attr)]) for _, attr in COLUMNS)] for run in runs]
    return _markdown(["run", *(title for title, _ in COLUMNS)], rows)


def group_arms(runs: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs grouped into arms (same resolved config but the seed), each named by the keys that tell arms apart.

    With a single arm its name is ``-``. Example: ``{"hallucinator.enabled=False": [...],
    "hallucinator.enabled=True": [...]}``.
    """
    arms: dict[tuple, list[RunSummary]] = defaultdict(list)
    for run in runs:
        arms[run.arm].append(run)
    recipes = [members[0].recipe for members in arms.values()]
    keys = sorted({key for recipe in recipes for key in recipe})
    differing = [key for key in keys if len({repr(recipe.get(key)) for recipe in recipes}) > 1]
    names = [_arm_name(recipe, differing, drop_idle=True) for recipe in recipes]
    if len(set(names)) < len(names):  # two arms differ only in an off Hallucinator's settings: name them in full
        names = [_arm_name(recipe, differing, drop_idle=False) for recipe in recipes]
    return dict(zip(names, arms.values()))


def _arm_name(recipe: Mapping[str, Any], keys: Sequence[str], drop_idle: bool) -> str:
    """``key=value`` of ``keys``; with ``drop_idle``, an off Hallucinator's other settings are left out, as they
    change nothing it trained (the plain arm of a sweep over warm-ups is ``hallucinator.enabled=False``)."""
    idle = drop_idle and recipe.get("hallucinator.enabled") is False
    shown = [key for key in keys if not (idle and key.startswith("hallucinator.") and key != "hallucinator.enabled")]
    return ", ".join(f"{key}={_value(recipe.get(key))}" for key in shown) or "-"


def _value(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _seeds(members: Sequence[RunSummary]) -> str:
    """The arm's seeds; a seed that occurs twice is flagged (two runs of one seed are no spread)."""
    seeds = [run.seed for run in members]
    text = ", ".join("-" if seed is None else str(seed) for seed in seeds)
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1}, key=str)
    return text + (f" ⚠ seed {', '.join(map(str, repeated))} repeated" if repeated else "")


def arms_table(arms: Mapping[str, Sequence[RunSummary]]) -> str:
    """The arms of :func:`group_arms` (runs that differ only in seed), each a row of mean ± sample std, with the seeds."""
    rows = [
        [name, *(_cell(attr, [getattr(r, attr) for r in members]) for _, attr in COLUMNS), _seeds(members)]
        for name, members in arms.items()
    ]
    return _markdown(["arm", *(title for title, _ in COLUMNS), "seeds"], rows)


def paper_table(runs: Sequence[RunSummary], metric: str = "linear_top1") -> str:
    """The paper's Table 1 layout: methods as rows, each dataset as a ✗ / ✓ pair of columns (runs without warm-up).

    A cell pools seeds of one arm only; a cell whose runs come from several arms (say bf16 and fp32)
    shows each arm's figure, separated by ``/``, in the order of the arms table.
    """
    cells: dict[tuple[str, str, bool], dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.warmup == "-" and getattr(run, metric) is not None:
            cells[run.method, run.dataset, run.hallucinator][run.arm].append(getattr(run, metric))
    datasets = sorted({d for _, d, _ in cells})
    methods = sorted({m for m, _, _ in cells})
    header = ["Dataset", *(f"{d} {mark}" for d in datasets for mark in ("✗", "✓"))]

    def cell(key: tuple[str, str, bool]) -> str:
        arms = cells.get(key, {})
        return " / ".join(_cell(metric, values) for values in arms.values()) if arms else "-"

    rows = [[m, *(cell((m, d, h)) for d in datasets for h in (False, True))] for m in methods]
    return _markdown(header, rows)


BUDGET_KEYS = ("trainer.max_steps", "trainer.max_epochs")
"""The keys that set a run's length: a budget curve's arm is the recipe less these."""


def budget_curve(
    runs: Sequence[RunSummary], metric: str = "knn_top1"
) -> dict[str, list[tuple[float, float, float | None]]]:
    """Arm -> ``(epochs, mean, sample std or None)`` of ``metric`` over seeds, at each budget the arm was run at.

    An arm is the recipe less :data:`BUDGET_KEYS` (runs of one arm at 4 and 16 epochs are one line), named
    by the keys that tell the arms apart; runs without the figure or the epochs are left out.
    """
    lengthless = [
        replace(run, recipe={k: v for k, v in run.recipe.items() if k not in BUDGET_KEYS})
        for run in runs
        if getattr(run, metric) is not None and run.epochs is not None
    ]
    curves: dict[str, list[tuple[float, float, float | None]]] = {}
    for name, members in group_arms(lengthless).items():
        by_budget: dict[float, list[float]] = defaultdict(list)
        for run in members:
            assert run.epochs is not None
            by_budget[round(run.epochs, 1)].append(getattr(run, metric))
        curves[name] = [
            (epochs, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
            for epochs, values in sorted(by_budget.items())
        ]
    return curves


def budget_table(curves: Mapping[str, Sequence[tuple[float, float, float | None]]], digits: int = 2) -> str:
    """The curve as Markdown: one row per arm, one column per budget (mean ± std, n/a where not run)."""
    budgets = sorted({point[0] for points in curves.values() for point in points})
    rows = []
    for arm, points in curves.items():
        at = {epochs: (mean, std) for epochs, mean, std in points}
        cells = [
            "-" if b not in at else f"{at[b][0]:.{digits}f}" + ("" if at[b][1] is None else f" ± {at[b][1]:.{digits}f}")
            for b in budgets
        ]
        rows.append([arm, *cells])
    return _markdown(["arm", *(f"{b:g} epochs" for b in budgets)], rows)


def write_budget_curve(runs: Sequence[RunSummary], path: str | Path, metric: str = "knn_top1") -> list[Path]:
    """:func:`budget_curve` of the runs drawn to ``path`` (PNG and SVG)."""
    title = {attr: title for title, attr in COLUMNS}.get(metric, metric)
    return plot_budget_curve(budget_curve(runs, metric), path, ylabel=f"{title} (%)")


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, names: Sequence[str] | None = None) -> Path:
    """``OUT/report.md`` with the three tables, and the Fig. 4 and training-curve plots beside it."""
    out_dir = Path(out_dir)
    names = list(names) if names else unique_names(run_dirs)
    runs = [load_run(run_dir, name) for run_dir, name in zip(run_dirs, names)]
    labelled = dict(zip(names, run_dirs))
    plots = []
    with_metrics = {name: d for name, d in labelled.items() if metrics_files(d)}
    if with_metrics:
        plots += plot_positive_similarity(with_metrics, out_dir / "positive_similarity")
        plots += plot_training_curves(with_metrics, out_dir / "training_curves")
    modes = sorted({run.linear_mode for run in runs if run.linear_mode})
    sections = [
        "# Run comparison",
        (f"Linear top-1 from the {' / '.join(modes)} linear protocol" if modes else "No linear figures yet")
        + "; kNN: weighted kNN, k=200, T=0.1; "
        "pos. sim., alignment, uniformity and G_2 on backbone features of held-out images "
        "(training-time values where `hallucinator metrics` was not run). "
        "The Table 1 layouts hold the paper's arms, runs without the loss-weight warm-up; "
        "every arm is in the tables below them.",
        "## Table 1 layout (linear top-1, %)",
        paper_table(runs),
        "## Table 1 layout (kNN top-1, %)",
        paper_table(runs, "knn_top1"),
        "## Arms (mean ± std over seeds; runs are one arm only when their configs differ in the seed alone)",
        arms_table(group_arms(runs)),
        "## Runs",
        runs_table(runs),
    ]
    if len({run.epochs for run in runs if run.epochs is not None}) > 1:
        sections += ["## Budget curve (kNN top-1, %, mean ± std over seeds)", budget_table(budget_curve(runs))]
    sections += ["## Figures", *(f"![{p.stem}]({p.name})" for p in plots if p.suffix == ".png")]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    return report


def unique_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """The runs' labels in tables and plots: the shortest trailing paths that tell them apart.

    ``runs/a/arm-s0`` and ``runs/b/arm-s0`` -> ``a/arm-s0``, ``b/arm-s0`` (folder names alone where they differ).
    """
    parts = [Path(d).resolve().parts for d in run_dirs]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(Path(d)) for d in run_dirs]  # the same folder twice: nothing tells them apart
