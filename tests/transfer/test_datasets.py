"""The readers of hallucinator.transfer.datasets: CocoDetection and VOCDetection give the same samples from both layouts
of the small set; masks; every bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hallucinator.transfer import VOC_CLASSES, CocoDetection, VOCDetection
from hallucinator.transfer.datasets import mask_api

HAS_MASK_API = any(importlib.util.find_spec(module) for module in ("pycocotools", "faster_coco_eval"))
needs_masks = pytest.mark.skipif(not HAS_MASK_API, reason="COCO masks need pycocotools or faster-coco-eval")


@pytest.mark.parametrize(("coco_split", "voc_set"), [("train", "trainval"), ("val", "test")])
def test_both_layouts_read_the_same_samples(small_set, coco_split, voc_set):
    coco = CocoDetection(small_set.root, coco_split)
    voc = VOCDetection(small_set.root, image_set=voc_set, classes=small_set.classes)
    assert len(coco) == len(voc) > 0 and coco.classes == voc.classes == small_set.classes
    assert coco.report.objects == voc.report.objects > 0 and coco.report.empty_images == 0
    for (coco_image, coco_target), (voc_image, voc_target) in zip(coco, voc):
        assert coco_image.dtype == torch.uint8 and coco_image.shape == (3, 96, 96)
        assert torch.equal(coco_image, voc_image)  # the same JPEG bytes
        assert coco_target["boxes"].dtype == torch.float32 and coco_target["labels"].dtype == torch.int64
        assert torch.equal(coco_target["boxes"], voc_target["boxes"])
        assert torch.equal(coco_target["labels"], voc_target["labels"])
        assert torch.equal(coco_target["iscrowd"], torch.zeros_like(coco_target["labels"]))
        assert coco_target["image_id"] == int(voc_target["image_id"])
        assert voc_target["difficult"].dtype == torch.bool and not voc_target["difficult"].any()
        assert "masks" not in coco_target and "difficult" not in coco_target


@needs_masks
def test_coco_masks_of_the_small_set_are_its_boxes(small_set):
    dataset = CocoDetection(small_set.root, "val", masks=True)
    for _, target in dataset:
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (len(target["boxes"]), 96, 96)
        for mask, (x1, y1, x2, y2) in zip(target["masks"], target["boxes"].int().tolist()):
            expected = torch.zeros(96, 96, dtype=torch.uint8)
            expected[y1:y2, x1:x2] = 1
            assert torch.equal(mask, expected)


def test_targets_match_the_samples_without_decoding(small_set):
    dataset = VOCDetection(small_set.root, image_set="test", classes=small_set.classes)
    for (_, target), light in zip(dataset, dataset.targets()):
        assert target.keys() == light.keys()
        assert all(torch.equal(target[k], light[k]) for k in ("boxes", "labels", "difficult"))


def test_voc_class_names(small_set):
    with pytest.raises(ValueError, match=r"unknown class '\w+', not among the 20 classes given; pass classes=None"):
        VOCDetection(small_set.root, image_set="trainval")  # VOC's 20 names by default: no CIFAR class among them
    found = VOCDetection(small_set.root, image_set="trainval", classes=None)
    assert found.classes == sorted(found.classes) and set(found.classes) <= set(small_set.classes)
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"


# --- VOC: a copy of the small set's VOC2007 with one annotation changed ---


def _voc_copy(small_set, tmp_path: Path) -> tuple[Path, Path, ET.ElementTree]:
    """The copy's root, the first test image's annotation and its parsed tree."""
    shutil.copytree(small_set.root / "VOC2007", tmp_path / "VOC2007")
    stem = (tmp_path / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    path = tmp_path / "VOC2007" / "Annotations" / f"{stem}.xml"
    return tmp_path, path, ET.parse(path)


def _set_box(tree: ET.ElementTree, path: Path, **values: str) -> None:
    for tag, value in values.items():
        tree.getroot().find(f"object/bndbox/{tag}").text = value
    tree.write(path)


def _read(root: Path, classes, **options) -> VOCDetection:
    return VOCDetection(root, image_set="test", classes=classes, **options)


def test_voc_boxes_are_converted_from_one_based(small_set, tmp_path):
    root, path, tree = _voc_copy(small_set, tmp_path)
    _set_box(tree, path, xmin="1", ymin="1", xmax="96", ymax="40")
    tree.getroot().find("object/difficult").text = "1"
    tree.write(path)
    target = _read(root, small_set.classes).target(0)
    assert target["boxes"][0].tolist() == [0.0, 0.0, 96.0, 40.0] and target["difficult"][0].item()


def test_voc_boxes_outside_the_image(small_set, tmp_path):
    root, path, tree = _voc_copy(small_set, tmp_path)
    _set_box(tree, path, xmax="97")  # one pixel over: rounding, clipped and counted
    dataset = _read(root, small_set.classes)
    assert dataset.target(0)["boxes"][0, 2].item() == 96.0 and dataset.report.clipped_boxes == 1
    assert "1 boxes clipped to the image" in str(dataset.report)
    _set_box(tree, path, xmax="120")
    with pytest.raises(ValueError, match=rf"{path.name}: object 1 \(\w+\): xmin=.* xmax=120 .* reaches 24 px outside"):
        _read(root, small_set.classes)
    repaired = _read(root, small_set.classes, invalid_boxes="repair")
    assert repaired.target(0)["boxes"][0, 2].item() == 96.0 and repaired.report.clipped_boxes == 1


def test_voc_degenerate_boxes(small_set, tmp_path):
    root, path, tree = _voc_copy(small_set, tmp_path)
    objects = len(tree.getroot().findall("object"))
    _set_box(tree, path, xmin="50", xmax="40")
    with pytest.raises(ValueError, match="is degenerate .*invalid_boxes='repair'"):
        _read(root, small_set.classes)
    repaired = _read(root, small_set.classes, invalid_boxes="repair")
    assert len(repaired.target(0)["boxes"]) == objects - 1 and repaired.report.dropped_boxes == 1


def test_voc_empty_images_are_counted_kept_or_skipped(small_set, tmp_path):
    root, path, tree = _voc_copy(small_set, tmp_path)
    for obj in tree.getroot().findall("object"):
        tree.getroot().remove(obj)
    tree.write(path)
    kept = _read(root, small_set.classes)
    assert len(kept) == 6 and kept.report.empty_images == 1 and len(kept[0][1]["boxes"]) == 0
    assert kept[0][1]["boxes"].shape == (0, 4)
    skipped = _read(root, small_set.classes, skip_empty=True)
    assert len(skipped) == 5 and "1 images without objects (skipped)" in str(skipped.report)


def test_voc_missing_and_broken_files(small_set, tmp_path):
    root, path, tree = _voc_copy(small_set, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"VOC2012/ImageSets/Main/test.txt not found"):
        VOCDetection(root, years=(2007, 2012), image_set="test", classes=small_set.classes)
    image = root / "VOC2007" / "JPEGImages" / f"{path.stem}.jpg"
    image.rename(image.with_suffix(".moved"))
    with pytest.raises(FileNotFoundError, match=rf"1 of the 6 images .* \(first: .*{path.stem}.jpg\)"):
        _read(root, small_set.classes)
    image.with_suffix(".moved").rename(image)
    tree.getroot().find("size/width").text = "100"
    tree.write(path)
    with pytest.raises(ValueError, match=r"is 96x96 px, but .* says 100x96"):
        _read(root, small_set.classes)[0]
    path.write_text("<annotation><size>")
    with pytest.raises(ValueError, match=rf"{path.name} is not a VOC annotation"):
        _read(root, small_set.classes)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{path.name} not found, but .*test.txt lists {path.stem}"):
        _read(root, small_set.classes)


# --- COCO: a hand-made instances file ---

HEIGHT, WIDTH = 6, 8


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, by hand: run lengths of the column-major pixels, starting with a run of zeros."""
    counts, current, run = [], 0, 0
    for value in mask.flatten(order="F").tolist():
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _masks() -> dict[str, np.ndarray]:
    polygon = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    polygon[1:4, 2:6] = 1  # the polygon (2,1)-(6,4)
    compressed = np.zeros_like(polygon)
    compressed[3:6, 0:2] = 1
    compressed[5, 7] = 1  # a mask needs not be one piece
    crowd = np.zeros_like(polygon)
    crowd[0:2, 4:8] = 1
    return {"polygon": polygon, "compressed": compressed, "crowd": crowd}


