"""make_detection_set: the layouts it writes, exact boxes on the pixels, seeded and stable test canvases."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hallucinator.transfer import make_detection_set
from hallucinator.transfer.detection_set import MAX_OBJECTS


def _coco(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_both_layouts_are_written(small_set):
    root = small_set.root
    assert small_set.images == {"train": 12, "test": 6} and len(small_set.classes) == 10
    for split, coco_split, voc_set in (("train", "train", "trainval"), ("test", "val", "test")):
        coco = _coco(root, coco_split)
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert [c["name"] for c in coco["categories"]] == small_set.classes
        assert len(coco["images"]) == small_set.images[split] and len(coco["annotations"]) == small_set.objects[split]
        stems = (root / "VOC2007" / "ImageSets" / "Main" / f"{voc_set}.txt").read_text().split()
        assert stems == [Path(image["file_name"]).stem for image in coco["images"]]
        for image in coco["images"]:
            assert (root / coco_split / image["file_name"]).is_file()
            assert (root / "VOC2007" / "JPEGImages" / image["file_name"]).is_file()
            assert (root / "VOC2007" / "Annotations" / f"{Path(image['file_name']).stem}.xml").is_file()
    train_ids = {image["id"] for image in _coco(root, "train")["images"]}
    assert not train_ids & {image["id"] for image in _coco(root, "val")["images"]}


def test_objects_are_exact_non_overlapping_squares(small_set):
    for split in ("train", "val"):
        coco = _coco(small_set.root, split)
        assert {(image["height"], image["width"]) for image in coco["images"]} == {(96, 96)}
        by_image: dict[int, list] = {}
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            assert w == h and 32 <= w <= 96 and all(isinstance(v, int) for v in a["bbox"])
            assert x >= 0 and x + w <= 96 and y >= 0 and y + h <= 96
            assert a["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
            assert a["area"] == w * h and a["iscrowd"] == 0
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
        assert set(by_image) == {image["id"] for image in coco["images"]}  # no canvas is empty
        for boxes in by_image.values():
            assert 1 <= len(boxes) <= MAX_OBJECTS
            for i, (x, y, s, _) in enumerate(boxes):
                for px, py, ps, _ in boxes[i + 1 :]:
                    assert x + s <= px or px + ps <= x or y + s <= py or py + ps <= y


def test_each_box_frames_its_cifar_image_to_the_pixel(small_set, cifar10_test_images):
    """The source image, scaled as pasted, matches the pixels at the box better than at any 1-px shift."""
    for split in ("train", "val"):
        coco = _coco(small_set.root, split)
        files = {image["id"]: image["file_name"] for image in coco["images"]}
        for a in coco["annotations"]:
            canvas = np.asarray(Image.open(small_set.root / split / files[a["image_id"]]), dtype=np.float64)
            x, y, s, _ = a["bbox"]
            source = Image.fromarray(cifar10_test_images[a["cifar_index"]].permute(1, 2, 0).numpy())
            expected = np.asarray(source.resize((s, s), Image.Resampling.BILINEAR), dtype=np.float64)
            padded = np.pad(canvas, ((1, 1), (1, 1), (0, 0)), mode="edge")

            def error(dx: int, dy: int, x=x, y=y, s=s, padded=padded, expected=expected) -> float:
                return float(np.abs(padded[y + 1 + dy : y + 1 + dy + s, x + 1 + dx : x + 1 + dx + s] - expected).mean())

            assert error(0, 0) < 4  # JPEG at quality 95
            assert all(error(dx, dy) > error(0, 0) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            category = coco["categories"][a["category_id"] - 1]["name"]
            assert category == small_set.classes[a["category_id"] - 1]


def test_voc_boxes_are_the_coco_boxes_one_based(small_set):
    coco = _coco(small_set.root, "val")
    image = coco["images"][0]
    tree = ET.parse(small_set.root / "VOC2007" / "Annotations" / f"{Path(image['file_name']).stem}.xml").getroot()
    assert tree.findtext("size/width") == str(image["width"]) and tree.findtext("size/height") == str(image["height"])
    found = [
        (obj.findtext("name"), *(int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")))
        for obj in tree.iter("object")
    ]
    assert all(obj.findtext("difficult") == "0" for obj in tree.iter("object"))
    boxes = [(a["category_id"], *a["bbox"]) for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert found == [(small_set.classes[c - 1], x + 1, y + 1, x + w, y + h) for c, x, y, w, h in boxes]


def test_seeded_and_the_test_canvases_do_not_depend_on_the_train_count(cifar10_archive, tmp_path):
    def make(name: str, train: int, seed: int = 3) -> Path:
        made = make_detection_set(
            cifar10_archive, tmp_path / name, images_per_split={"train": train, "test": 2}, canvas=(64, 64), seed=seed
        )
        return made.root

    def test_split(root: Path) -> tuple[list, list[bytes]]:
        coco = _coco(root, "val")
        fields = [(a["bbox"], a["category_id"], a["cifar_index"]) for a in coco["annotations"]]
        return fields, [(root / "val" / image["file_name"]).read_bytes() for image in coco["images"]]

    first, again, more, other = make("a", 2), make("b", 2), make("c", 4), make("d", 2, seed=4)
    assert _coco(first, "train")["annotations"] == _coco(again, "train")["annotations"]
    assert test_split(first) == test_split(again) == test_split(more)
    assert test_split(other)[0] != test_split(first)[0]
    train_sources = {a["cifar_index"] for a in _coco(more, "train")["annotations"]}
    assert not train_sources & {a["cifar_index"] for a in _coco(more, "val")["annotations"]}


def test_bad_arguments_are_one_line_errors(cifar10_archive, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(ValueError, match="is not empty: choose a new one or delete it"):
        make_detection_set(cifar10_archive, tmp_path / "used", images_per_split={"train": 1, "test": 1})
    with pytest.raises(ValueError, match="train and test each at least one canvas"):
        make_detection_set(cifar10_archive, tmp_path / "new", images_per_split={"train": 1, "val": 1})
    with pytest.raises(ValueError, match="each at least 32 px"):
        make_detection_set(cifar10_archive, tmp_path / "new", images_per_split={"train": 1, "test": 1}, canvas=(31, 64))
    with pytest.raises(FileNotFoundError, match="cifar10 not found"):
        make_detection_set(tmp_path / "nowhere", tmp_path / "new", images_per_split={"train": 1, "test": 1})
