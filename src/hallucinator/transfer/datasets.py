"""Detection datasets in COCO's and PASCAL VOC's own layouts, as torchvision's detection models take them.

``dataset[i]`` is ``(image, target)``: ``image`` uint8 ``(3, H, W)``, ``target`` a dict with ``boxes``
(float32 ``(K, 4)``, ``x1, y1, x2, y2`` in 0-based continuous pixel coordinates: a box covering pixel
columns ``0 .. W-1`` is ``x1 = 0, x2 = W``), ``labels`` (int64 ``(K,)``, ``1 .. C``; 0 is the
background of torchvision's models), ``iscrowd`` (int64 ``(K,)``), ``image_id`` (COCO's int id, VOC's
file stem), and ``difficult`` (bool ``(K,)``, VOC) or ``masks`` (uint8 ``(K, H, W)``, COCO with
``masks=True``). Class ``label`` is named ``dataset.classes[label - 1]``.

- :class:`CocoDetection`: ``ROOT/annotations/instances_<split>.json`` with the images in ``ROOT/<split>/``
  (``split="train2017"``, ``"val2017"``); category ids become labels ``1 .. C`` in ascending id order
  (COCO's 80 categories have ids up to 90: ``dataset.categories`` lists the mapping).
- :class:`VOCDetection`: ``ROOT/VOC<year>/{Annotations/<id>.xml, ImageSets/Main/<set>.txt, JPEGImages/<id>.jpg}``
  for each year (VOC07+12: ``years=("2007", "2012")``); VOC's 1-based inclusive boxes ``xmin .. xmax``
  become ``xmin - 1 .. xmax`` (as in detectron2).

Bad input is a one-line ``ValueError`` / ``FileNotFoundError`` naming the file and the fix. Boxes up to
one pixel outside the image (rounding in annotation tools) are clipped to it; further outside, or with
no width or height (COCO train2017 has two of height 0), they are an error unless
``invalid_boxes="repair"`` clips them and drops the degenerate ones. Images without objects (crowd
regions alone count as none) are kept, as evaluation needs them, or with ``skip_empty=True`` (training)
skipped. Whatever was clipped, dropped or skipped is counted in ``dataset.report``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "VOC_CLASSES",
    "CocoDetection",
    "DatasetReport",
    "DetectionDataset",
    "VOCDetection",
    "contiguous_categories",
    "mask_api",
]

# detectron2's order, which is the devkit's: label i + 1 is VOC_CLASSES[i]
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
CLIP_TOLERANCE = 1.0  # px outside the image that are rounding, not a wrong annotation
REPAIR_HINT = "fix the annotation, or pass invalid_boxes='repair' to clip boxes to the image and drop degenerate ones"

Target = dict[str, Any]
Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]
InvalidBoxes = Literal["error", "repair"]


@dataclass
class DatasetReport:
    """What reading a split found: images, objects, and every image or box that was not taken as it stood."""

    images: int = 0
    objects: int = 0
    empty_images: int = 0  # with no object (crowd regions alone count as none)
    skipped_empty: bool = False  # whether those were left out (skip_empty=True)
    clipped_boxes: int = 0  # reached past the image border and were clipped to it
    dropped_boxes: int = 0  # degenerate or not finite, dropped by invalid_boxes="repair"

    def __str__(self) -> str:
        parts = [f"{self.images} images, {self.objects} objects"]
        if self.empty_images:
            what = "skipped" if self.skipped_empty else "kept"
            parts.append(f"{self.empty_images} images without objects ({what})")
        if self.clipped_boxes:
            parts.append(f"{self.clipped_boxes} boxes clipped to the image")
        if self.dropped_boxes:
            parts.append(f"{self.dropped_boxes} degenerate boxes dropped")
        return ", ".join(parts)


@dataclass
class _Record:
    """One image's checked annotations, one list entry per object; ``segmentations`` (COCO) as the file has them."""

    image_id: int | str
    path: Path
    width: int
    height: int
    source: Path  # the annotation file that describes it, for error messages
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    iscrowd: list[int] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    segmentations: list[Any] = field(default_factory=list)


