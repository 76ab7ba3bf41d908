"""COCO's AP of torchvision-style predictions, computed by COCO's own evaluation code.

The evaluation is ``faster-coco-eval`` (a C++ port of ``pycocotools``' ``COCOeval``, which it matches
to the digit) when installed, else ``pycocotools``; ``backend=`` picks one. Predictions are what
torchvision's detection models return for each image (``boxes`` ``x1, y1, x2, y2``, ``scores``,
``labels`` ``1 .. C``, and for ``segm`` ``masks``) plus its ``image_id``; labels map to COCO's
category ids in ascending id order, the rule of :class:`~hallucinator.transfer.datasets.CocoDetection`.

Example:
    >>> val = CocoDetection("datasets/coco", "val2017")  # doctest: +SKIP
    >>> predictions = [{"image_id": t["image_id"], **model([image])[0]} for image, t in val]  # doctest: +SKIP
    >>> coco_metrics(predictions, val)["AP"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hallucinator.transfer.datasets import CocoDetection, contiguous_categories, mask_api

__all__ = ["METRICS", "coco_metrics", "to_coco_results"]

# the order of COCOeval.stats for boxes and masks
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

IouType = Literal["bbox", "segm"]
Backend = Literal["auto", "faster-coco-eval", "pycocotools"]


def coco_metrics(
    predictions: Iterable[Mapping[str, Any]],
    ground_truth: str | Path | Mapping[str, Any] | CocoDetection,
    iou_type: IouType = "bbox",
    *,
    backend: Backend = "auto",
) -> dict[str, float]:
    """COCO's 12 summary numbers of ``predictions`` in percent: ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ... ``ARl``.

    ``ground_truth``: an instances JSON file, its loaded dict, or a :class:`CocoDetection` (its file).
    Every image of the ground truth is evaluated; an image without predictions has missed its objects.
    A number without ground truth to measure (``APl`` when no object is large) is NaN, as in detectron2.

    Example:
        >>> gt = {"images": [{"id": 1, "width": 40, "height": 40}], "categories": [{"id": 5, "name": "cat"}],
        ...       "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [2, 2, 20, 20],
        ...                        "area": 400, "iscrowd": 0}]}
        >>> found = [{"image_id": 1, "boxes": [[2, 2, 22, 22]], "scores": [0.9], "labels": [1]}]
        >>> coco_metrics(found, gt)["AP"], coco_metrics([], gt)["AP"]  # doctest: +SKIP
        (100.0, 0.0)
    """
    coco_class, eval_class = _backend(backend)
    data = _ground_truth(ground_truth)
    categories = contiguous_categories(data["categories"])
    results = to_coco_results(predictions, [c["id"] for c in categories], iou_type)
    images = {image["id"] for image in data["images"]}
    unknown = sorted({result["image_id"] for result in results} - images, key=str)
    if unknown:
        raise ValueError(
            f"predictions name {len(unknown)} images that the ground truth does not have (first: {unknown[0]!r}): "
            "predict on the ground truth's images and keep their image ids"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print progress and tables
        truth = coco_class()
        truth.dataset = data
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # pycocotools' loadRes cannot take an empty list; nothing found is a valid (all-zero) result
            found = coco_class()
            found.dataset = {"images": data["images"], "categories": data["categories"], "annotations": []}
            found.createIndex()
        evaluation = eval_class(truth, found, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) * 100 if value >= 0 else float("nan") for name, value in zip(METRICS, evaluation.stats)}


def to_coco_results(
    predictions: Iterable[Mapping[str, Any]], category_ids: Sequence[int], iou_type: IouType = "bbox"
) -> list[dict[str, Any]]:
    """Predictions as COCO's results list (what ``loadRes`` and the results JSON files hold).

    ``category_ids[label - 1]`` is a label's COCO id (``CocoDetection.category_ids``). ``segm`` takes
    ``masks`` ``(K, 1, H, W)`` or ``(K, H, W)``: probabilities (Mask R-CNN's, cut at 0.5) or 0/1.

    Example:
        >>> to_coco_results([{"image_id": 7, "boxes": [[1.0, 2.0, 5.0, 8.0]], "scores": [0.5], "labels": [2]}],
        ...                 category_ids=[1, 3])
        [{'image_id': 7, 'category_id': 3, 'score': 0.5, 'bbox': [1.0, 2.0, 4.0, 6.0]}]
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    results = []
    for prediction in predictions:
        image_id = prediction["image_id"]
        boxes = _numpy(prediction["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _numpy(prediction["scores"]).astype(np.float64).reshape(-1)
        labels = _numpy(prediction["labels"]).astype(np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"prediction for image {image_id!r}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 1 or labels.max() > len(category_ids)):
            raise ValueError(
                f"prediction for image {image_id!r} has label {labels.min() if labels.min() < 1 else labels.max()}; "
                f"labels run 1 .. {len(category_ids)} (0 is the background, never a detection)"
            )
        segmentations = _encode_masks(prediction, len(labels)) if iou_type == "segm" else None
        for k, (box, score, label) in enumerate(zip(boxes.tolist(), scores.tolist(), labels.tolist())):
            result = {"image_id": image_id, "category_id": category_ids[label - 1], "score": score}
            if segmentations is None:
                result["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                result["segmentation"] = segmentations[k]
            results.append(result)
    return results


def _backend(backend: Backend) -> tuple[Any, Any]:
    """COCO's (``COCO``, ``COCOeval``) classes from the library chosen."""
    if backend not in ("auto", "faster-coco-eval", "pycocotools"):
        raise ValueError(f"backend must be 'auto', 'faster-coco-eval' or 'pycocotools', got {backend!r}")
    if backend in ("auto", "faster-coco-eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            if backend == "faster-coco-eval":
                raise ImportError("backend='faster-coco-eval' needs it: pip install faster-coco-eval") from None
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO's AP needs faster-coco-eval or pycocotools: pip install faster-coco-eval") from None
    return COCO, COCOeval


def _ground_truth(ground_truth: str | Path | Mapping[str, Any] | CocoDetection) -> dict[str, Any]:
    if isinstance(ground_truth, CocoDetection):
        ground_truth = ground_truth.annotation_file
    if isinstance(ground_truth, (str, Path)):
        path = Path(ground_truth).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass a COCO instances JSON file, its dict or a CocoDetection")
        data = json.loads(path.read_text())
    else:
        data = dict(ground_truth)
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"the ground truth has no {', '.join(missing)}: pass a COCO *instances* file")
    return data


def _encode_masks(prediction: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    if "masks" not in prediction:
        raise ValueError(f"prediction for image {prediction['image_id']!r} has no masks, which iou_type='segm' needs")
    masks = _numpy(prediction["masks"])
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3 or len(masks) != count:
        raise ValueError(
            f"prediction for image {prediction['image_id']!r}: masks must be (K, H, W) or (K, 1, H, W) for its "
            f"{count} detections, got {masks.shape}"
        )
    if count == 0:
        return []
    binary = masks > 0.5 if np.issubdtype(masks.dtype, np.floating) else masks != 0
    encoded = mask_api().encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    # str counts: the results can be written as JSON, and both libraries read them so
    return [{"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")} for rle in encoded]


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
