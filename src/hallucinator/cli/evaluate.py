"""``hallucinator knn | linear | metrics | plot | report``: evaluate checkpoints and compare runs.

``knn``, ``linear`` and ``metrics`` take a pre-training checkpoint; the dataset and data
directory default to the ones it was trained on. With ``--json`` the last output line is
one JSON object of the figures. When the checkpoint is ``RUN/checkpoints/*.ckpt`` the
figures are also merged into ``RUN/evaluation.json`` (``--no-save`` to skip), which
``hallucinator report`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads when a command runs, not for --help
    from torch import nn

    from hallucinator.evaluation.loading import EvaluationOptions

PRECISIONS = ("32", "bf16", "16")
EMBEDDINGS = ("umap", "tsne")  # hallucinator.evaluation.embedding_plot.EMBEDDINGS, not imported: --help loads no torch

PLOT_EPILOG = """\
examples:
  hallucinator plot runs/a runs/b --names plain hallucinator --out plots
  hallucinator plot runs/quickstart/checkpoints/last.ckpt --embedding umap --out umap.png
  hallucinator plot runs/quickstart --embedding tsne --limit 1000 --out tsne.png --threads 1
"""


class CommandError(Exception):
    """Bad input: printed as ``hallucinator COMMAND: message`` with exit status 2."""


def _add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the one the checkpoint was trained on)")
    parser.add_argument("--data-dir", help="where the dataset is (default: the checkpoint's data.data_dir)")
    parser.add_argument("--cache-dir", help="decoded-image cache (default: the data layer's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--precision", default="32", choices=PRECISIONS, help="autocast for the backbone (default 32)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default 512)")
    parser.add_argument("--train-limit", type=int, help="use a fixed random subset of N training images (quick checks)")
    parser.add_argument("--test-limit", type=int, help="use a fixed random subset of N test images (quick checks)")
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line of the figures")
    parser.add_argument("--no-save", action="store_true", help="do not record the figures in RUN/evaluation.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (on a CPU shared with other jobs, 1 can be several times faster)",
    )


def _map_size(text: str) -> int:
    size = int(text)
    if size < 3:
        raise argparse.ArgumentTypeError(f"a 2-D map needs at least 3 images, got {size}")
    return size


def add_embedding_arguments(parser: argparse.ArgumentParser, limit_flag: str, default: str | None) -> None:
    """``--embedding`` (the 2-D map) and the number of points it draws, for ``plot`` and ``embed --plot``."""
    parser.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default=default,
        help="the 2-D map: umap (pip install 'hallucinator[umap]') or tsne (scikit-learn's t-SNE, "
        "pip install 'hallucinator[tsne]')" + (f"; default {default}" if default else ""),
    )
    parser.add_argument(
        limit_flag,
        type=_map_size,
        default=2000,
        metavar="N",
        help="the map draws a fixed random, class-stratified N images (default 2000; t-SNE and UMAP slow down with N)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    knn = subparsers.add_parser(
        "knn",
        help="weighted kNN accuracy of a checkpoint (InstDisc protocol)",
        description="Weighted kNN top-1/top-5 of a checkpoint's frozen features: the "
        "training split is the bank, votes weighted by exp(cos / T).",
    )
    _add_checkpoint_arguments(knn)
    knn.add_argument("--k", type=int, default=200, help="neighbours (default 200)")
    knn.add_argument("--temperature", type=float, default=0.1, help="vote temperature T (default 0.1)")
    knn.set_defaults(func=_command("knn", run_knn))

    linear = subparsers.add_parser(
        "linear",
        help="linear classification on frozen features (paper protocol)",
        description="The paper's linear protocol: 100 epochs, SGD lr 10 (30 for ImageNet), "
        "momentum 0.9, wd 0, /10 at epochs 60 and 80, batch 512, RandomResizedCrop + flip. "
        "--fast trains on features pre-computed once without augmentation.",
    )
    _add_checkpoint_arguments(linear)
    linear.add_argument("--fast", action="store_true", help="pre-computed features, no augmentation (minutes on CPU)")
    linear.add_argument("--epochs", type=int, help="default 100 (milestones scale to 60 %% and 80 %%)")
    linear.add_argument("--lr", type=float, help="default 10, or 30 for ImageNet")
    linear.add_argument("--seed", type=int, default=0)
    linear.set_defaults(func=_command("linear", run_linear))

    metrics = subparsers.add_parser(
        "metrics",
        help="positive similarity, alignment, uniformity, G_2 of a checkpoint",
        description="Representation metrics on backbone features of held-out (test) "
        "images: mean cosine and alignment of two augmented views (the run's training "
        "augmentation), uniformity (log mean Gaussian potential, t=2) and the paper's G_2 "
        "(features reduced to 2-D by PCA, on the circle).",
    )
    _add_checkpoint_arguments(metrics)
    metrics.add_argument("--preset", help="augmentation preset for the positive pairs (default: the run's)")
    metrics.add_argument("--max-samples", type=int, default=5000, help="features used for uniformity (default 5000)")
    metrics.set_defaults(func=_command("metrics", run_metrics))

    plot = subparsers.add_parser(
        "plot",
        help="the paper's Fig. 4 / Fig. 5 and training curves for runs; --embedding: a checkpoint's embeddings in 2-D",
        description="Plots for run directories, PNG and SVG, into --out. With --embedding umap|tsne instead: the test "
        "split of one checkpoint's dataset, embedded by its backbone, mapped to 2-D and coloured by label "
        "(a legend of class names), into the figure --out names.",
        epilog=PLOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories written by `hallucinator pretrain` (--embedding: one checkpoint, or a run directory "
        "for its checkpoints/last.ckpt)",
    )
    plot.add_argument(
        "--out",
        default="plots",
        help="output directory (default: plots); --embedding: the figure, .png, .svg or .pdf (a directory gets "
        "embedding_METHOD.png)",
    )
    plot.add_argument("--names", nargs="+", help="legend labels, one per run (default: directory names)")
    plot.add_argument(
        "--distribution", action="store_true", help="also Fig. 5 (needs each run's checkpoint and the test images)"
    )
    plot.add_argument("--data-dir", help="for --distribution and --embedding (default: each run's data.data_dir)")
    plot.add_argument("--cache-dir")
    plot.add_argument("--device", default="auto")
    plot.add_argument("--classes", type=int, nargs="+", default=[1, 6], help="classes of Fig. 5's last row")
    add_embedding_arguments(plot, "--limit", default=None)
    plot.add_argument("--threads", type=int, help="CPU threads for torch and for the 2-D map (on a shared CPU: 1)")
    plot.add_argument("--no-progress", action="store_true", help="no progress bar while extracting features")
    plot.set_defaults(func=_command("plot", run_plot))

    report = subparsers.add_parser(
        "report",
        help="Markdown table of runs in the layout of the paper's Table 1",
        description="report.md (Table 1 layout, arms pooled over seeds, one row per run) "
        "and the Fig. 4 / training-curve plots, into --out.",
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default="report", help="output directory (default: report)")
    report.add_argument("--names", nargs="+", help="run labels (default: directory names)")
    report.add_argument(
        "--budget-curve",
        metavar="PNG",
        help="also draw kNN top-1 against epochs, one line per arm (runs that differ only in their length and "
        "seed), error bars over seeds, to PNG (and SVG beside it)",
    )
    report.set_defaults(func=_command("report", run_report))


def _command(name: str, run: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], int]:
    def main(args: argparse.Namespace) -> int:
        try:
            figures = run(args)
        except (CommandError, FileNotFoundError, ValueError) as error:
            print(f"hallucinator {name}: {error}", file=sys.stderr)
            return 2
        if getattr(args, "json", False):
            print(json.dumps(figures, sort_keys=True))
        return 0

    return main


# ---- checkpoint + data


def _options(args: argparse.Namespace) -> EvaluationOptions:
    """The evaluation options the common arguments (``_add_checkpoint_arguments``) select."""
    from hallucinator.evaluation.loading import EvaluationOptions

    return EvaluationOptions(
        args.checkpoint,
        dataset=args.dataset,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        save=not args.no_save,
        progress=not args.no_progress,
        threads=args.threads,
    )


def run_knn(args: argparse.Namespace) -> dict[str, Any]:
    from hallucinator.evaluation.features import extract_features
    from hallucinator.evaluation.knn import knn_classify
    from hallucinator.evaluation.loading import LoadedCheckpoint

    loaded = LoadedCheckpoint(_options(args))
    (train_images, train_labels), (test_images, test_labels) = loaded.splits["train"], loaded.splits["test"]
    print(
        f"kNN on {loaded.dataset}: {len(train_labels)} bank images, {len(test_labels)} test images, "
        f"k={args.k}, T={args.temperature}, device {loaded.device}",
        flush=True,
    )
    train = extract_features(loaded.backbone, train_images, transform=loaded.transform, **loaded.extract)
    test = extract_features(loaded.backbone, test_images, transform=loaded.transform, **loaded.extract)
    result = knn_classify(train, train_labels, test, test_labels, k=args.k, temperature=args.temperature)
    print(f"kNN top-1 {result.top1:.2f} %, top-5 {result.top5:.2f} %")
    figures = result.as_dict()
    loaded.save("knn", figures)
    return figures


def run_linear(args: argparse.Namespace) -> dict[str, Any]:
    from hallucinator.evaluation.features import extract_features
    from hallucinator.evaluation.linear import LinearConfig, linear_probe, linear_probe_features, train_transform
    from hallucinator.evaluation.loading import LoadedCheckpoint

    loaded = LoadedCheckpoint(_options(args))
    (train_images, train_labels), (test_images, test_labels) = loaded.splits["train"], loaded.splits["test"]
    config = LinearConfig.for_dataset(loaded.dataset, epochs=args.epochs, lr=args.lr, seed=args.seed)
    mode = "fast" if args.fast else "full"
    print(
        f"linear probe ({mode}) on {loaded.dataset}: {len(train_labels)} train / {len(test_labels)} test images, "
        f"{config.epochs} epochs, lr {config.lr:g}, milestones {list(config.milestones)}, device {loaded.device}",
        flush=True,
    )
    if args.fast:
        train = extract_features(loaded.backbone, train_images, transform=loaded.transform, **loaded.extract)
        test = extract_features(loaded.backbone, test_images, transform=loaded.transform, **loaded.extract)
        result = linear_probe_features(
            train, train_labels, test, test_labels, config, device=loaded.device, progress=not args.no_progress
        )
    else:
        result = linear_probe(
            loaded.backbone,
            train_images,
            train_labels,
            test_images,
            test_labels,
            config,
            train_transform=train_transform(loaded.dataset, loaded.image_size),
            test_transform=loaded.transform,
            device=loaded.device,
            precision=args.precision,
            progress=not args.no_progress,
        )
    print(
        f"linear top-1 {result.top1:.2f} % after the last epoch (best {result.best_top1:.2f} % at epoch "
        f"{result.best_epoch}), top-5 {result.top5:.2f} % ({mode}, {result.seconds:.0f} s)"
    )
    figures = {key: value for key, value in result.as_dict().items() if key not in ("train_loss", "test_top1")}
    figures.update(lr=config.lr, final_train_loss=result.train_loss[-1])
    loaded.save(f"linear_{mode}", figures)
    return figures


def run_metrics(args: argparse.Namespace) -> dict[str, Any]:
    from hallucinator.data import presets
    from hallucinator.engine.module import build_augmentation
    from hallucinator.evaluation.loading import LoadedCheckpoint
    from hallucinator.evaluation.metrics import representation_metrics

    loaded = LoadedCheckpoint(_options(args), splits=("test",))
    images, _ = loaded.splits["test"]
    two_views: nn.Module | None
    if args.preset or loaded.dataset != loaded.config.data.dataset:
        two_views = presets.build(args.preset or loaded.dataset, loaded.image_size)
    else:
        two_views = build_augmentation(loaded.config, global_only=True) or presets.build(
            loaded.dataset, loaded.image_size
        )
    two_views = two_views.to(loaded.device)
    print(f"representation metrics on {len(images)} {loaded.dataset} test images, device {loaded.device}", flush=True)
    figures = representation_metrics(
        loaded.backbone,
        images,
        two_views=two_views,
        transform=loaded.transform,
        max_samples=args.max_samples,
        **loaded.extract,
    )
    print(", ".join(f"{name} {value:.4f}" for name, value in figures.items()))
    loaded.save("metrics", figures)
    return figures


def _labels(run_dirs: list[str], names: list[str] | None) -> dict[str, str]:
    from hallucinator.evaluation.report import unique_names

    names = names or unique_names(run_dirs)
    if len(names) != len(run_dirs):
        raise CommandError(f"--names: {len(names)} names for {len(run_dirs)} runs")
    return dict(zip(names, run_dirs))


def run_plot(args: argparse.Namespace) -> dict[str, Any]:
    if args.embedding:
        return run_embedding_plot(args)
    from hallucinator.evaluation.plots import plot_feature_distribution, plot_positive_similarity, plot_training_curves

    runs = _labels(args.runs, args.names)
    out = Path(args.out)
    paths = plot_positive_similarity(runs, out / "positive_similarity") + plot_training_curves(
        runs, out / "training_curves"
    )
    if args.distribution:
        from hallucinator.evaluation.features import extract_features
        from hallucinator.evaluation.loading import EvaluationOptions, LoadedCheckpoint

        features, class_names = {}, None
        for label, run_dir in runs.items():
            checkpoint = Path(run_dir) / "checkpoints" / "last.ckpt"
            options = EvaluationOptions(
                str(checkpoint), data_dir=args.data_dir, cache_dir=args.cache_dir, device=args.device, save=False
            )
            loaded = LoadedCheckpoint(options, splits=("test",))
            class_names = loaded.classes
            images, labels = loaded.splits["test"]
            features[label] = (
                extract_features(loaded.backbone, images, transform=loaded.transform, **loaded.extract).cpu(),
                labels,
            )
        paths += plot_feature_distribution(
            features, out / "feature_distribution", classes=args.classes, class_names=class_names
        )
    for path in paths:
        print(path)
    return {"files": [str(p) for p in paths]}


def run_embedding_plot(args: argparse.Namespace) -> dict[str, Any]:
    """``plot CKPT --embedding METHOD``: the checkpoint's test split mapped to 2-D, coloured by label."""
    from hallucinator.evaluation.embedding_plot import check_embedding, check_figure_path, embedding_figure, save_figure
    from hallucinator.evaluation.features import extract_features
    from hallucinator.evaluation.loading import EvaluationOptions, LoadedCheckpoint

    if len(args.runs) != 1:
        raise CommandError(f"--embedding maps one checkpoint, got {len(args.runs)}: {' '.join(args.runs)}")
    out = Path(args.out)
    figure = check_figure_path(out if out.suffix else out / f"embedding_{args.embedding}.png")
    check_embedding(args.embedding)  # a missing package, before the work
    checkpoint = Path(args.runs[0])
    checkpoint = checkpoint / "checkpoints" / "last.ckpt" if checkpoint.is_dir() else checkpoint
    options = EvaluationOptions(
        str(checkpoint),
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        device=args.device,
        test_limit=args.limit,  # drawn before the features: no work for images the map leaves out
        save=False,
        progress=not args.no_progress,
        threads=args.threads,
    )
    loaded = LoadedCheckpoint(options, splits=("test",))
    images, labels = loaded.splits["test"]
    print(f"embedding {len(labels):,} {loaded.dataset} test images, device {loaded.device} ...", flush=True)
    features = extract_features(loaded.backbone, images, transform=loaded.transform, **loaded.extract).cpu()
    print(f"{args.embedding} of {len(labels):,} embeddings ({features.shape[1]}-d) ...", flush=True)
    model = loaded.config.model
    hallucinator = " + Hallucinator" if loaded.config.hallucinator.enabled else ""
    fig = embedding_figure(
        features,
        labels,
        loaded.classes,
        method=args.embedding,
        threads=args.threads,
        what=f"{loaded.dataset} test images\n({model.method}{hallucinator}, {model.backbone}, {checkpoint})",
    )
    path = save_figure(fig, figure)
    print(f"written: {path}")
    return {"figure": str(path), "images": len(labels), "embedding": args.embedding}


def run_report(args: argparse.Namespace) -> dict[str, Any]:
    from hallucinator.evaluation.report import write_report

    runs = _labels(args.runs, args.names)
    report = write_report(list(runs.values()), args.out, names=list(runs))
    print(report.read_text())
    print(f"written: {report}")
    figures: dict[str, Any] = {"report": str(report)}
    if args.budget_curve:
        from hallucinator.evaluation.report import budget_curve, load_run, write_budget_curve

        summaries = [load_run(run_dir, name) for name, run_dir in runs.items()]
        paths = write_budget_curve(summaries, args.budget_curve)
        print(f"written: {', '.join(map(str, paths))}")
        figures["budget_curve"] = {arm: points for arm, points in budget_curve(summaries).items()}
    return figures
