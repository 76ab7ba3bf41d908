"""PretrainModule: the memory format it trains in."""

from __future__ import annotations

import pytest
import torch

from hallucinator.engine.config import load_config
from hallucinator.engine.module import PretrainModule


def test_narrow_networks_fall_back_from_channels_last_with_a_warning() -> None:
    config = load_config(None, ["--model.width=8"])
    with pytest.warns(UserWarning, match="channels_last.*model.width >= 16"):
        module = PretrainModule(config, steps_per_epoch=1)
    assert not module.channels_last
    view1, _ = module._views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert view1.is_contiguous()


def test_channels_last_is_used_when_safe() -> None:
    module = PretrainModule(load_config(None, ["--model.width=16"]), steps_per_epoch=1)
    assert module.channels_last
    assert module.method.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_center_crop_warmup_uses_plain_crops_for_the_first_epochs(monkeypatch) -> None:
    from hallucinator.data import presets
    from hallucinator.engine.module import step_seed

    config = load_config(None, ["--model.width=16", "--data.center_crop_warmup_epochs=2"])
    module = PretrainModule(config, steps_per_epoch=1)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    epoch = [0]
    monkeypatch.setattr(PretrainModule, "current_epoch", property(lambda self: epoch[0]))
    for epoch[0], center_crop_views in ((0, ()), (1, ()), (2, (1,))):
        expected = presets.build("cifar10-simclr", center_crop_views=center_crop_views)(
            images, generator=torch.Generator().manual_seed(step_seed(0, 0, 0))
        )
        for view, reference in zip(module._views(images), expected):
            torch.testing.assert_close(view, reference)
    assert PretrainModule(load_config(None, ["--model.width=16"]), steps_per_epoch=1).warmup_augment is None
