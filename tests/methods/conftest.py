"""Small models and inputs for the method tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv -> (BatchNorm) -> ReLU -> global pool: a fast backbone with a ``num_features`` attribute."""

    def __init__(self, channels: int = 6, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def tiny_net() -> type[TinyNet]:
    return TinyNet


@pytest.fixture
def views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=generator), torch.randn(8, 3, 8, 8, generator=generator)
