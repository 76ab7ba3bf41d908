"""The fine-tuned detector's AP on the test split: COCO's through :func:`coco_metrics`, and for VOC also VOC07's.

Example:
    >>> test_set = VOCDetection("VOCdevkit", image_set="test")
    >>> evaluate(detector, test_set, "detection", test_size=800)["voc07_AP50"]  # percent
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from hallucinator.data import batch_loader
from hallucinator.transfer.coco_eval import coco_metrics
from hallucinator.transfer.data import DetectionBatches
from hallucinator.transfer.datasets import CocoDetection, DetectionDataset, VOCDetection
from hallucinator.transfer.voc_ap import voc_metrics

__all__ = ["Progress", "evaluate", "predict", "voc_as_coco"]

# wraps the test batches for display, e.g. in a progress bar (``hallucinator transfer`` passes tqdm's)
Progress = Callable[[Iterable[Any]], Iterable[Any]]


@torch.inference_mode()
def predict(
    detector: nn.Module,
    dataset: DetectionDataset,
    *,
    test_size: int,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """The detector's output for each image of ``dataset`` in order, on the CPU, with its ``image_id``.

    A generator: an image's masks (``(K, 1, H, W)`` probabilities) are gone once the caller moved on.
    """
    detector.eval().to(device)
    transform: Any = detector.transform  # torchvision's GeneralizedRCNNTransform
    train_sizes = transform.min_size
    transform.min_size = (test_size,)  # torchvision's transform tests at its last size
    loader = batch_loader(
        DetectionBatches(dataset),
        batch_size,
        shuffle=False,
        drop_last=False,
        rank=0,
        world_size=1,
        num_workers=num_workers,
    )
    try:
        for images, targets in progress(loader) if progress else loader:
            outputs = detector([image.to(device).float() / 255 for image in images])
            for output, target in zip(outputs, targets):
                yield {"image_id": target["image_id"], **{key: value.cpu() for key, value in output.items()}}
    finally:
        transform.min_size = train_sizes


def _boxes_kept(predictions: Iterable[dict[str, Any]], kept: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``predictions`` passed on, their boxes, scores and labels appended to ``kept`` (for a second evaluation)."""
    for prediction in predictions:
        kept.append({key: prediction[key] for key in ("image_id", "boxes", "scores", "labels")})
        yield prediction


def voc_as_coco(dataset: VOCDetection) -> tuple[dict[str, Any], dict[int | str, int]]:
    """A VOC split as COCO's ground truth, and the COCO image id of each VOC id.

    ``difficult`` objects become crowd regions: COCO's evaluation then neither counts nor penalises them,
    as VOC's does not (``pycocotools`` reads its ``ignore`` flag from ``iscrowd``).
    """
    ids = {record.image_id: i + 1 for i, record in enumerate(dataset.records)}
    images = [{"id": ids[r.image_id], "width": r.width, "height": r.height} for r in dataset.records]
    annotations: list[dict[str, Any]] = []
    for record in dataset.records:
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ids[record.image_id],
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, ids


def evaluate(
    detector: nn.Module,
    test_set: DetectionDataset,
    task: str,
    *,
    test_size: int,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> dict[str, float]:
    """The detector's AP on ``test_set`` in percent.

    ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75`` (COCO's, IoU 0.50:0.95, by :func:`coco_metrics`); for
    ``instance-segmentation`` also ``segm_AP``, ``segm_AP50``, ``segm_AP75``; for a VOC split also
    ``voc_AP``, ``voc_AP50``, ``voc_AP75`` (detectron2's VOC evaluation: VOC AP averaged over IoU 0.50:0.95,
    with the VOC07 11-point metric at every IoU, as detectron2 evaluates VOC2007 test) and ``voc07_AP50``
    (the paper's VOC number, which is ``voc_AP50``).
    """
    predictions: Iterable[dict[str, Any]] = predict(
        detector,
        test_set,
        test_size=test_size,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
    )
    figures: dict[str, float] = {}
    if isinstance(test_set, VOCDetection):
        boxes = list(predictions)
        ground_truth, ids = voc_as_coco(test_set)
        coco = coco_metrics([{**p, "image_id": ids[p["image_id"]]} for p in boxes], ground_truth, "bbox")
        voc = voc_metrics(boxes, test_set.targets(), use_07_metric=True)
        figures.update({f"voc_{name}": value for name, value in voc.items()}, voc07_AP50=voc["AP50"])
    else:
        assert isinstance(test_set, CocoDetection)
        kept: list[dict[str, Any]] = []
        if task == "instance-segmentation":
            # the masks are encoded image by image as the predictions stream in: COCO's val2017 at full size
            # would not fit in memory; the boxes are kept for the box AP that follows
            segm = coco_metrics(_boxes_kept(predictions, kept), test_set, "segm")
            figures.update({f"segm_{name}": segm[name] for name in ("AP", "AP50", "AP75")})
        else:
            kept = list(predictions)
        coco = coco_metrics(kept, test_set, "bbox")
    figures.update({f"bbox_{name}": coco[name] for name in ("AP", "AP50", "AP75")})
    return figures
