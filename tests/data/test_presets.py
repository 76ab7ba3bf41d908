"""Presets (the paper's two-view recipes) and the eval transform."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from hallucinator.data import augment, eval_transform, presets


def _ops(view: augment.Compose) -> dict[str, torch.nn.Module]:
    return {type(op).__name__: op for op in view.ops}


def test_presets_follow_the_paper_recipes():
    cifar = presets.build("cifar10-mocov2")
    v1, v2 = _ops(cifar.view1), _ops(cifar.view2)
    crop = v1["CenterSuppressedResizedCrop"]
    assert (crop.center_fraction, crop.alpha, crop.scale, crop.size) == (0.5, 0.6, (0.2, 1.0), (32, 32))
    assert "CenterSuppressedResizedCrop" not in v2 and v2["RandomResizedCrop"].scale == (0.2, 1.0)
    jitter = v1["ColorJitter"]
    assert (
        jitter.p == 0.8
        and jitter.ranges[0] == pytest.approx((0.6, 1.4))
        and jitter.ranges[3] == pytest.approx((-0.1, 0.1))
    )
    assert v1["RandomGrayscale"].p == 0.2 and "GaussianBlur" not in v1
    assert v1["Normalize"].mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    imagenet = _ops(presets.build("imagenet200-mocov2").view2)
    assert imagenet["RandomResizedCrop"].size == (224, 224)
    assert imagenet["GaussianBlur"].sigma == (0.1, 2.0) and imagenet["GaussianBlur"].p == 0.5
    mocov1 = _ops(presets.build("imagenet-mocov1").view1)
    assert mocov1["ColorJitter"].p == 1.0 and mocov1["ColorJitter"].ranges[3] == pytest.approx((-0.4, 0.4))
    assert "GaussianBlur" not in mocov1
    assert _ops(presets.build("imagenet-simclr").view1)["CenterSuppressedResizedCrop"].scale == (0.08, 1.0)
    assert _ops(presets.build("stl10").view1)["CenterSuppressedResizedCrop"].size == (96, 96)
    assert _ops(presets.build("tiny-imagenet-simsiam").view2)["RandomResizedCrop"].size == (64, 64)
    for name in presets.PRESETS:
        presets.build(name)


def test_preset_overrides():
    both = presets.build("cifar10", center_crop_views=(1, 2), center_fraction=0.3, alpha=0.1, scale=(0.3, 1.0))
    for view in (both.view1, both.view2):
        crop = _ops(view)["CenterSuppressedResizedCrop"]
        assert (crop.center_fraction, crop.alpha, crop.scale) == (0.3, 0.1, (0.3, 1.0))
    with pytest.warns(FutureWarning, match=r"'p' is now 'center_fraction' \(data.augment.center_fraction\)"):
        old = presets.build("cifar10", p=0.3)  # the key's name until 2026-11-30 still works
    assert _ops(old.view1)["CenterSuppressedResizedCrop"].center_fraction == 0.3
    none = presets.build("cifar10", center_crop_views=())
    assert "CenterSuppressedResizedCrop" not in _ops(none.view1)
    half = _ops(presets.build("cifar10", jitter_strength=0.5).view1)["ColorJitter"]
    assert half.ranges[0] == pytest.approx((0.8, 1.2))
    assert "GaussianBlur" in _ops(presets.build("cifar10", blur=True).view1)
    assert _ops(presets.build("cifar10", image_size=24).view1)["CenterSuppressedResizedCrop"].size == (24, 24)
    with pytest.raises(ValueError, match="unknown augmentation override"):
        presets.build("cifar10", alhpa=0.1)
    with pytest.raises(ValueError, match="unknown preset"):
        presets.build("mnist-mocov2")
    with pytest.raises(ValueError, match="center_crop_views"):
        presets.build("cifar10", center_crop_views=(3,))


def test_eval_transform_normalises_small_images_and_centre_crops_imagenet():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = TF.normalize(images.float() / 255, list(mean), list(std))
    assert (eval_transform("cifar10")(images) - expected).abs().max() < 1e-5
    stored = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = TF.normalize(TF.center_crop(stored.float() / 255, [224, 224]), list(mean), list(std))
    assert (eval_transform("imagenet")(stored) - expected).abs().max() < 1e-5
    big = torch.rand(2, 3, 300, 400)
    reference = TF.center_crop(TF.resize(big, 256, antialias=True), [224, 224])
    ours = eval_transform("imagenet")(big) * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert ours.shape == (2, 3, 224, 224) and (ours - reference.clamp(0, 1)).abs().max() < 1e-3