def _coco_set(root: Path, split: str = "mini") -> dict:
    """Three images: two objects (polygon, compressed RLE); a crowd region alone; nothing. Category ids 2, 5, 9."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for k in (1, 2, 3):
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * k, dtype=np.uint8)).save(root / split / f"{k}.png")
    masks = _masks()
    # the checks of boxes and files read no masks: without a mask library this one is left out
    compressed = mask_api().encode(np.asfortranarray(masks["compressed"])) if HAS_MASK_API else None
    data = {
        "images": [{"id": k, "file_name": f"{k}.png", "width": WIDTH, "height": HEIGHT} for k in (1, 2, 3)],
        "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 9,
                "bbox": [2, 1, 4, 3],
                "area": 12,
                "iscrowd": 0,
                "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 3, 8, 3],
                "area": 7,
                "iscrowd": 0,
                "segmentation": compressed and {"size": compressed["size"], "counts": compressed["counts"].decode()},
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 5,
                "bbox": [4, 0, 4, 2],
                "area": 8,
                "iscrowd": 1,
                "segmentation": _uncompressed_rle(masks["crowd"]),
            },
        ],
    }
    _write(root, split, data)
    return data


def _write(root: Path, split: str, data: dict) -> None:
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@needs_masks
def test_coco_categories_masks_crowds_and_empty_images(tmp_path):
    _coco_set(tmp_path)
    dataset = CocoDetection(tmp_path, "mini", masks=True)
    assert dataset.category_ids == [2, 5, 9] and dataset.classes == ["two", "five", "nine"]
    assert dataset.categories[0] == {"label": 1, "id": 2, "name": "two"}
    assert len(dataset) == 3 and dataset.report.objects == 3
    assert dataset.report.empty_images == 2  # the crowd region alone, and nothing
    masks = _masks()
    image, target = dataset[0]
    assert image.shape == (3, HEIGHT, WIDTH) and int(image[0, 0, 0]) == 40
    assert target["image_id"] == 1 and target["labels"].tolist() == [3, 1]
    assert target["boxes"].tolist() == [[2, 1, 6, 4], [0, 3, 8, 6]]
    assert np.array_equal(target["masks"][0].numpy(), masks["polygon"])
    assert np.array_equal(target["masks"][1].numpy(), masks["compressed"])
    _, crowd = dataset[1]
    assert crowd["iscrowd"].tolist() == [1] and crowd["labels"].tolist() == [2]
    assert np.array_equal(crowd["masks"][0].numpy(), masks["crowd"])
    _, empty = dataset[2]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, HEIGHT, WIDTH)
    training = CocoDetection(tmp_path, "mini", skip_empty=True)
    assert [training.target(i)["image_id"] for i in range(len(training))] == [1]
    assert "3 images, 3 objects, 2 images without objects (skipped)" in repr(training)


def _broken(tmp_path: Path, change) -> None:
    data = _coco_set(tmp_path)
    change(data)
    _write(tmp_path, "mini", data)


def test_coco_bad_boxes(tmp_path):
    _broken(tmp_path, lambda d: d["annotations"][0].update(bbox=[2, 1, 6.5, 3]))  # x2 = 8.5: within rounding
    dataset = CocoDetection(tmp_path, "mini")
    assert dataset.target(0)["boxes"][0].tolist() == [2, 1, 8, 4] and dataset.report.clipped_boxes == 1
    _broken(tmp_path, lambda d: d["annotations"][0].update(bbox=[2, 1, 9, 3]))
    with pytest.raises(
        ValueError, match=r"annotation 10 of image 1 \(1.png\): bbox \[x=2, y=1, w=9, h=3\] reaches 3 px"
    ):
        CocoDetection(tmp_path, "mini")
    _broken(tmp_path, lambda d: d["annotations"][1].update(bbox=[1, 3, 2, 0]))  # COCO train2017 has two such
    with pytest.raises(ValueError, match=r"annotation 11 .* is degenerate .*invalid_boxes='repair'"):
        CocoDetection(tmp_path, "mini")
    repaired = CocoDetection(tmp_path, "mini", invalid_boxes="repair")
    assert repaired.target(0)["labels"].tolist() == [3] and repaired.report.dropped_boxes == 1
    assert "1 degenerate boxes dropped" in str(repaired.report)


def test_coco_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotations/instances_train2017.json not found: expected COCO's"):
        CocoDetection(tmp_path, "train2017")
    _broken(tmp_path, lambda d: d["annotations"][0].update(category_id=4))
    with pytest.raises(ValueError, match=r"annotation 10: category 4 is not in its categories list \(\[2, 5, 9\]\)"):
        CocoDetection(tmp_path, "mini")
    _broken(tmp_path, lambda d: d["annotations"][0].update(image_id=99))
    with pytest.raises(ValueError, match="annotation 10 names image 99, which is not in its images list"):
        CocoDetection(tmp_path, "mini")
    _broken(tmp_path, lambda d: d.pop("categories"))
    with pytest.raises(ValueError, match="has no categories: is it a COCO"):
        CocoDetection(tmp_path, "mini")
    _coco_set(tmp_path)
    (tmp_path / "mini" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 3 images .* \(first: .*2.png\): unzip COCO's mini.zip"):
        CocoDetection(tmp_path, "mini")


def test_masks_without_a_mask_library_name_the_install(tmp_path, monkeypatch):
    _coco_set(tmp_path)
    for module in ("pycocotools", "pycocotools.mask", "faster_coco_eval", "faster_coco_eval.core"):
        monkeypatch.setitem(sys.modules, module, None)  # importing them now fails, even once imported
    with pytest.raises(ImportError, match="pip install pycocotools"):
        CocoDetection(tmp_path, "mini", masks=True)
