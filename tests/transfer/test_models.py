"""The detectors of hallucinator.transfer.models: R-C4 / R-FPN on our ResNets, loading by name, the C4 mask branch."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from hallucinator import backbones
from hallucinator.engine.checkpoint import BACKBONE_PREFIX, build_backbone, load_pretrained
from hallucinator.engine.config import Config
from hallucinator.transfer.models import (
    AlignedRoIAlign,
    Res5RoIHeads,
    backbone_state,
    build_detector,
    load_backbone_weights,
)
from tests.conftest import write_checkpoint

# small images and few proposals / RoIs, so that a step takes ~0.1 s on one thread
SMALL = {
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 10,
}
# anchors for 64 px images with 16-40 px objects; FPN: one per level
ANCHORS = {"c4": (16, 32, 64), "fpn": (4, 8, 16, 32, 64)}
TASKS = ("detection", "instance-segmentation")
BACKBONES = {"r18-cifar": ("resnet18", True), "r50-imagenet": ("resnet50", False)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread (tests/conftest.py restores the count): two threads on the shared 2-core CPU made a step 40x slower."""
    torch.set_num_threads(1)


def small_detector(arch: str = "c4", task: str = "detection", backbone: nn.Module | None = None, **kwargs) -> nn.Module:
    """A detector on a width-8 R18 with the CIFAR stem (res4 at stride 4), 2 classes, 64 px images."""
    if backbone is None:
        backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    options = {**SMALL, "anchor_sizes": ANCHORS[arch], "fpn_channels": 32, **kwargs}
    return build_detector(backbone, num_classes=2, task=task, arch=arch, **options)


