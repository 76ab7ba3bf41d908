"""``hallucinator embed CKPT --data-dir DIR --output embeddings.npz``: one embedding per image of a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hallucinator.cli.evaluate import add_embedding_arguments

EPILOG = """\
examples:
  hallucinator embed runs/photos/checkpoints/last.ckpt --data-dir ~/photos --output embeddings.npz
  hallucinator embed CKPT --data-dir ~/photos --output emb.parquet --head projector --device cuda
  hallucinator embed CKPT --data-dir ~/photos --output emb.npz --plot photos.png   (t-SNE; --embedding umap)

The .npz holds `paths` (relative to --data-dir) and `embeddings` (float32, one row per path);
.parquet (pip install 'hallucinator[parquet]') the columns `path` and `embedding`. --plot draws them
mapped to 2-D, one colour per first-level folder when the images are in at least two
(photos/cats/*.jpg, photos/dogs/*.jpg), else one colour.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed every image of a folder with a checkpoint's backbone (or projector)",
        description="Decodes every image under --data-dir at the run's data.image_size, normalises it as the run's "
        "kNN evaluation does, and writes one embedding per image with its relative path.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument("--data-dir", required=True, help="folder of images (any depth, any sizes)")
    parser.add_argument("--output", required=True, help="file to write: .npz, or .parquet with pyarrow")
    parser.add_argument(
        "--head",
        choices=("backbone", "projector"),
        default="backbone",
        help="backbone features (default) or projector output",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--num-workers", type=int, help="decoding processes (default: one per core, at most 4)")
    parser.add_argument("--skip-unreadable", action="store_true", help="embed the readable images, list the others")
    parser.add_argument("--cache-dir", help="where the probe of which files decode is kept (default: the data cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--plot", metavar="FIG", help="also draw the embeddings in 2-D: a .png, .svg or .pdf")
    add_embedding_arguments(parser, "--plot-limit", default="tsne")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and for the 2-D map (on a shared CPU: 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.evaluation.embed import check_output, embed_folder, save_embeddings

    try:
        check_output(args.output)  # before the work, not after it
        if args.plot:
            _check_plot(args)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = embed_folder(
            args.checkpoint,
            args.data_dir,
            head=args.head,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.num_workers,
            skip_unreadable=args.skip_unreadable,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
        path = save_embeddings(args.output, result.names, result.embeddings)
        figure = _plot(args, result) if args.plot else None
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator embed: {error}", file=sys.stderr)
        return 2
    if result.ignored_files:
        print(f"ignored {result.ignored_files} files that are not images (hidden files, other extensions)")
    if result.unreadable:
        print(f"skipped {len(result.unreadable)} unreadable images: {', '.join(result.unreadable)}")
    rows, dim = result.embeddings.shape
    print(f"wrote {rows} embeddings of {dim} dimensions ({args.head}, images at {result.image_size} px) to {path}")
    if figure is not None:
        print(f"written: {figure}")
    return 0


def _check_plot(args: argparse.Namespace) -> None:
    """``--plot``'s file and method (its package installed), before the work."""
    from hallucinator.evaluation.embedding_plot import check_embedding, check_figure_path

    check_figure_path(args.plot)
    check_embedding(args.embedding)


def _plot(args: argparse.Namespace, result: Any) -> Path:
    """The folder's embeddings mapped to 2-D (a stratified ``--plot-limit`` of them), written to ``--plot``."""
    import torch

    from hallucinator.evaluation.embedding_plot import embedding_figure, save_figure

    count = min(args.plot_limit, len(result.names))
    print(f"{args.embedding} of {count:,} of the {len(result.names):,} embeddings ...", flush=True)
    fig = embedding_figure(
        torch.from_numpy(result.embeddings),
        torch.from_numpy(result.labels),
        result.classes,
        method=args.embedding,
        limit=args.plot_limit,
        threads=args.threads,
        what=f"images of {args.data_dir} ({args.head})",
    )
    return save_figure(fig, args.plot)
