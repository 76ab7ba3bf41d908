"""Faster / Mask R-CNN on our ResNets, for transfer to detection and instance segmentation (issue 25).

:func:`build_detector` wraps one of our ResNets (:mod:`hallucinator.backbones`: any depth, width, stem)
in torchvision's ``FasterRCNN`` (``MaskRCNN`` for ``task="instance-segmentation"``); channels and strides
are read from the backbone by a dummy forward through its stages, never assumed. The backbone's modules
are used as they are (not copied): plain ``nn.BatchNorm2d``, trained, every stage trainable (detectron2's
``FREEZE_AT 0``); the training loop may convert them with ``nn.SyncBatchNorm.convert_sync_batchnorm``.
Images are float RGB in ``[0, 1]``, normalised inside the detector by ``image_mean`` / ``image_std``
(torchvision's ImageNet values, as MoCo's configs).

``arch="c4"`` is the paper's R50-C4 (MoCo's detectron2 ``Base-RCNN-C4-BN`` with ``Res5ROIHeadsExtraNorm``):

- trunk: stem + ``layer1..layer3`` (``res4``, one feature map); the RPN (torchvision's ``RPNHead``: 3x3 conv,
  objectness and deltas, as detectron2's) runs on it with anchors ``stride * (2, 4, 8, 16, 32)`` and aspect
  ratios 0.5 / 1 / 2 (32..512 at stride 16, detectron2's), 12000 / 6000 proposals before NMS (detectron2's);
- RoIAlign 14 x 14 on ``res4``: torchvision's ``MultiScaleRoIAlign`` always calls ``roi_align`` with
  ``aligned=False`` and guesses the scale from the feature size, so :class:`AlignedRoIAlign` (a subclass,
  to satisfy torchvision's type check) calls ``torchvision.ops.roi_align`` with ``aligned=True``,
  ``sampling_ratio=0`` and the exact ``1 / stride``: detectron2's ``ROIAlignV2``;
- box head: ``layer4`` (``res5``, loaded from the checkpoint too) then a new BatchNorm (MoCo's extra norm,
  ``res5_extra_norm``), global average pooling and ``FastRCNNPredictor(res5 channels, num_classes + 1)``;
- mask branch (:class:`Res5RoIHeads`): in training the ``res5`` output (7 x 7 per RoI, before pooling) of the
  positive sampled proposals, taken from the box branch's own forward (not recomputed), goes through
  torchvision's ``MaskRCNNPredictor`` (2x2 stride-2 ConvTranspose to 256 channels, ReLU, 1x1 conv) to 14 x 14
  masks (:class:`Res5MaskPredictor`); at inference ``res5`` runs again on the pooled final boxes. Both as
  detectron2's ``Res5ROIHeads``. Sharing the pass also normalises the mask features with the BatchNorm statistics
  of all sampled RoIs, as detectron2 does; torchvision's separate mask branch (``mask_roi_pool`` -> ``mask_head``)
  would re-run res5 on the positives alone and update its running statistics twice a step.

The box and mask predictors are initialised as detectron2's. Differences from detectron2 that remain: the mask
predictor has ``num_classes + 1`` outputs (torchvision's loss indexes them by label; the background one is
unused), torchvision's box-regression losses (smooth-L1 with beta 1/9 in the RPN and the box head, where
detectron2's default is L1) and its resizing (images padded to a multiple of 32; detectron2's C4 pads none).

``arch="fpn"``: torchvision's standard ResNet-FPN Faster / Mask R-CNN (``BackboneWithFPN`` over ``layer1..4``
with the stages' channels, ``TwoMLPHead``, ``MaskRCNNHeads``, ``MultiScaleRoIAlign`` with
``aligned=False``), anchors ``8 * stride`` per level (32..512 with the ImageNet stem).

:func:`backbone_state` and :func:`load_backbone_weights` map the checkpoint's backbone tensors (torchvision
ResNet names: ``conv1.weight``, ``layer4.2.bn3.running_mean``, ...) to where they live in the detector
(``backbone.*`` and ``roi_heads.box_head.res5.*`` for C4, ``backbone.body.*`` for FPN).

Example:
    >>> backbone, config = load_pretrained("runs/in200/checkpoints/last.ckpt")
    >>> detector = build_detector(backbone, num_classes=20, min_size=(480, 512, 800))
    >>> losses = detector(images, targets)  # training mode: loss_classifier, loss_box_reg, loss_objectness, ...
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import MultiScaleRoIAlign, roi_align

__all__ = [
    "ARCHS",
    "TASKS",
    "AlignedRoIAlign",
    "Res5BoxPredictor",
    "Res5MaskPredictor",
    "Res5RoIHeads",
    "backbone_state",
    "build_detector",
    "load_backbone_weights",
    "stage_geometry",
]

Task = Literal["detection", "instance-segmentation"]
Arch = Literal["c4", "fpn"]
TASKS: tuple[str, ...] = ("detection", "instance-segmentation")
ARCHS: tuple[str, ...] = ("c4", "fpn")
STAGES = ("layer1", "layer2", "layer3", "layer4")
# torchvision's ImageNet RGB statistics, which MoCo's detectron2 configs use (PIXEL_MEAN / PIXEL_STD)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
C4_ANCHOR_STRIDES = (2, 4, 8, 16, 32)  # anchor sizes in strides of res4: detectron2's 32..512 at stride 16
FPN_ANCHOR_STRIDES = 8  # one size per level, 8 strides: detectron2's 32 (stride 4) .. 512 (stride 64)
C4_POOL_SIZE = 14  # detectron2 C4's POOLER_RESOLUTION; res5 halves it to 7
MASK_HEAD_CHANNELS = 256  # detectron2's ROI_MASK_HEAD.CONV_DIM, torchvision's dim_reduced
GEOMETRY_PROBE = 128  # side of the dummy image that measures the strides (a multiple of the largest, 32)


def stage_geometry(backbone: nn.Module) -> dict[str, tuple[int, int]]:
    """``{stage: (channels, stride)}`` of ``layer1..layer4``, measured by a dummy forward (no statistics updated).

    Example:
        >>> stage_geometry(backbones.build("resnet18", cifar_stem=True, width=8))["layer3"]
        (32, 4)
    """
    missing = [name for name in ("conv1", *STAGES) if not hasattr(backbone, name)]
    if missing:
        raise ValueError(
            f"the detector needs a ResNet backbone (stem and layer1..layer4), {type(backbone).__name__} lacks "
            f"{', '.join(missing)}; pre-train a resnet18 / resnet50 (model.backbone)"
        )
    getter = IntermediateLayerGetter(backbone, {name: name for name in STAGES})
    modes = [(module, module.training) for module in backbone.modules()]
    backbone.eval()  # training-mode BatchNorm would fold the dummy image into the loaded running statistics
    parameter = next(backbone.parameters())
    probe = torch.zeros(1, 3, GEOMETRY_PROBE, GEOMETRY_PROBE, device=parameter.device, dtype=parameter.dtype)
    try:
        with torch.no_grad():
            outputs = getter(probe)
    finally:
        for module, training in modes:
            module.training = training
    return {name: (out.shape[1], GEOMETRY_PROBE // out.shape[-1]) for name, out in outputs.items()}


class AlignedRoIAlign(MultiScaleRoIAlign):
    """RoIAlign on ONE feature map with ``aligned=True`` and a known scale: detectron2's ``ROIAlignV2``.

    A ``MultiScaleRoIAlign`` (torchvision's detectors accept no other pooler type) whose ``forward``
    calls ``torchvision.ops.roi_align`` on ``features[featmap_name]`` at ``spatial_scale = 1 / stride``.

    Example:
        >>> pool = AlignedRoIAlign("0", output_size=14, stride=16)
        >>> pool({"0": torch.randn(1, 8, 50, 50)}, [torch.tensor([[0.0, 0.0, 64.0, 64.0]])], [(800, 800)]).shape
        torch.Size([1, 8, 14, 14])
    """

    def __init__(self, featmap_name: str, output_size: int, stride: int, sampling_ratio: int = 0) -> None:
        super().__init__([featmap_name], output_size, sampling_ratio)
        self.spatial_scale = 1.0 / stride

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]] | None = None
    ) -> Tensor:
        return roi_align(
            x[self.featmap_names[0]],
            boxes,
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            aligned=True,
        )


class Res5BoxPredictor(FastRCNNPredictor):
    """``FastRCNNPredictor`` on the global average of the ``res5`` map of each RoI (detectron2's ``Res5ROIHeads``).

    Initialised as detectron2's ``FastRCNNOutputLayers``: scores from N(0, 0.01), deltas from N(0, 0.001), no bias.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)
        for layer, std in ((self.cls_score, 0.01), (self.bbox_pred, 0.001)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(x.mean(dim=(2, 3)))


class Res5MaskPredictor(MaskRCNNPredictor):
    """torchvision's ``MaskRCNNPredictor`` (2x2 stride-2 ConvTranspose, ReLU, 1x1 conv) on ``res5`` maps.

    Initialised as detectron2's C4 ``MaskRCNNConvUpsampleHead``: zero biases and mask logits from N(0, 0.001),
    so that the mask loss starts at log 2 (torchvision's Kaiming-initialised logits start it several times higher).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, MASK_HEAD_CHANNELS, num_classes)
        nn.init.normal_(self.mask_fcn_logits.weight, std=0.001)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.zeros_(layer.bias)


class Res5RoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` whose mask branch reads the box branch's ``res5`` features (detectron2's C4).

    ``box_head`` is ``res5`` (returns ``(K, C, 7, 7)``), ``box_predictor`` pools it. The mask predictor is
    the only mask module: ``mask_roi_pool`` and ``mask_head`` stay ``None``, so torchvision's own mask
    branch is off and :meth:`forward` adds it. Training: ``mask_predictor(res5[positive sampled RoIs])``,
    the very tensor the box losses use (the RoIs pass ``res5`` once, as in detectron2). Inference: the
    final boxes are pooled and pass ``res5`` again, as detectron2's ``forward_with_given_boxes``.
    Built from the ``RoIHeads`` torchvision made for the detector (its matcher, sampler, thresholds).
    """

    def __init__(self, heads: RoIHeads, mask_predictor: nn.Module | None = None) -> None:
        super().__init__(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
        )
        self.mask_predictor = mask_predictor

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.mask_predictor is None:
            return super().forward(features, proposals, image_shapes, targets)
        if not self.training:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            boxes = [detections["boxes"] for detections in result]
            mask_logits = self.mask_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))
            probabilities = maskrcnn_inference(mask_logits, [detections["labels"] for detections in result])
            for detections, probability in zip(result, probabilities, strict=True):
                detections["masks"] = probability
            return result, losses
        if targets is None or any("masks" not in target for target in targets):
            raise ValueError("instance segmentation trains on targets with masks (uint8 N x H x W per image)")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        res5 = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(res5)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        positive = [label > 0 for label in labels]
        mask_logits = self.mask_predictor(res5[torch.cat(positive)])
        loss_mask = maskrcnn_loss(
            mask_logits,
            [boxes[keep] for boxes, keep in zip(proposals, positive, strict=True)],
            [target["masks"] for target in targets],
            [target["labels"] for target in targets],
            [matched[keep] for matched, keep in zip(matched_idxs, positive, strict=True)],
        )
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}


