"""A small detection set made here: CIFAR-10 test images pasted onto noise, in COCO's and PASCAL VOC's layouts.

COCO 2017 and VOC07+12 (the sets of MoCo's detectron2 protocol) cannot be fetched on these machines; this set
puts the same readers, evaluation and training code to work in minutes on data at hand. Each canvas is
textured noise carrying 1 to 4 CIFAR-10 *test* images (the pre-training never saw them), each scaled by a
whole-pixel factor of 1 to 3 (32 to 96 px), placed so that no two boxes overlap: every box is exact and
every object wholly visible. Written once, read by both layouts from ``output_dir``:

- COCO: ``annotations/instances_train.json`` and ``instances_val.json``, images in ``train/`` and ``val/``;
  each object has its box, a rectangle polygon as ``segmentation``, ``area``, ``iscrowd: 0`` and the
  ``cifar_index`` it came from (an extra key the COCO tools ignore);
- VOC: ``VOC2007/Annotations/<id>.xml`` (1-based pixel boxes, ``difficult`` 0),
  ``VOC2007/ImageSets/Main/trainval.txt`` and ``test.txt``, ``VOC2007/JPEGImages/<id>.jpg``.

Split ``train`` is COCO's ``train`` and VOC's ``trainval``; split ``test`` is COCO's ``val`` and VOC's ``test``.
Categories are the CIFAR-10 classes in label order (COCO ids 1..10).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hallucinator.data import ImageDataset, build_dataset

__all__ = ["DetectionSet", "make_detection_set"]

# split -> (COCO image folder / annotation name, VOC image set)
LAYOUTS = {"train": ("train", "trainval"), "test": ("val", "test")}
OBJECT_SIZE = 32  # CIFAR-10's
MAX_SCALE = 3
MAX_OBJECTS = 4
PLACEMENT_TRIES = 50
JPEG_QUALITY = 95  # with 4:4:4 chroma (subsampling=0): no colour bleeding across the box edges

# (x, y, size): an object's top-left pixel and side length
Placement = tuple[int, int, int]


@dataclass(frozen=True)
class DetectionSet:
    """What :func:`make_detection_set` wrote: the root of both layouts, the class names, counts per split."""

    root: Path
    classes: list[str]
    images: dict[str, int]
    objects: dict[str, int]


def make_detection_set(
    cifar_dir: str | Path,
    output_dir: str | Path,
    *,
    images_per_split: Mapping[str, int] | None = None,
    canvas: tuple[int, int] = (128, 128),
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DetectionSet:
    """Writes the COCO and VOC layouts of a seeded set of CIFAR-10 objects on noise to ``output_dir``.

    ``cifar_dir``: anything ``build_dataset("cifar10", ...)`` reads (the JPEG archive, torchvision's
    folder); its test split supplies the objects, each image used once until all 10,000 are, the test
    canvases drawing first: their pixels and boxes do not change with ``images_per_split["train"]``
    (their ids, numbered after the training canvases', do).
    ``images_per_split``: canvases per split, default ``{"train": 1000, "test": 250}``. ``canvas``:
    ``(height, width)``, each at least 32. ``output_dir`` must be new or empty. ``progress`` receives
    a line now and then (the CLI prints them).

    Example:
        >>> made = make_detection_set("../shared/datasets/cifar10-jpeg.tar.gz", "toy-det",
        ...                           images_per_split={"train": 12, "test": 6}, canvas=(96, 96))  # doctest: +SKIP
        >>> CocoDetection(made.root, "train"), VOCDetection(made.root, classes=made.classes)  # doctest: +SKIP
    """
    counts = _check_arguments(images_per_split, canvas)
    output = Path(output_dir).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"output directory {output} is not empty: choose a new one or delete it")
    source = build_dataset("cifar10", cifar_dir, "test", cache_dir=cache_dir)
    if not isinstance(source, ImageDataset):  # CIFAR is always decoded into memory; this tells the type checker
        raise TypeError(f"expected CIFAR-10 in memory, got {source!r}")
    classes = list(source.classes)

    # One random stream per purpose and split (layout, background; one for the order of the objects), so
    # that the test canvases depend on the seed and their own count only. All layouts come first: the
    # number of objects of each split decides which CIFAR images it takes.
    streams = {split: i for i, split in enumerate(LAYOUTS)}
    layouts: dict[str, list[list[Placement]]] = {}
    for split in LAYOUTS:
        rng = np.random.default_rng([seed, 0, streams[split]])
        layouts[split] = [_layout(rng, canvas) for _ in range(counts[split])]
    totals = {split: sum(len(layout) for layout in layouts[split]) for split in LAYOUTS}
    order = np.random.default_rng([seed, 2]).permutation(len(source))
    first = {"test": 0, "train": totals["test"]}
    drawn = {split: order[(first[split] + np.arange(totals[split])) % len(order)] for split in LAYOUTS}

    voc = output / "VOC2007"
    for folder in (output / "annotations", voc / "Annotations", voc / "ImageSets" / "Main", voc / "JPEGImages"):
        folder.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "cifar10"} for i, name in enumerate(classes)]
    image_id = annotation_id = 0
    for split, (coco_split, voc_set) in LAYOUTS.items():
        (output / coco_split).mkdir(exist_ok=True)
        backgrounds = np.random.default_rng([seed, 1, streams[split]])
        images, annotations, names = [], [], []
        sources = iter(drawn[split].tolist())
        for n, layout in enumerate(layouts[split], start=1):
            image_id += 1
            name = f"{image_id:06d}"
            pixels = _background(backgrounds, canvas)
            objects = []
            for x, y, size in layout:
                index = next(sources)
                pixels[y : y + size, x : x + size] = _object(source.images[index].numpy(), size)
                objects.append((x, y, size, index, int(source.labels[index])))
            picture = Image.fromarray(pixels)
            for folder in (output / coco_split, voc / "JPEGImages"):
                picture.save(folder / f"{name}.jpg", quality=JPEG_QUALITY, subsampling=0)
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": canvas[0], "width": canvas[1]})
            for x, y, size, index, label in objects:
                annotation_id += 1
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [x, y, size, size],
                        "area": size * size,
                        "segmentation": [[x, y, x + size, y, x + size, y + size, x, y + size]],
                        "iscrowd": 0,
                        "cifar_index": index,
                    }
                )
            _write_voc_annotation(voc / "Annotations" / f"{name}.xml", name, canvas, objects, classes)
            names.append(name)
            if progress and (n % max(1, counts[split] // 10) == 0 or n == counts[split]):
                progress(f"{split}: {n}/{counts[split]} canvases")
        coco = {
            "info": {"description": f"CIFAR-10 test objects on noise, seed {seed} (hallucinator make-detection-set)"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (output / "annotations" / f"instances_{coco_split}.json").write_text(json.dumps(coco))
        (voc / "ImageSets" / "Main" / f"{voc_set}.txt").write_text("".join(f"{name}\n" for name in names))
    return DetectionSet(output, classes, dict(counts), totals)


def _check_arguments(images_per_split: Mapping[str, int] | None, canvas: tuple[int, int]) -> dict[str, int]:
    counts = dict(images_per_split if images_per_split is not None else {"train": 1000, "test": 250})
    if set(counts) != set(LAYOUTS) or any(not isinstance(n, int) or n < 1 for n in counts.values()):
        raise ValueError(f"images_per_split must give train and test each at least one canvas, got {counts}")
    if len(canvas) != 2 or min(canvas) < OBJECT_SIZE:
        raise ValueError(f"canvas must be (height, width), each at least {OBJECT_SIZE} px, got {canvas}")
    return {split: counts[split] for split in LAYOUTS}


def _layout(rng: np.random.Generator, canvas: tuple[int, int]) -> list[Placement]:
    """1 to 4 non-overlapping squares; the first always fits, a later one too big for the space left shrinks to 32."""
    largest = min(*canvas, MAX_SCALE * OBJECT_SIZE)
    placed: list[Placement] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        # the drawn size, then 32 (dict.fromkeys: once only when 32 was drawn)
        for size in dict.fromkeys((int(rng.integers(OBJECT_SIZE, largest + 1)), OBJECT_SIZE)):
            spot = _free_spot(rng, placed, size, canvas)
            if spot is not None:
                placed.append((*spot, size))
                break
    return placed


def _free_spot(
    rng: np.random.Generator, placed: list[Placement], size: int, canvas: tuple[int, int]
) -> tuple[int, int] | None:
    height, width = canvas
    for _ in range(PLACEMENT_TRIES):
        x, y = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        if all(x + size <= px or px + ps <= x or y + size <= py or py + ps <= y for px, py, ps in placed):
            return x, y
    return None


def _background(rng: np.random.Generator, canvas: tuple[int, int]) -> np.ndarray:
    """Smooth colour blobs plus grain: no flat colour whose edge against an object would give the box away."""
    height, width = canvas
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.clip(smooth + rng.integers(-24, 25, (height, width, 3)), 0, 255).astype(np.uint8)


def _object(image_chw: np.ndarray, size: int) -> np.ndarray:
    picture = Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0)))
    if size != OBJECT_SIZE:
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture)


def _write_voc_annotation(
    path: Path, name: str, canvas: tuple[int, int], objects: list[tuple[int, int, int, int, int]], classes: list[str]
) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "CIFAR-10 objects on noise"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", canvas[1]), ("height", canvas[0]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for x, y, side, _index, label in objects:
        element = ET.SubElement(root, "object")
        for tag, text in (("name", classes[label]), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(element, tag).text = text
        box = ET.SubElement(element, "bndbox")
        # VOC's boxes are 1-based inclusive pixel indices: pixels x .. x + side - 1 are xmin = x + 1 .. xmax = x + side
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + side), ("ymax", y + side)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8")
