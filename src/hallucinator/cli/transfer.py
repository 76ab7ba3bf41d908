"""``hallucinator make-detection-set``: the small COCO + VOC detection set of CIFAR-10 objects on noise."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  hallucinator make-detection-set --data-dir ../shared/datasets/cifar10-jpeg.tar.gz --output data/cifar-det
  hallucinator make-detection-set --data-dir CIFAR --output DIR --train-images 200 --test-images 50 --seed 1

DIR then holds COCO's layout (annotations/instances_{train,val}.json, train/, val/) and VOC's
(VOC2007/{Annotations,ImageSets/Main/{trainval,test}.txt,JPEGImages}); read them with
hallucinator.transfer.CocoDetection(DIR, "train") and VOCDetection(DIR, classes=None).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-detection-set",
        help="make a small detection set (COCO and VOC layouts) of CIFAR-10 test objects on noise",
        description="Pastes 1 to 4 CIFAR-10 test images, scaled 1x to 3x, onto seeded noise canvases without "
        "overlap, and writes every canvas with its exact boxes in COCO's and in PASCAL VOC's layout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", required=True, help="CIFAR-10: the JPEG archive, or torchvision's cifar-10-batches-py folder"
    )
    parser.add_argument("--output", required=True, help="directory to write (new or empty)")
    parser.add_argument("--train-images", type=int, default=1000, help="training canvases (default 1000)")
    parser.add_argument("--test-images", type=int, default=250, help="test canvases (default 250)")
    parser.add_argument(
        "--canvas", type=int, nargs=2, default=(128, 128), metavar=("HEIGHT", "WIDTH"), help="default 128 128"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="where CIFAR-10's decode is kept (default: the data cache)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.transfer.detection_set import make_detection_set

    try:
        made = make_detection_set(
            args.data_dir,
            args.output,
            images_per_split={"train": args.train_images, "test": args.test_images},
            canvas=tuple(args.canvas),
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=print,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator make-detection-set: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(
        f"{made.images[split]} {split} canvases ({made.objects[split]} objects)" for split in made.images
    )
    print(f"wrote {counts} to {made.root}: COCO in annotations/, train/, val/; VOC in VOC2007/")
    return 0
