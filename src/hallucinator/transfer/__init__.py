"""Transfer to detection and instance segmentation (issue 25): data and evaluation, after MoCo's detectron2 protocol.

- :func:`make_detection_set`: a small COCO + VOC set of CIFAR-10 test objects on noise, made here
  (``hallucinator make-detection-set``), for runs and tests without COCO or VOC at hand.
- :class:`CocoDetection`, :class:`VOCDetection`: COCO and PASCAL VOC in their own layouts, as
  ``(image, target)`` samples for torchvision's detection models.
- :func:`voc07_ap`, :func:`voc_metrics`: VOC07's 11-point AP per class and mAP; detectron2's VOC AP / AP50 / AP75.
- :func:`coco_metrics`: COCO's AP (boxes or masks) through faster-coco-eval or pycocotools.
- :func:`build_detector`: torchvision's Faster / Mask R-CNN on our ResNets, R50-C4 as the paper (res5 as the
  RoI head, the mask branch on its features) or R-FPN; :func:`load_backbone_weights` and
  :func:`backbone_state` map the checkpoint's ResNet tensors to and from the detector by name.
- :func:`transfer`: fine-tunes a checkpoint as that detector after MoCo's detectron2 protocol and evaluates it
  (``hallucinator transfer``; the run in :mod:`~hallucinator.transfer.train`, its data in
  :mod:`~hallucinator.transfer.data`, the LightningModule in :mod:`~hallucinator.transfer.module`, the final AP
  in :mod:`~hallucinator.transfer.evaluation`); :func:`load_transfer_config` reads its recipes
  (``configs/transfer/``, :mod:`~hallucinator.transfer.config`).

This package sits beside :mod:`hallucinator.evaluation`: it may use the core modules, the data layer
and the engine, never evaluation, export or the CLI.
"""

from hallucinator.transfer.coco_eval import coco_metrics, to_coco_results
from hallucinator.transfer.config import TransferConfig, load_transfer_config
from hallucinator.transfer.datasets import VOC_CLASSES, CocoDetection, DatasetReport, VOCDetection
from hallucinator.transfer.detection_set import DetectionSet, make_detection_set
from hallucinator.transfer.models import backbone_state, build_detector, load_backbone_weights
from hallucinator.transfer.train import TransferResult, transfer
from hallucinator.transfer.voc_ap import VOCAP, voc07_ap, voc_metrics

__all__ = [
    "VOCAP",
    "VOC_CLASSES",
    "CocoDetection",
    "DatasetReport",
    "DetectionSet",
    "TransferConfig",
    "TransferResult",
    "VOCDetection",
    "backbone_state",
    "build_detector",
    "coco_metrics",
    "load_backbone_weights",
    "load_transfer_config",
    "make_detection_set",
    "to_coco_results",
    "transfer",
    "voc07_ap",
    "voc_metrics",
]