class DetectionDataset(torch.utils.data.Dataset):
    """The samples and checks that :class:`CocoDetection` and :class:`VOCDetection` share (see the module's doc)."""

    def __init__(
        self,
        records: list[_Record],
        classes: Sequence[str],
        report: DatasetReport,
        *,
        skip_empty: bool,
        masks: bool,
        has_difficult: bool,
        transforms: Transforms | None,
    ) -> None:
        report.images = len(records)
        report.objects = sum(len(r.labels) for r in records)
        report.empty_images = sum(1 for r in records if not _has_objects(r))
        report.skipped_empty = skip_empty
        if skip_empty:
            records = [r for r in records if _has_objects(r)]
        self.records = records
        self.classes = list(classes)
        self.report = report
        self.masks = masks
        self.transforms = transforms
        self._has_difficult = has_difficult

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        record = self.records[index]
        image = _read_image(record)
        target = self.target(index)
        if self.masks:
            target["masks"] = _decode_masks(record)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, index: int) -> Target:
        """Image ``index``'s target without decoding the image (and without masks)."""
        record = self.records[index]
        target: Target = {
            "boxes": torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(record.labels, dtype=torch.int64),
            "iscrowd": torch.tensor(record.iscrowd, dtype=torch.int64),
            "image_id": record.image_id,
        }
        if self._has_difficult:
            target["difficult"] = torch.tensor(record.difficult, dtype=torch.bool)
        return target

    def targets(self) -> list[Target]:
        """Every image's target, in order, without images: the ground truth that :func:`voc07_ap` takes."""
        return [self.target(i) for i in range(len(self))]


