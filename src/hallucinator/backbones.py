"""Feature extractors: images ``(N, 3, H, W)`` -> features ``(N, num_features)``.

ResNets are torchvision's own ``ResNet`` class and blocks, with two options torchvision
lacks: a base ``width`` (narrow nets for CPU experiments) and the CIFAR stem (3x3 stride-1
conv, no max-pool). Their state-dict keys are torchvision's minus ``fc.*``, so trained
weights load into ``torchvision.models.resnet18()`` (``strict=False``) as they are.

Vision Transformers and every other timm model come from timm, unchanged (its keys, its
pooling: the CLS token for ViTs): ``timm:<model name>``, or the small-image ViTs ``vit_tiny``
and ``vit_small`` whose patch size and position embeddings fit 32-96 px images.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

RESNETS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


class ResNet(torchvision.models.ResNet):
    """torchvision's ResNet without its classifier, with a base ``width`` and an optional CIFAR stem.

    torchvision hard-codes the stage widths (64, 128, 256, 512), so this constructor builds
    the same modules itself with ``width * (1, 2, 4, 8)``, reusing torchvision's blocks and
    ``_make_layer`` and its weight initialisation.

    Example:
        >>> backbone = ResNet(BasicBlock, [2, 2, 2, 2], width=16, cifar_stem=True)
        >>> backbone(torch.randn(4, 3, 32, 32)).shape  # (4, backbone.num_features) = (4, 128)
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        width: int = 64,
        cifar_stem: bool = False,
    ) -> None:
        nn.Module.__init__(self)  # torchvision's __init__ cannot take a width; the attributes below are what it sets
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # Bottleneck's inner width is planes * base_width / 64 = planes, as in torchvision
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = width * 8 * block.expansion
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _strip_classifier(model: nn.Module, name: str) -> nn.Module:
    """Replace the model's last Linear layer (its classifier) by the identity; keeps torchvision's keys."""
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise ValueError(
            f"torchvision model {name!r} has no final Linear classifier to remove; use one of {available()}"
        )
    parent_name, _, attribute = last.rpartition(".")
    parent = model.get_submodule(parent_name)
    in_features = getattr(parent, attribute).in_features
    setattr(parent, attribute, nn.Identity())
    model.num_features = in_features
    return model


# name -> timm architecture of the small-image ViTs (DeiT-Tiny and -Small widths, depth 12)
SMALL_VITS = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}
TIMM_PREFIX = "timm:"


def small_vit_patch_size(image_size: int) -> int:
    """4 px patches up to 32 px images (8 x 8 tokens on CIFAR), 8 px above (8 x 8 on Tiny ImageNet, 12 x 12 on STL-10)."""
    return 4 if image_size <= 32 else 8


def timm_spec(name: str, image_size: int | None = None) -> tuple[str, dict[str, Any]] | None:
    """``(architecture, kwargs)`` of ``timm.create_model`` that builds backbone ``name``; ``None`` if it is not timm's.

    What ``hallucinator export --format timm`` tells users to load the weights with.

    Example:
        >>> timm_spec("vit_tiny", 32)
        ('vit_tiny_patch16_224', {'patch_size': 4, 'img_size': 32})
    """
    if name.startswith(TIMM_PREFIX):
        return name[len(TIMM_PREFIX) :], {}
    if name in SMALL_VITS:
        size = image_size or 32
        return SMALL_VITS[name], {"patch_size": small_vit_patch_size(size), "img_size": size}
    return None


def available() -> list[str]:
    """ResNets with width/CIFAR-stem options first, the small-image ViTs, then every torchvision classification model
    name; any timm model is ``timm:<name>``."""
    others = sorted(set(torchvision.models.list_models(module=torchvision.models)) - set(RESNETS))
    return list(RESNETS) + list(SMALL_VITS) + others + [f"{TIMM_PREFIX}<any timm model>"]


def _build_timm(name: str, image_size: int | None) -> nn.Module:
    spec = timm_spec(name, image_size)
    assert spec is not None  # build() sends timm's names only
    architecture, kwargs = spec
    if not timm.is_model(architecture):
        raise ValueError(f"unknown timm model {architecture!r} (backbone {name!r}); timm.list_models() lists them")
    if name in SMALL_VITS:
        # training crops may be smaller than the evaluation images (data.crop_size): position embeddings interpolate
        kwargs = {**kwargs, "dynamic_img_size": True}
    model = timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)
    if not isinstance(getattr(model, "num_features", None), int):
        raise ValueError(f"timm model {architecture!r} has no integer num_features; it cannot be a backbone here")
    return model


def build(name: str, cifar_stem: bool = False, width: int = 64, image_size: int | None = None) -> nn.Module:
    """Build a randomly initialised backbone with a ``num_features`` attribute.

    Args:
        name: ``resnet18``/``34``/``50``/``101``/``152``, ``vit_tiny``/``vit_small`` (small-image ViTs),
            any torchvision classification model name, or ``timm:<model name>`` (timm's model,
            classifier removed, its own pooling).
        cifar_stem: 3x3 stride-1 first conv and no max-pool (for 32-96 px images); ResNets only.
        width: base width of the ResNet (64 = torchvision's); ResNets only.
        image_size: side of the images, for the small-image ViTs (patch size and position
            embeddings; default 32); other backbones take any size.

    Example:
        >>> backbone = build("resnet18", cifar_stem=True, width=64)
        >>> backbone.num_features
        512
        >>> build("vit_tiny", image_size=32).num_features  # CLS token of a 12-block, 192-wide ViT on 4 px patches
        192
    """
    if width <= 0:
        raise ValueError(f"width must be a positive number of channels (64 = torchvision's ResNet), got {width}")
    if name in RESNETS:
        block, layers = RESNETS[name]
        return ResNet(block, layers, width=width, cifar_stem=cifar_stem)
    is_timm = timm_spec(name) is not None
    if not is_timm and name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown backbone {name!r}; choose one of {available()}")
    if cifar_stem or width != 64:
        raise ValueError(
            f"cifar_stem and width are only available for {list(RESNETS)}; build {name!r} with cifar_stem=False, width=64 "
            "(in a config: --model.cifar_stem=false --model.width=64)"
        )
    if is_timm:
        return _build_timm(name, image_size)
    # the auxiliary classifiers of googlenet / inception_v3 would change the output type in training mode
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return _strip_classifier(torchvision.models.get_model(name, weights=None, **extra), name)


def channels_last_safe(model: nn.Module) -> bool:
    """Whether ``model`` can train in ``channels_last`` memory format on the CPU without corruption.

    oneDNN's 1x1 convolution computes the weight gradient of a strided 1x1 conv on channels-last
    input through a workspace that is too small when the conv has fewer input channels than its
    vector block (8 on AVX2, 16 on AVX-512): https://github.com/uxlfoundation/oneDNN/issues/6035.
    Measured with PyTorch 2.14.1 on an AVX2 CPU: a ResNet-18 of width 4 aborts ("double free or
    corruption") on one thread and hangs on two; the report above also saw silently wrong weight
    gradients. ResNet downsampling shortcuts are such convs, so nets narrower than 16 channels
    (``width < 16``) must train in the default contiguous format.

    Example:
        >>> channels_last_safe(build("resnet18", cifar_stem=True, width=8))
        False
        >>> channels_last_safe(build("resnet18", cifar_stem=True, width=16))
        True
    """
    return not any(
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride != (1, 1)
        and module.in_channels // module.groups < 16
        for module in model.modules()
    )
