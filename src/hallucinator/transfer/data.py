"""The fine-tuning data: the splits a config names, found in its folder, and batches as the detector trains on them.

As detectron2 does, crowd objects are left out of the training targets and images without objects out of the
training set. A training image is flipped horizontally with its boxes and masks (detectron2's ``RandomFlip``;
:class:`~hallucinator.transfer.module.TransferModule` draws which ones); its shorter side, drawn from
``data.train_sizes`` (detectron2's ``ResizeShortestEdge`` "choice"), is set by the detector's own transform.

Example:
    >>> config = resolved_data(load_transfer_config(None, ["--model.checkpoint=x", "--data.data_dir=VOCdevkit"]))
    >>> train_set, test_set = build_datasets(config)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

from torch import Tensor
from torchvision.transforms.v2 import functional as TF
from torchvision.tv_tensors import BoundingBoxFormat

from hallucinator.transfer.config import TransferConfig
from hallucinator.transfer.datasets import (
    VOC_CLASSES,
    CocoDetection,
    DetectionDataset,
    InvalidBoxes,
    Target,
    VOCDetection,
)

__all__ = ["COCO_SPLITS", "DetectionBatches", "build_datasets", "hflip", "resolved_data", "training_target"]

# (training, test) split names: COCO's, then the ones `hallucinator make-detection-set` writes
COCO_SPLITS = (("train2017", "val2017"), ("train", "val"))


def resolved_data(config: TransferConfig) -> TransferConfig:
    """A copy with what ``None`` chose (splits, VOC years) written out, read from ``data.data_dir``'s layout.

    A missing folder or the other format's layout is a one-line error naming the flag that fixes it.
    """
    d = config.data
    root = Path(d.data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.data_dir: {root} is not a directory (--data-dir)")
    coco_files = sorted(path.name for path in (root / "annotations").glob("instances_*.json"))
    has_voc = (root / "VOC2007").is_dir()
    if d.format == "coco":
        if not coco_files and has_voc:
            raise ValueError(
                f"{root} has VOC's layout (VOC2007/), not COCO's (annotations/instances_*.json): --format voc"
            )
        # COCO's names, unless only the small set's are there (a missing file is then named as COCO names it)
        train, test = next((pair for pair in COCO_SPLITS if f"instances_{pair[0]}.json" in coco_files), COCO_SPLITS[0])
        return replace(config, data=replace(d, train_split=d.train_split or train, test_split=d.test_split or test))
    if not has_voc and coco_files:
        raise ValueError(f"{root} has COCO's layout (annotations/{coco_files[0]}), not VOC's (VOC2007/): --format coco")
    train_split = d.train_split or "trainval"
    years = d.voc_years
    if years is None:
        years = (
            ["2007", "2012"] if (root / "VOC2012" / "ImageSets" / "Main" / f"{train_split}.txt").is_file() else ["2007"]
        )
    return replace(config, data=replace(d, train_split=train_split, test_split=d.test_split or "test", voc_years=years))


def build_datasets(config: TransferConfig) -> tuple[DetectionDataset, DetectionDataset]:
    """The training split (without images that have no objects) and the test split of a resolved config."""
    d = config.data
    masks = config.model.task == "instance-segmentation"
    invalid_boxes = cast(InvalidBoxes, d.invalid_boxes)  # checked by validate
    assert d.train_split and d.test_split  # written out by resolved_data
    if d.format == "coco":
        train: DetectionDataset = CocoDetection(
            d.data_dir, d.train_split, masks, skip_empty=True, invalid_boxes=invalid_boxes
        )
        test: DetectionDataset = CocoDetection(d.data_dir, d.test_split, invalid_boxes=invalid_boxes)
        return train, test
    classes = d.classes or VOC_CLASSES
    try:
        train = VOCDetection(
            d.data_dir,
            d.voc_years or ["2007"],
            d.train_split,
            classes=classes,
            skip_empty=True,
            invalid_boxes=invalid_boxes,
        )
        test = VOCDetection(d.data_dir, ("2007",), d.test_split, classes=classes, invalid_boxes=invalid_boxes)
    except ValueError as error:
        if "unknown class" in str(error):  # name the config key, not the reader's argument
            raise ValueError(f"{str(error).split('; pass')[0]}; list the set's classes in data.classes") from None
        raise
    return train, test


def training_target(target: Target, masks: bool) -> Target:
    """What the detector trains on: boxes, labels (and masks) of the objects that are not crowd regions."""
    keep = target["iscrowd"] == 0
    kept = {"boxes": target["boxes"][keep], "labels": target["labels"][keep]}
    if masks:
        kept["masks"] = target["masks"][keep]
    return kept


class DetectionBatches:
    """``batches[indices]``: a batch of a detection dataset as ``(images, targets)`` lists, for :func:`batch_loader`.

    ``train``: targets as :func:`training_target` makes them (the loader's workers do it).

    Example:
        >>> loader = batch_loader(DetectionBatches(CocoDetection(root, "val")), 4, shuffle=False, drop_last=False)
        >>> images, targets = next(iter(loader))  # 4 uint8 (3, H, W) images and their targets
    """

    def __init__(self, dataset: DetectionDataset, train: bool = False) -> None:
        self.dataset = dataset
        self.train = train

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Tensor) -> tuple[list[Tensor], list[Target]]:
        images, targets = [], []
        for index in indices.tolist():
            image, target = self.dataset[index]
            images.append(image)
            targets.append(training_target(target, self.dataset.masks) if self.train else target)
        return images, targets


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """``image`` mirrored left-right with its boxes and masks (torchvision's v2 kernels)."""
    height, width = image.shape[-2:]
    flipped = dict(target)
    flipped["boxes"] = TF.horizontal_flip_bounding_boxes(
        target["boxes"], format=BoundingBoxFormat.XYXY, canvas_size=(height, width)
    )
    if "masks" in target:
        flipped["masks"] = TF.horizontal_flip_mask(target["masks"])
    return TF.horizontal_flip_image(image), flipped