class CocoDetection(DetectionDataset):
    """A COCO instances split: ``ROOT/annotations/instances_<split>.json``, images in ``ROOT/<split>/``.

    ``masks=True`` adds each object's mask, decoded from its polygons or RLE (needs ``pycocotools``
    or ``faster-coco-eval``). ``categories`` lists ``{"label", "id", "name"}`` in label order;
    ``category_ids[label - 1]`` is a label's COCO id (what COCO's results files name).

    Example:
        >>> train = CocoDetection("datasets/coco", "train2017", skip_empty=True, invalid_boxes="repair")  # doctest: +SKIP
        >>> image, target = train[0]  # (3, H, W) uint8; target["boxes"] (K, 4) float32  # doctest: +SKIP
        >>> print(train.report)  # images, objects, and what was skipped, clipped or dropped  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        masks: bool = False,
        *,
        skip_empty: bool = False,
        invalid_boxes: InvalidBoxes = "error",
        transforms: Transforms | None = None,
    ) -> None:
        root = Path(root).expanduser()
        self.annotation_file = root / "annotations" / f"instances_{split}.json"
        if not self.annotation_file.is_file():
            raise FileNotFoundError(
                f"{self.annotation_file} not found: expected COCO's layout, ROOT/annotations/instances_{split}.json "
                f"with the images in ROOT/{split}/ (unzip annotations_trainval2017.zip and {split}.zip into {root})"
            )
        if masks:
            mask_api()  # its install hint now, not at the first sample
        try:
            data = json.loads(self.annotation_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.annotation_file} is not valid JSON ({error}): download it again") from None
        missing_keys = [key for key in ("images", "annotations", "categories") if key not in data]
        if missing_keys:
            raise ValueError(f"{self.annotation_file} has no {', '.join(missing_keys)}: is it a COCO *instances* file?")
        self.categories = contiguous_categories(data["categories"])
        self.category_ids = [category["id"] for category in self.categories]
        labels = {category["id"]: category["label"] for category in self.categories}
        report = DatasetReport()
        records = _coco_records(root / split, self.annotation_file, data, labels, invalid_boxes, report)
        super().__init__(
            records,
            [category["name"] for category in self.categories],
            report,
            skip_empty=skip_empty,
            masks=masks,
            has_difficult=False,
            transforms=transforms,
        )

    def __repr__(self) -> str:
        return f"CocoDetection({self.annotation_file.name}: {self.report})"


class VOCDetection(DetectionDataset):
    """PASCAL VOC image sets: ``ROOT/VOC<year>/ImageSets/Main/<image_set>.txt`` for each of ``years``.

    ``classes``: the names labelled ``1 .. C`` in order, VOC's 20 by default; ``None`` takes the
    names found in the annotations, sorted (then give the test set the training set's ``classes``,
    so that a class missing from one does not shift the labels). ``difficult`` objects stay in the
    targets, flagged: detectron2 trains on them, and VOC's AP neither counts nor penalises them.

    Example:
        >>> train = VOCDetection("datasets", years=("2007", "2012"), image_set="trainval")  # doctest: +SKIP
        >>> test = VOCDetection("datasets", years=("2007",), image_set="test")  # doctest: +SKIP
        >>> image, target = test[0]; target["image_id"], target["difficult"]  # doctest: +SKIP
        ('000001', tensor([False, False]))
    """

    def __init__(
        self,
        root: str | Path,
        years: Sequence[str | int] = ("2007",),
        image_set: str = "trainval",
        *,
        classes: Sequence[str] | None = VOC_CLASSES,
        skip_empty: bool = False,
        invalid_boxes: InvalidBoxes = "error",
        transforms: Transforms | None = None,
    ) -> None:
        root = Path(root).expanduser()
        self.image_set = image_set
        self.years = [str(year) for year in years]
        parsed = [entry for year in self.years for entry in _voc_entries(root, year, image_set)]
        if classes is None:
            classes = sorted({obj[0] for _, objects in parsed for obj in objects})
        labels = {name: i + 1 for i, name in enumerate(classes)}
        report = DatasetReport()
        records = []
        for record, objects in parsed:
            for k, (name, box, difficult) in enumerate(objects, start=1):
                where = f"{record.source}: object {k} ({name})"
                if name not in labels:
                    raise ValueError(
                        f"{where}: unknown class {name!r}, not among the {len(labels)} classes given; pass "
                        "classes=None to take the names found in the set, or a list of classes that has it"
                    )
                text = "xmin={:g} ymin={:g} xmax={:g} ymax={:g}".format(*box)
                # 1-based inclusive pixel indices -> 0-based continuous coordinates (detectron2's conversion)
                checked = _checked_box(
                    [box[0] - 1, box[1] - 1, box[2], box[3]], record, where, text, invalid_boxes, report
                )
                if checked is not None:
                    record.boxes.append(checked)
                    record.labels.append(labels[name])
                    record.iscrowd.append(0)
                    record.difficult.append(difficult)
            records.append(record)
        _check_unique(records, f"the image sets {image_set} of VOC {', '.join(self.years)}")
        _check_images_exist(records, f"{root}/VOC<year>/JPEGImages", "extract VOC's trainval/test tar files there")
        super().__init__(
            records, classes, report, skip_empty=skip_empty, masks=False, has_difficult=True, transforms=transforms
        )

    def __repr__(self) -> str:
        return f"VOCDetection(VOC {'+'.join(self.years)} {self.image_set}: {self.report})"


def contiguous_categories(categories: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO's categories in ascending id order, labelled ``1 .. C``: ``[{"label", "id", "name"}, ...]``.

    Example:
        >>> contiguous_categories([{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}])
        [{'label': 1, 'id': 2, 'name': 'cat'}, {'label': 2, 'id': 7, 'name': 'dog'}]
    """
    ordered = sorted(categories, key=lambda category: category["id"])
    ids = [category["id"] for category in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError(f"COCO categories repeat an id ({ids}): each category needs its own")
    return [{"label": i + 1, "id": c["id"], "name": c["name"]} for i, c in enumerate(ordered)]


def mask_api() -> ModuleType:
    """COCO's mask API (``frPyObjects``, ``merge``, ``decode``, ``encode``): pycocotools', else faster-coco-eval's."""
    try:
        from pycocotools import mask
    except ImportError:
        try:
            from faster_coco_eval.core import mask
        except ImportError:
            raise ImportError("COCO masks need pycocotools: pip install pycocotools (or faster-coco-eval)") from None
    return mask


def _coco_records(
    folder: Path,
    annotation_file: Path,
    data: dict[str, Any],
    labels: dict[int, int],
    invalid_boxes: InvalidBoxes,
    report: DatasetReport,
) -> list[_Record]:
    records: dict[int, _Record] = {}
    for image in data["images"]:
        if image["id"] in records:
            raise ValueError(f"{annotation_file}: image id {image['id']} appears twice; each image needs its own")
        records[image["id"]] = _Record(
            image["id"], folder / image["file_name"], int(image["width"]), int(image["height"]), annotation_file
        )
    for annotation in data["annotations"]:
        record = records.get(annotation["image_id"])
        where = f"{annotation_file}: annotation {annotation['id']}"
        if record is None:
            raise ValueError(f"{where} names image {annotation['image_id']}, which is not in its images list")
        if annotation["category_id"] not in labels:
            raise ValueError(
                f"{where}: category {annotation['category_id']} is not in its categories list ({sorted(labels)})"
            )
        x, y, w, h = annotation["bbox"]
        where += f" of image {record.image_id} ({record.path.name})"
        text = f"bbox [x={x:g}, y={y:g}, w={w:g}, h={h:g}]"
        checked = _checked_box([x, y, x + w, y + h], record, where, text, invalid_boxes, report)
        if checked is not None:
            record.boxes.append(checked)
            record.labels.append(labels[annotation["category_id"]])
            record.iscrowd.append(int(annotation.get("iscrowd", 0)))
            record.segmentations.append(annotation.get("segmentation"))
    found = list(records.values())
    _check_images_exist(found, str(folder), f"unzip COCO's {folder.name}.zip into {folder.parent}")
    return found


def _voc_entries(root: Path, year: str, image_set: str) -> list[tuple[_Record, list[tuple[str, list[float], bool]]]]:
    """Each listed image of one year's set, with its objects as read: ``(name, [xmin, ymin, xmax, ymax], difficult)``."""
    base = root / f"VOC{year}"
    listing = base / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        raise FileNotFoundError(
            f"{listing} not found: expected ROOT/VOC{year}/{{Annotations,ImageSets/Main,JPEGImages}} "
            "(ROOT is the VOCdevkit folder that VOC's tar files extract to)"
        )
    entries = []
    for image_id in listing.read_text().split():
        path = base / "Annotations" / f"{image_id}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found, but {listing} lists {image_id}: extract VOC's annotations")
        try:
            tree = ET.parse(path).getroot()
            width, height = (int(tree.findtext(f"size/{tag}", "")) for tag in ("width", "height"))
        except (ET.ParseError, ValueError) as error:
            raise ValueError(f"{path} is not a VOC annotation with <size><width>/<height> ({error})") from None
        record = _Record(image_id, base / "JPEGImages" / f"{image_id}.jpg", width, height, path)
        objects = []
        for k, obj in enumerate(tree.iter("object"), start=1):
            try:
                name = (obj.findtext("name") or "").strip()
                box = [float(obj.findtext(f"bndbox/{tag}", "")) for tag in ("xmin", "ymin", "xmax", "ymax")]
                difficult = int(obj.findtext("difficult") or 0) == 1
            except ValueError as error:
                raise ValueError(f"{path}: object {k} has no numeric <bndbox> xmin/ymin/xmax/ymax ({error})") from None
            objects.append((name, box, difficult))
        entries.append((record, objects))
    return entries