def _c4_parts(
    backbone: nn.Module, geometry: dict[str, tuple[int, int]], num_classes: int, extra_norm: bool
) -> tuple[nn.Module, dict[str, Any], tuple[int, ...]]:
    """The res4 trunk, the RoI-head modules and the default anchor sizes of R-C4."""
    res4_channels, stride = geometry["layer3"]
    res5_channels = geometry["layer4"][0]
    trunk = IntermediateLayerGetter(backbone, {"layer3": "0"})
    trunk.out_channels = res4_channels  # what torchvision's detectors size the RPN head by
    res5: OrderedDict[str, nn.Module] = OrderedDict(res5=backbone.get_submodule("layer4"))
    if extra_norm:
        res5["norm"] = nn.BatchNorm2d(res5_channels)
    heads = {
        "box_roi_pool": AlignedRoIAlign("0", C4_POOL_SIZE, stride),
        "box_head": nn.Sequential(res5),
        "box_predictor": Res5BoxPredictor(res5_channels, num_classes + 1),
        "rpn_pre_nms_top_n_train": 12000,  # detectron2's RPN.PRE_NMS_TOPK_TRAIN / _TEST (one level)
        "rpn_pre_nms_top_n_test": 6000,
    }
    return trunk, heads, tuple(stride * multiple for multiple in C4_ANCHOR_STRIDES)