def synthetic_pair() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two dark noise images (64 x 64 and 48 x 64) with 1 and 2 bright rectangles; class c brightens channel c - 1."""
    generator = torch.Generator().manual_seed(0)
    layouts = [([(8, 8, 40, 36)], [1]), ([(4, 20, 28, 46), (34, 4, 60, 28)], [2, 1])]
    images, targets = [], []
    for (boxes, labels), height in zip(layouts, (64, 48), strict=True):
        image = torch.rand(3, height, 64, generator=generator) * 0.3
        masks = torch.zeros(len(boxes), height, 64, dtype=torch.uint8)
        for index, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels, strict=True)):
            image[label - 1, y1:y2, x1:x2] += 0.7
            masks[index, y1:y2, x1:x2] = 1
        images.append(image)
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels), "masks": masks}
        )
    return images, targets


def pretrained_checkpoint(run_dir: Path, name: str, cifar_stem: bool) -> Path:
    """A ``pretrain`` checkpoint of a width-8 ResNet with BatchNorm statistics and counters away from their defaults."""
    config = Config(output_dir=str(run_dir))
    config.model.backbone, config.model.width, config.model.cifar_stem = name, 8, cifar_stem
    torch.manual_seed(1)
    backbone = build_backbone(config)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(123)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    state = {BACKBONE_PREFIX + key: value for key, value in backbone.state_dict().items()}
    return write_checkpoint(run_dir, config, state, global_step=1)


def detector_path(arch: str, name: str) -> str:
    """Where backbone tensor ``name`` lives in the detector, written out independently of the module under test."""
    if arch == "fpn":
        return f"backbone.body.{name}"
    if name.startswith("layer4."):
        return "roi_heads.box_head.res5." + name.removeprefix("layer4.")
    return f"backbone.{name}"


@pytest.mark.parametrize("arch", ["c4", "fpn"])
@pytest.mark.parametrize("kind", list(BACKBONES))
def test_loaded_backbone_equals_the_checkpoint(tmp_path: Path, arch: str, kind: str):
    name, cifar_stem = BACKBONES[kind]
    path = pretrained_checkpoint(tmp_path, name, cifar_stem)
    trained, config = load_pretrained(path)
    saved = {
        key.removeprefix(BACKBONE_PREFIX): value
        for key, value in torch.load(path, weights_only=True)["state_dict"].items()
    }
    torch.manual_seed(2)
    fresh = build_backbone(config)  # what `--init random` would train
    assert not torch.equal(fresh.conv1.weight, saved["conv1.weight"])
    detector = build_detector(fresh, num_classes=3, arch=arch)

    assert load_backbone_weights(detector, trained.state_dict(), str(path)) == len(saved)

    state = backbone_state(detector)
    assert state.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
        in_module = functools.reduce(getattr, detector_path(arch, key).split("."), detector)
        assert torch.equal(in_module, value), key
    # the loaded net is a ResNet again: backbone_state is what a fine-tuned backbone saves as
    backbones.build(name, cifar_stem=cifar_stem, width=8).load_state_dict(state)


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_channels_and_strides_are_read_from_the_backbone(kind: str):
    name, cifar_stem = BACKBONES[kind]
    width, expansion = 8, 4 if name == "resnet50" else 1
    res4_channels, res5_channels = width * 4 * expansion, width * 8 * expansion
    stem_stride = 1 if cifar_stem else 4  # CIFAR: 3x3 stride-1 conv, no max-pool; ImageNet: stride-2 conv + max-pool
    stride = stem_stride * 4  # layer2 and layer3 halve
    backbone = backbones.build(name, cifar_stem=cifar_stem, width=width)

    c4 = build_detector(backbone, num_classes=2, task="instance-segmentation")
    assert c4.backbone.out_channels == res4_channels
    res4 = c4.backbone(torch.zeros(1, 3, 64, 64))["0"]
    assert res4.shape == (1, res4_channels, 64 // stride, 64 // stride)
    assert c4.roi_heads.box_roi_pool.spatial_scale == 1 / stride
    assert c4.rpn.anchor_generator.sizes == (tuple(stride * k for k in (2, 4, 8, 16, 32)),)
    assert c4.rpn.head.conv[0][0].in_channels == res4_channels
    assert c4.roi_heads.box_predictor.cls_score.in_features == res5_channels
    assert c4.roi_heads.mask_predictor.conv5_mask.in_channels == res5_channels

    fpn = build_detector(backbones.build(name, cifar_stem=cifar_stem, width=width), num_classes=2, arch="fpn")
    stages = [width * 2**level * expansion for level in range(4)]
    assert [block[0].in_channels for block in fpn.backbone.fpn.inner_blocks] == stages
    strides = [stem_stride * 2**level for level in range(5)]  # layer1..4 and the max-pooled level
    assert fpn.rpn.anchor_generator.sizes == tuple((8 * s,) for s in strides)


def test_reading_the_geometry_leaves_the_backbone_as_it_was():
    backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    backbone.layer3.eval()  # a mixed state must come back as it was, module by module
    before = {key: value.clone() for key, value in backbone.state_dict().items()}
    modes = {name: module.training for name, module in backbone.named_modules()}
    build_detector(backbone, num_classes=2)
    assert {name: module.training for name, module in backbone.named_modules()} == modes
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_missing_tensor_is_a_one_line_error_naming_it():
    detector = small_detector()
    state = backbones.build("resnet18", cifar_stem=True, width=8).state_dict()
    del state["layer4.1.bn2.running_var"]
    with pytest.raises(ValueError) as error:
        load_backbone_weights(detector, state, "runs/a/last.ckpt")
    message = str(error.value)
    assert "\n" not in message
    assert "runs/a/last.ckpt" in message and "layer4.1.bn2.running_var (64,)" in message and "missing" in message
    assert "model.width" in message  # the fix


def test_a_misshaped_tensor_is_a_one_line_error_with_both_shapes_and_nothing_is_loaded():
    detector = small_detector()
    before = {key: value.clone() for key, value in backbone_state(detector).items()}
    state = backbones.build("resnet18", cifar_stem=True, width=8).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(16, 8, 5, 5)
    with pytest.raises(ValueError) as error:
        load_backbone_weights(detector, state, "runs/b/last.ckpt")
    message = str(error.value)
    assert "\n" not in message
    assert "runs/b/last.ckpt" in message and "layer2.0.conv1.weight" in message
    assert "(16, 8, 5, 5)" in message and "(16, 8, 3, 3)" in message
    for key, value in backbone_state(detector).items():  # checked before copying: conv1 etc. not half-loaded
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("arch", ["c4", "fpn"])
@pytest.mark.parametrize("task", TASKS)
def test_train_forward_gives_the_losses_and_eval_the_detections(arch: str, task: str):
    torch.manual_seed(0)
    detector = small_detector(arch, task, box_score_thresh=0.0)
    images, targets = synthetic_pair()
    masks = task == "instance-segmentation"

    detector.train()
    losses = detector(images, targets if masks else [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} | (
        {"loss_mask"} if masks else set()
    )
    assert set(losses) == expected
    assert all(value.ndim == 0 and torch.isfinite(value) for value in losses.values())

    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    for image, found in zip(images, detections, strict=True):
        assert set(found) == {"boxes", "labels", "scores"} | ({"masks"} if masks else set())
        count = len(found["boxes"])
        assert 0 < count <= SMALL["box_detections_per_img"]
        assert found["boxes"].shape == (count, 4) and found["scores"].shape == (count,)
        assert found["labels"].min() >= 1 and found["labels"].max() <= 2
        if masks:
            assert found["masks"].shape == (count, 1, *image.shape[1:])
            assert found["masks"].min() >= 0 and found["masks"].max() <= 1


def test_images_without_objects_train_and_images_without_detections_evaluate():
    detector = small_detector(task="instance-segmentation", box_score_thresh=1.1)  # no score passes 1.1
    images, _ = synthetic_pair()
    empty = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, *image.shape[1:], dtype=torch.uint8),
        }
        for image in images
    ]
    losses = detector(images, empty)
    assert losses["loss_mask"] == 0 and losses["loss_box_reg"] == 0 and losses["loss_classifier"] > 0
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert [tuple(found["masks"].shape) for found in detections] == [(0, 1, 64, 64), (0, 1, 48, 64)]


def test_the_c4_roi_heads_keep_torchvisions_settings():
    detector = small_detector(
        box_fg_iou_thresh=0.6, box_bg_iou_thresh=0.4, box_positive_fraction=0.5, box_nms_thresh=0.3
    )
    heads = detector.roi_heads
    assert isinstance(heads, Res5RoIHeads)
    assert (heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold) == (0.6, 0.4)
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (32, 0.5)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.3, 10)
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)  # torchvision's default
    assert detector.rpn._pre_nms_top_n == {"training": 200, "testing": 100}  # SMALL's, over detectron2's C4 defaults
    assert build_detector(backbones.build("resnet18", cifar_stem=True, width=8), num_classes=2).rpn._pre_nms_top_n == {
        "training": 12000,
        "testing": 6000,
    }


def test_instance_segmentation_without_masks_in_the_targets_is_an_error():
    detector = small_detector(task="instance-segmentation")
    images, targets = synthetic_pair()
    with pytest.raises(ValueError, match="masks"):
        detector(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])


def test_the_c4_mask_branch_reads_res5_of_the_box_branch():
    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    detector = small_detector(task="instance-segmentation", backbone=backbone, box_score_thresh=0.0)
    res5 = detector.roi_heads.box_head.res5
    assert res5 is backbone.layer4
    calls = []
    res5.register_forward_hook(lambda module, inputs, output: calls.append(output.shape[0]))
    images, targets = synthetic_pair()

    detector.train()
    losses = detector(images, targets)
    assert len(calls) == 1  # one res5 pass over the sampled RoIs feeds both the box and the mask losses
    losses["loss_mask"].backward()
    for name, parameter in res5.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

    calls.clear()
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    # inference: res5 on the proposals (boxes), then again on the final boxes (masks), as detectron2
    assert calls[1] == sum(len(found["boxes"]) for found in detections) > 0
    assert len(calls) == 2


def test_aligned_roi_align_is_detectron2s_roialignv2():
    """A box on the feature grid, one sample per bin: aligned=True reads the feature cells themselves."""
    features = torch.randn(1, 3, 8, 8)
    stride = 4
    pool = AlignedRoIAlign("0", output_size=4, stride=stride)
    box = torch.tensor([[1.0, 2.0, 5.0, 6.0]]) * stride  # feature columns 1..4, rows 2..5
    pooled = pool({"0": features}, [box], [(32, 32)])
    assert torch.allclose(pooled[0], features[0, :, 2:6, 1:5], atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_sync_batchnorm_conversion_keeps_the_detector(task: str):
    torch.manual_seed(0)
    detector = small_detector(task=task, box_score_thresh=0.0)
    batchnorms = sum(type(module) is nn.BatchNorm2d for module in detector.modules())
    state = {key: value.clone() for key, value in detector.state_dict().items()}

    converted = nn.SyncBatchNorm.convert_sync_batchnorm(detector)

    assert sum(type(module) is nn.BatchNorm2d for module in converted.modules()) == 0
    assert sum(isinstance(module, nn.SyncBatchNorm) for module in converted.modules()) == batchnorms
    assert isinstance(converted.roi_heads, Res5RoIHeads)
    assert isinstance(converted.roi_heads.box_head.res5[0].bn1, nn.SyncBatchNorm)
    assert converted.state_dict().keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in converted.state_dict().items())
    assert backbone_state(converted).keys() == backbone_state(detector).keys()
    converted.eval()  # without a process group SyncBatchNorm runs in eval mode only on the CPU
    with torch.no_grad():
        (found, _) = converted(synthetic_pair()[0])
    assert len(found["boxes"]) > 0 and (task == "detection") == ("masks" not in found)


def test_thirty_sgd_steps_overfit_two_images():
    """Measured (seeds 0-4, all five losses): the last 5 steps average 0.21-0.26 of the first step's total loss."""
    torch.manual_seed(0)
    detector = small_detector(task="instance-segmentation")
    images, targets = synthetic_pair()
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.02, momentum=0.9)
    detector.train()
    history = []
    for _ in range(30):
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * history[0], history


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "keypoints"}, "unknown task 'keypoints'"),
        ({"arch": "dc5"}, "unknown detector architecture 'dc5'"),
        ({"num_classes": 0}, "without the background"),
        ({"arch": "fpn", "anchor_sizes": (32, 64)}, "one size per level, 5"),
    ],
)
def test_bad_arguments_are_one_line_errors(options: dict, message: str):
    backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    with pytest.raises(ValueError, match=message):
        build_detector(backbone, **{"num_classes": 2, **options})


def test_a_backbone_without_resnet_stages_is_refused():
    with pytest.raises(ValueError, match="ResNet backbone.*layer1"):
        build_detector(nn.Sequential(nn.Conv2d(3, 8, 3)), num_classes=2)