def _checked_box(
    box: list[float], record: _Record, where: str, text: str, invalid_boxes: InvalidBoxes, report: DatasetReport
) -> list[float] | None:
    """``box`` (x1, y1, x2, y2) checked against its image: clipped, or ``None`` when dropped, or an error."""
    if not all(math.isfinite(v) for v in box):
        if invalid_boxes == "error":
            raise ValueError(f"{where}: {text} is not finite; {REPAIR_HINT}")
        report.dropped_boxes += 1
        return None
    x1, y1, x2, y2 = box
    outside = max(-x1, -y1, x2 - record.width, y2 - record.height)
    if outside > 0:
        if outside > CLIP_TOLERANCE and invalid_boxes == "error":
            raise ValueError(
                f"{where}: {text} reaches {outside:g} px outside the {record.width}x{record.height} image; "
                f"{REPAIR_HINT}"
            )
        x1, x2 = min(max(x1, 0.0), record.width), min(max(x2, 0.0), record.width)
        y1, y2 = min(max(y1, 0.0), record.height), min(max(y2, 0.0), record.height)
        report.clipped_boxes += 1
    if x2 <= x1 or y2 <= y1:
        if invalid_boxes == "error":
            raise ValueError(f"{where}: {text} is degenerate (no width or no height); {REPAIR_HINT}")
        report.dropped_boxes += 1
        return None
    return [x1, y1, x2, y2]


def _has_objects(record: _Record) -> bool:
    """Whether an image has objects to learn from; crowd regions alone are none (detectron2 skips such images too)."""
    return any(crowd == 0 for crowd in record.iscrowd)


def _check_unique(records: list[_Record], what: str) -> None:
    seen: set[int | str] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"{what} list image {record.image_id} twice: list each image once")
        seen.add(record.image_id)


def _check_images_exist(records: list[_Record], folder: str, fix: str) -> None:
    missing = [record.path for record in records if not record.path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(records)} images that the annotations name are missing from {folder} "
            f"(first: {missing[0]}): {fix}"
        )


def _read_image(record: _Record) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(str(record.path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ValueError(f"{record.path} cannot be decoded ({error}): replace the file") from None
    if tuple(image.shape[1:]) != (record.height, record.width):
        raise ValueError(
            f"{record.path} is {image.shape[2]}x{image.shape[1]} px, but {record.source} says "
            f"{record.width}x{record.height}: the image and its annotation do not belong together"
        )
    return image


def _decode_masks(record: _Record) -> Tensor:
    mask = mask_api()
    height, width = record.height, record.width
    decoded = []
    for k, segmentation in enumerate(record.segmentations):
        if isinstance(segmentation, list):
            # polygons of fewer than 3 points enclose nothing, and pycocotools would read a 4-number one as a box
            polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
            rle = mask.merge(mask.frPyObjects(polygons, height, width)) if polygons else None
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask.frPyObjects(segmentation, height, width)  # uncompressed RLE (crowd regions)
        elif isinstance(segmentation, dict):
            rle = segmentation
        else:
            raise ValueError(
                f"{record.source}: object {k + 1} of image {record.image_id} has no segmentation "
                "(polygons or RLE); masks=True needs one for every object"
            )
        if rle is None:
            decoded.append(np.zeros((height, width), dtype=np.uint8))
            continue
        if list(rle["size"]) != [height, width]:
            raise ValueError(
                f"{record.source}: the RLE of object {k + 1} of image {record.image_id} is {rle['size']}, "
                f"but the image is {height}x{width}: fix its size"
            )
        decoded.append(mask.decode(rle))
    if not decoded:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    return torch.from_numpy(np.stack(decoded)).to(torch.uint8)
