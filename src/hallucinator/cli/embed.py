"""``hallucinator embed CKPT --data-dir DIR --output embeddings.npz``: one embedding per image of a folder."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  hallucinator embed runs/photos/checkpoints/last.ckpt --data-dir ~/photos --output embeddings.npz
  hallucinator embed CKPT --data-dir ~/photos --output emb.parquet --head projector --device cuda

The .npz holds `paths` (relative to --data-dir) and `embeddings` (float32, one row per path);
.parquet (pip install 'hallucinator[parquet]') the columns `path` and `embedding`.
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.evaluation.embed import check_output, embed_folder, save_embeddings

    try:
        check_output(args.output)  # before the work, not after it
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
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator embed: {error}", file=sys.stderr)
        return 2
    if result.ignored_files:
        print(f"ignored {result.ignored_files} files that are not images (hidden files, other extensions)")
    if result.unreadable:
        print(f"skipped {len(result.unreadable)} unreadable images: {', '.join(result.unreadable)}")
    rows, dim = result.embeddings.shape
    print(f"wrote {rows} embeddings of {dim} dimensions ({args.head}, images at {result.image_size} px) to {path}")
    return 0