def build_detector(
    backbone: nn.Module,
    *,
    num_classes: int,
    task: Task = "detection",
    arch: Arch = "c4",
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    anchor_sizes: Sequence[int] | None = None,
    res5_extra_norm: bool = True,
    fpn_channels: int = 256,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """torchvision's Faster R-CNN (``MaskRCNN`` for instance segmentation) on ``backbone``, R-C4 or R-FPN.

    Args:
        backbone: one of our ResNets (any depth, width, stem); its modules become the detector's.
        num_classes: object classes, background excluded (labels ``1 .. num_classes``).
        task: ``detection`` (boxes) or ``instance-segmentation`` (boxes and masks).
        arch: ``c4`` (the paper's: RPN on res4, res5 as the RoI head) or ``fpn``.
        min_size: shorter side of the resized image; a tuple is sampled from in training (detectron2's
            multi-scale training), its last value is the test size.
        max_size: longer side at most.
        image_mean, image_std: RGB normalisation of the ``[0, 1]`` images.
        anchor_sizes: anchor sides in input pixels; C4: any number on its one map (default
            ``stride * (2, 4, 8, 16, 32)``), FPN: one per level, 5 (default ``8 * stride`` of each level).
        res5_extra_norm: C4 only: MoCo's BatchNorm after res5 (``Res5ROIHeadsExtraNorm``).
        fpn_channels: FPN only: channels of the pyramid.
        detector_kwargs: passed to torchvision's ``FasterRCNN`` / ``MaskRCNN`` (``box_detections_per_img``, ...).

    Example:
        >>> detector = build_detector(backbones.build("resnet50"), num_classes=20)  # R50-C4 for VOC
        >>> detector.train(); losses = detector(images, targets)  # dict of 4 losses
        >>> detector.eval(); detections = detector(images)  # [{boxes, labels, scores}] per image
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown detector architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes counts the object classes without the background, got {num_classes}")
    geometry = stage_geometry(backbone)
    masks = task == "instance-segmentation"
    if arch == "c4":
        features, heads, default_sizes = _c4_parts(backbone, geometry, num_classes, res5_extra_norm)
        if masks:
            res5_channels = geometry["layer4"][0]
            # torchvision's own mask branch is replaced by Res5RoIHeads below: an empty head keeps it from building one
            heads.update(mask_head=nn.Identity(), mask_predictor=Res5MaskPredictor(res5_channels, num_classes + 1))
        sizes = tuple(anchor_sizes) if anchor_sizes is not None else default_sizes
        anchors = AnchorGenerator((sizes,), (ASPECT_RATIOS,))
        classes = None  # the predictors above are given
    else:
        features = BackboneWithFPN(
            backbone,
            {name: str(level) for level, name in enumerate(STAGES)},
            [geometry[name][0] for name in STAGES],
            fpn_channels,
        )
        strides = [geometry[name][1] for name in STAGES]
        strides.append(2 * strides[-1])  # the max-pooled level torchvision's FPN adds
        sizes = tuple(anchor_sizes) if anchor_sizes is not None else tuple(FPN_ANCHOR_STRIDES * s for s in strides)
        if len(sizes) != len(strides):
            raise ValueError(
                f"anchor_sizes: an FPN takes one size per level, {len(strides)}; got {len(sizes)}: {sizes}"
            )
        anchors = AnchorGenerator(tuple((size,) for size in sizes), (ASPECT_RATIOS,) * len(strides))
        heads = {}
        classes = num_classes + 1
    detector_class = MaskRCNN if masks else FasterRCNN
    detector = detector_class(
        features,
        classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchors,
        **{**heads, **detector_kwargs},
    )
    if arch == "c4":
        mask_predictor = detector.roi_heads.mask_predictor if masks else None
        detector.roi_heads = Res5RoIHeads(detector.roi_heads, mask_predictor)
    return detector


def _backbone_modules(detector: FasterRCNN) -> dict[str, nn.Module]:
    """``{backbone-name prefix: detector module}``: where the backbone's tensors live in ``detector``."""
    if isinstance(detector.backbone, BackboneWithFPN):
        return {"": detector.backbone.body}
    return {"": detector.backbone, "layer4.": detector.roi_heads.box_head.res5}


def _backbone_tensors(detector: FasterRCNN) -> dict[str, Tensor]:
    return {
        prefix + name: tensor
        for prefix, module in _backbone_modules(detector).items()
        for name, tensor in module.state_dict(keep_vars=True).items()
    }


def backbone_state(detector: FasterRCNN) -> dict[str, Tensor]:
    """The detector's backbone tensors (BatchNorm statistics included) under the backbone's own names.

    The inverse of :func:`load_backbone_weights`: what a fine-tuned backbone saves as.

    Example:
        >>> state = backbone_state(detector)
        >>> backbones.build("resnet50").load_state_dict(state)  # the fine-tuned ResNet
    """
    return {name: tensor.detach() for name, tensor in _backbone_tensors(detector).items()}


def load_backbone_weights(detector: FasterRCNN, state: Mapping[str, Tensor], source: str) -> int:
    """Copy ``state`` (torchvision ResNet names) into the detector's backbone by name; the number of tensors loaded.

    Every backbone tensor of the detector (parameters, BatchNorm running statistics and
    ``num_batches_tracked``) must be in ``state`` with its shape; nothing is copied otherwise.
    ``source`` names where ``state`` came from, for the error.

    Example:
        >>> backbone, config = load_pretrained(path)
        >>> detector = build_detector(backbones.build(config.model.backbone, ...), num_classes=20)
        >>> load_backbone_weights(detector, backbone.state_dict(), str(path))  # a ResNet-50: 53 convs, 53 x 5 BN tensors
        318
    """
    targets = _backbone_tensors(detector)
    fix = (
        "build the detector on the backbone the checkpoint was pre-trained with (its config's model.backbone, "
        "model.width, model.cifar_stem), or pass the checkpoint of this backbone"
    )
    for name, target in targets.items():
        if name not in state:
            raise ValueError(
                f"{source}: backbone tensor {name} {tuple(target.shape)} is missing from the checkpoint; {fix}"
            )
        if state[name].shape != target.shape:
            raise ValueError(
                f"{source}: backbone tensor {name} has shape {tuple(state[name].shape)} in the checkpoint, "
                f"{tuple(target.shape)} in the detector; {fix}"
            )
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(state[name])
    return len(targets)
