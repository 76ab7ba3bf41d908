"""Backbones: torchvision-identical ResNets (keys, shapes, outputs), width, CIFAR stem, other torchvision models."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from hallucinator import backbones


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_width_64_imagenet_stem_is_torchvision_resnet_without_fc(name: str) -> None:
    torch.manual_seed(0)
    ours = backbones.build(name).eval()
    reference = torchvision.models.get_model(name, weights=None)
    reference_shapes = {key: v.shape for key, v in reference.state_dict().items() if not key.startswith("fc.")}
    assert {key: v.shape for key, v in ours.state_dict().items()} == reference_shapes
    # the weights export to torchvision as they are, and compute the same features
    assert reference.load_state_dict(ours.state_dict(), strict=False).missing_keys == ["fc.weight", "fc.bias"]
    reference.fc = nn.Identity()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference.eval()(images))
    assert (
        ours.num_features == reference_shapes["layer4.1.bn1.weight" if name != "resnet50" else "layer4.2.bn3.weight"][0]
    )


@pytest.mark.parametrize(
    ("name", "width", "features"), [("resnet18", 16, 128), ("resnet34", 8, 64), ("resnet50", 16, 512)]
)
def test_width_scales_every_stage_and_keeps_torchvision_keys(name: str, width: int, features: int) -> None:
    ours = backbones.build(name, cifar_stem=True, width=width)
    reference = torchvision.models.get_model(name, weights=None).state_dict()
    assert list(ours.state_dict()) == [key for key in reference if not key.startswith("fc.")]
    assert ours.conv1.weight.shape == (width, 3, 3, 3)
    assert ours.layer4[0].conv1.in_channels == (4 * width if name != "resnet50" else 16 * width)
    assert ours.num_features == features
    assert ours(torch.randn(2, 3, 32, 32)).shape == (2, features)


def test_cifar_stem_keeps_full_resolution_until_layer2() -> None:
    seen: dict[str, torch.Size] = {}

    def record(key: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen[key] = out.shape

        return hook

    backbone = backbones.build("resnet18", cifar_stem=True, width=8)
    backbone.layer1.register_forward_hook(record("layer1"))
    backbone(torch.randn(2, 3, 32, 32))
    assert seen["layer1"] == (2, 8, 32, 32)  # 3x3 stride-1 conv, no max-pool
    imagenet = backbones.build("resnet18", width=8)
    imagenet.layer1.register_forward_hook(record("imagenet"))
    imagenet(torch.randn(2, 3, 32, 32))
    assert seen["imagenet"] == (2, 8, 8, 8)  # 7x7 stride-2 conv + max-pool


def test_any_torchvision_classification_model_without_its_classifier() -> None:
    backbone = backbones.build("mobilenet_v3_small")
    reference = torchvision.models.mobilenet_v3_small().state_dict()
    assert set(backbone.state_dict()) == set(reference) - {"classifier.3.weight", "classifier.3.bias"}
    assert backbone.num_features == 1024
    assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    assert "resnet18" in backbones.available() and "mobilenet_v3_small" in backbones.available()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet19"}, "unknown backbone"),
        ({"name": "mobilenet_v3_small", "cifar_stem": True}, "only available for"),
        ({"name": "resnet18", "width": 0}, "width"),
        ({"name": "squeezenet1_0"}, "no final Linear"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backbones.build(**kwargs)


@pytest.mark.parametrize(("width", "safe"), [(4, False), (8, False), (16, True), (64, True)])
def test_channels_last_safe_rejects_narrow_strided_shortcuts(width: int, safe: bool) -> None:
    # the downsampling shortcut of layer2 is a stride-2 1x1 conv with `width` input channels
    assert backbones.channels_last_safe(backbones.build("resnet18", cifar_stem=True, width=width)) is safe


def test_channels_last_weight_gradient_matches_contiguous_at_the_safe_boundary() -> None:
    # 16 input channels (one AVX-512 block, two AVX2 blocks): the narrowest shortcut channels_last_safe admits
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, kernel_size=1, stride=2, bias=False)
    assert backbones.channels_last_safe(conv)
    x = torch.randn(8, 16, 16, 16)
    gradients = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        conv.weight.grad = None
        conv.to(memory_format=memory_format)(x.contiguous(memory_format=memory_format)).square().sum().backward()
        gradients.append(conv.weight.grad.clone())
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-4, atol=1e-4)


# ---- timm backbones


def test_small_vits_fit_small_images_and_return_the_cls_token() -> None:
    import timm

    torch.manual_seed(0)
    vit = backbones.build("vit_tiny", image_size=32)
    assert vit.num_features == 192 and vit.patch_embed.patch_size == (4, 4)  # 8 x 8 tokens on CIFAR
    assert backbones.build("vit_small", image_size=64).patch_embed.patch_size == (8, 8)
    assert backbones.build("vit_small", image_size=64).num_features == 384
    x = torch.randn(2, 3, 32, 32)
    assert vit(x).shape == (2, 192) and vit(x[..., :24, :24]).shape == (2, 192)  # smaller training crops work too
    # the CLS token after the final norm, computed through timm's own forward_features
    torch.testing.assert_close(vit.eval()(x), vit.forward_features(x)[:, 0])
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, patch_size=4, img_size=32)
    assert reference.load_state_dict(vit.state_dict()).missing_keys == []


def test_any_timm_model_by_prefix_and_bad_names() -> None:
    resnet = backbones.build("timm:resnet18")
    assert resnet.num_features == 512 and resnet(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        backbones.build("timm:no_such_net")
    with pytest.raises(ValueError, match="--model.cifar_stem=false"):
        backbones.build("vit_tiny", cifar_stem=True)
    assert backbones.timm_spec("vit_small", 96) == ("vit_small_patch16_224", {"patch_size": 8, "img_size": 96})
    assert backbones.timm_spec("resnet18") is None
