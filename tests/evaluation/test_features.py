"""Feature extraction runs in the backbone's memory format and gives the same features in either."""

from __future__ import annotations

import torch
from torch import nn

from hallucinator import backbones
from hallucinator.evaluation.features import extract_features, frozen, input_memory_format
from tests.evaluation.conftest import fabricate_checkpoint


def test_input_memory_format_follows_the_conv_kernels() -> None:
    backbone = backbones.build("resnet18", cifar_stem=True, width=16)
    assert input_memory_format(backbone) == torch.contiguous_format
    assert input_memory_format(backbone.to(memory_format=torch.channels_last)) == torch.channels_last
    assert input_memory_format(nn.Sequential(nn.Flatten(), nn.Linear(12, 4))) == torch.contiguous_format


def test_channels_last_features_equal_contiguous_ones() -> None:
    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=16)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    contiguous = extract_features(backbone, images, batch_size=8)
    channels_last = extract_features(backbone.to(memory_format=torch.channels_last), images, batch_size=8)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


def test_evaluation_commands_load_backbones_channels_last_where_safe(tmp_path) -> None:
    from hallucinator.evaluation.loading import EvaluationOptions, LoadedCheckpoint

    for width, expected in ((16, torch.channels_last), (8, torch.contiguous_format)):
        checkpoint = fabricate_checkpoint(tmp_path / f"width{width}", width=width)
        options = EvaluationOptions(
            str(checkpoint), data_dir="unused", device="cpu", batch_size=8, save=False, progress=False
        )
        loaded = LoadedCheckpoint(options, splits=())  # no data: only the backbone is read here
        assert input_memory_format(loaded.backbone) == expected


def test_frozen_folds_batchnorm_into_the_convs_without_changing_the_features() -> None:
    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=16).to(memory_format=torch.channels_last)
    backbone.train()
    backbone(torch.randn(64, 3, 32, 32))  # non-trivial running statistics
    state = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    images = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    backbone.eval()
    with torch.no_grad():
        expected = backbone(images)  # the unfolded network, BatchNorm applied as its own layer
    backbone.train()
    with torch.no_grad(), frozen(backbone) as model:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert input_memory_format(model) == torch.channels_last
        folded = model(images)
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    assert backbone.training  # mode restored, weights and statistics untouched
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, state[name]), name


class _DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x.flatten(1) if x.sum() > 0 else -x.flatten(1)


def test_frozen_uses_an_untraceable_backbone_as_it_is() -> None:
    backbone = _DataDependent()
    with frozen(backbone) as model:
        assert model is backbone and not backbone.training
    assert backbone.training
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    assert extract_features(backbone, images, batch_size=4).shape == (6, 4 * 6 * 6)
