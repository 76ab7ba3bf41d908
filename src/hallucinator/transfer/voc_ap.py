"""PASCAL VOC's detection AP: VOC07's 11-point AP per class and its mean, and detectron2's VOC "AP" and AP75.

The rules are the VOC devkit's (``VOCevaldet.m``), as detectron2's ``voc_eval`` implements them:

- per class, detections are taken in descending score; ties keep their input order (image order,
  then order within the image), as MATLAB's stable ``sort`` keeps them;
- a detection goes to the ground-truth box of its class and image with the largest IoU; it is a true
  positive if that IoU exceeds the threshold (strictly, as in detectron2) and the box is not yet taken,
  else a false positive; a match to a *difficult* box is neither (and a difficult box can be matched again);
- recall counts the non-difficult boxes; a class without any is left out of the mean (its AP is NaN);
- VOC07 (``use_07_metric=True``): the mean over recall thresholds ``t = 0, 0.1, .., 1`` of the largest
  precision at a recall ``>= t`` (0 where recall never reaches ``t``); otherwise (VOC2010 on) the area
  under the precision envelope.

Boxes are ``x1, y1, x2, y2`` in 0-based continuous pixel coordinates, as :mod:`hallucinator.transfer.datasets`
and torchvision's models give them. The devkit's ``+1`` in widths and heights is the same IoU: it measures
1-based inclusive pixel indices, which are these coordinates with ``x1`` shifted by one.

Recall thresholds are exactly ``k / 10``: ``np.arange(0, 1.1, 0.1)``, which py-faster-rcnn and detectron2
use, makes 0.3, 0.6 and 0.7 a hair larger, so a recall of exactly 0.3 (3 of 10 boxes) misses that step
there. Only such exact ties can differ.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["VOCAP", "voc07_ap", "voc_metrics"]

# detectron2's PascalVOCDetectionEvaluator: "AP" is the mean over these of the mean AP
COCO_STYLE_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))


@dataclass(frozen=True)
class VOCAP:
    """AP in percent per label (NaN for a label without non-difficult ground truth) and their mean over the others."""

    per_class: dict[int, float]
    mAP: float

    def named(self, classes: Sequence[str]) -> dict[str, float]:
        """``per_class`` keyed by name: label ``l`` is ``classes[l - 1]``."""
        return {classes[label - 1]: ap for label, ap in self.per_class.items()}


def voc07_ap(
    detections: Iterable[Mapping[str, Any]],
    ground_truth: Iterable[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> VOCAP:
    """VOC's AP of ``detections`` against ``ground_truth``, per class and averaged (percent).

    ``ground_truth``: one mapping per image with ``image_id``, ``boxes`` ``(K, 4)``, ``labels`` ``(K,)``
    and optionally ``difficult`` ``(K,)`` (e.g. ``VOCDetection(...).targets()``). ``detections``: one
    mapping per image with ``image_id``, ``boxes``, ``scores`` and ``labels`` (torchvision's detection
    output plus the image id); tensors, arrays or lists. Every detection's image must be in ``ground_truth``.
    The classes evaluated are the labels of either; see the module's doc for the rules.

    Example:
        >>> gt = [{"image_id": "a", "boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]}]
        >>> dets = [{"image_id": "a", "boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}]
        >>> result = voc07_ap(dets, gt)  # recall 1/2 at precision 1: 6 of the 11 points
        >>> round(result.mAP, 2), round(result.per_class[1], 2)
        (54.55, 54.55)
    """
    prepared = _Prepared(detections, ground_truth)
    per_class = {label: prepared.ap(label, iou_threshold, use_07_metric) for label in prepared.labels}
    scored = [ap for ap in per_class.values() if not np.isnan(ap)]
    return VOCAP(per_class, float(np.mean(scored)) if scored else float("nan"))


def voc_metrics(
    detections: Iterable[Mapping[str, Any]],
    ground_truth: Iterable[Mapping[str, Any]],
    use_07_metric: bool = True,
) -> dict[str, float]:
    """detectron2's VOC numbers (percent): ``AP`` (the mean over IoU 0.50:0.05:0.95 of the mean AP), ``AP50``, ``AP75``.

    detectron2 evaluates VOC2007 test with the 07 metric (``use_07_metric=True``), as MoCo reports it.
    Arguments as :func:`voc07_ap`.

    Example:
        >>> gt = [{"image_id": 1, "boxes": [[0, 0, 10, 10]], "labels": [3]}]
        >>> voc_metrics([{"image_id": 1, "boxes": [[0, 0, 10, 10]], "scores": [1.0], "labels": [3]}], gt)
        {'AP': 100.0, 'AP50': 100.0, 'AP75': 100.0}
    """
    prepared = _Prepared(detections, ground_truth)
    means = {}
    for threshold in COCO_STYLE_THRESHOLDS:
        aps = [prepared.ap(label, threshold, use_07_metric) for label in prepared.labels]
        scored = [ap for ap in aps if not np.isnan(ap)]
        means[threshold] = float(np.mean(scored)) if scored else float("nan")
    return {"AP": float(np.mean(list(means.values()))), "AP50": means[0.5], "AP75": means[0.75]}


class _Prepared:
    """Detections and ground truth grouped by class, each detection with its best-overlapping box (any threshold)."""

    def __init__(self, detections: Iterable[Mapping[str, Any]], ground_truth: Iterable[Mapping[str, Any]]) -> None:
        # label -> image -> (boxes, difficult)
        self.truth: dict[int, dict[Any, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
        self.positives: dict[int, int] = defaultdict(int)
        images = set()
        for item in ground_truth:
            image_id = item["image_id"]
            if image_id in images:
                raise ValueError(f"ground truth lists image {image_id!r} twice: give each image once")
            images.add(image_id)
            boxes, labels = _boxes(item, "ground truth"), _vector(item["labels"], np.int64)
            difficult = _vector(item.get("difficult", np.zeros(len(labels), dtype=bool)), np.bool_)
            if not len(boxes) == len(labels) == len(difficult):
                raise ValueError(
                    f"ground truth of image {image_id!r}: {len(boxes)} boxes, {len(labels)} labels and "
                    f"{len(difficult)} difficult flags; give one of each per object"
                )
            for label in np.unique(labels).tolist():
                chosen = labels == label
                self.truth[label][image_id] = (boxes[chosen], difficult[chosen])
                self.positives[label] += int((~difficult[chosen]).sum())

        # label -> (scores, image of each detection, index of its best box or -1, that IoU), in input order
        found: dict[int, list[tuple[float, Any, int, float]]] = defaultdict(list)
        for item in detections:
            image_id = item["image_id"]
            if image_id not in images:
                raise ValueError(
                    f"detections name image {image_id!r}, which the ground truth does not have: "
                    "give the ground truth of every image evaluated, with the same image ids"
                )
            boxes, labels = _boxes(item, "detections"), _vector(item["labels"], np.int64)
            scores = _vector(item["scores"], np.float64)
            if not len(boxes) == len(labels) == len(scores):
                raise ValueError(
                    f"detections of image {image_id!r}: {len(boxes)} boxes, {len(labels)} labels and "
                    f"{len(scores)} scores; give one of each per detection"
                )
            for box, label, score in zip(boxes, labels.tolist(), scores.tolist()):
                truth = self.truth.get(label, {}).get(image_id)
                best, overlap = -1, 0.0
                if truth is not None:
                    ious = _iou(box, truth[0])
                    best = int(np.argmax(ious))
                    overlap = float(ious[best])
                found[label].append((score, image_id, best, overlap))
        self.detections = found
        self.labels = sorted(set(self.truth) | set(found))

    def ap(self, label: int, iou_threshold: float, use_07_metric: bool) -> float:
        positives = self.positives.get(label, 0)
        if positives == 0:
            return float("nan")
        entries = self.detections.get(label, [])
        order = np.argsort(-np.array([entry[0] for entry in entries], dtype=np.float64), kind="stable")
        taken = {image: np.zeros(len(boxes), dtype=bool) for image, (boxes, _) in self.truth[label].items()}
        tp, fp = np.zeros(len(entries)), np.zeros(len(entries))
        for rank, d in enumerate(order.tolist()):
            _, image_id, best, overlap = entries[d]
            if best < 0 or overlap <= iou_threshold:
                fp[rank] = 1
            elif self.truth[label][image_id][1][best]:
                continue  # matched a difficult box: neither a hit nor a miss
            elif taken[image_id][best]:
                fp[rank] = 1  # a duplicate
            else:
                tp[rank] = 1
                taken[image_id][best] = True
        hits, misses = np.cumsum(tp), np.cumsum(fp)
        recall = hits / positives
        precision = hits / np.maximum(hits + misses, np.finfo(np.float64).eps)
        return 100.0 * (_eleven_point(recall, precision) if use_07_metric else _area(recall, precision))


def _eleven_point(recall: np.ndarray, precision: np.ndarray) -> float:
    return float(sum(precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.arange(11) / 10) / 11)


def _area(recall: np.ndarray, precision: np.ndarray) -> float:
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def _vector(values: Any, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def _boxes(item: Mapping[str, Any], what: str) -> np.ndarray:
    boxes = item["boxes"]
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{what} of image {item['image_id']!r}: boxes must be (K, 4) x1, y1, x2, y2, got {boxes.shape}"
        )
    return boxes
