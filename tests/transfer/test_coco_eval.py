"""coco_metrics on the small set's annotations: perfect predictions score 100, none 0; boxes and masks; both backends."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hallucinator.transfer import CocoDetection, coco_metrics, to_coco_results

BACKENDS = {"faster-coco-eval": "faster_coco_eval", "pycocotools": "pycocotools"}  # backend= -> module
AVAILABLE = [name for name, module in BACKENDS.items() if importlib.util.find_spec(module) is not None]

if not AVAILABLE:
    pytest.skip(
        "COCO's AP needs faster-coco-eval or pycocotools (pip install faster-coco-eval)", allow_module_level=True
    )


def _perfect(dataset: CocoDetection, masks: bool = False) -> list[dict]:
    predictions = []
    for i in range(len(dataset)):
        target = dataset[i][1] if masks else dataset.target(i)
        prediction = {**target, "scores": torch.ones(len(target["labels"]))}
        if masks:  # as Mask R-CNN gives them: (K, 1, H, W) probabilities
            prediction["masks"] = target["masks"][:, None].float() * 0.9
        predictions.append(prediction)
    return predictions


@pytest.mark.parametrize("backend", AVAILABLE)
def test_perfect_boxes_score_100_and_none_0(small_set, backend):
    val = CocoDetection(small_set.root, "val")
    perfect = coco_metrics(_perfect(val), val, backend=backend)
    assert perfect["AP"] == pytest.approx(100) and perfect["AP50"] == pytest.approx(100)
    assert perfect["AP75"] == pytest.approx(100) and perfect["AR100"] == pytest.approx(100)
    empty = coco_metrics([], val.annotation_file, backend=backend)
    assert empty["AP"] == 0 and empty["AP50"] == 0 and empty["AR100"] == 0


@pytest.mark.parametrize("backend", AVAILABLE)
def test_perfect_masks_from_the_polygons_score_100(small_set, backend):
    val = CocoDetection(small_set.root, "val", masks=True)
    perfect = coco_metrics(_perfect(val, masks=True), val, "segm", backend=backend)
    assert perfect["AP"] == pytest.approx(100) and perfect["AP75"] == pytest.approx(100)
    assert coco_metrics([], val, "segm", backend=backend)["AP"] == 0


def test_metrics_without_ground_truth_are_nan_and_labels_map_to_category_ids(small_set):
    val = CocoDetection(small_set.root, "val")
    metrics = coco_metrics(_perfect(val), val)
    assert list(metrics)[:3] == ["AP", "AP50", "AP75"] and len(metrics) == 12
    assert metrics["APl"] != metrics["APl"]  # no object of the set is larger than 96 x 96: NaN
    target = val.target(0)
    results = to_coco_results([{**target, "scores": [0.5] * len(target["labels"])}], [10 * c for c in range(1, 11)])
    assert [r["category_id"] for r in results] == [10 * label for label in target["labels"].tolist()]
    assert [r["bbox"] for r in results] == [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in target["boxes"].tolist()]


def test_partly_right_predictions_lie_between(small_set):
    val = CocoDetection(small_set.root, "val")
    shifted = [{**p, "boxes": p["boxes"] + 6} for p in _perfect(val)]  # IoU 0.49 for a 32-px box, more if larger
    metrics = coco_metrics(shifted, val)
    assert 0 < metrics["AP"] < metrics["AP50"] and metrics["AP75"] < 100


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs both faster-coco-eval and pycocotools")
def test_the_two_backends_agree(small_set):
    val = CocoDetection(small_set.root, "val")
    generator = torch.Generator().manual_seed(0)
    noisy = []
    for p in _perfect(val):
        boxes = p["boxes"] + torch.randn(p["boxes"].shape, generator=generator) * 6
        scores = torch.rand(len(boxes), generator=generator)
        noisy.append({**p, "boxes": boxes, "scores": scores})
    faster, reference = (coco_metrics(noisy, val, backend=name) for name in BACKENDS)
    assert faster == pytest.approx(reference, nan_ok=True)


def test_bad_predictions_are_errors(small_set):
    val = CocoDetection(small_set.root, "val")
    target = val.target(0)
    with pytest.raises(ValueError, match="predictions name 1 images that the ground truth does not have"):
        coco_metrics([{**target, "image_id": 10**6, "scores": torch.ones(len(target["labels"]))}], val)
    with pytest.raises(ValueError, match=r"has label 0; labels run 1 \.\. 10 \(0 is the background"):
        coco_metrics([{**target, "labels": target["labels"] * 0, "scores": torch.ones(len(target["labels"]))}], val)
    with pytest.raises(ValueError, match="has no masks, which iou_type='segm' needs"):
        coco_metrics([{**target, "scores": torch.ones(len(target["labels"]))}], val, "segm")
    with pytest.raises(FileNotFoundError, match="not found: pass a COCO instances JSON file"):
        coco_metrics([], small_set.root / "nothing.json")
