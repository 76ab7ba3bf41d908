"""Multi-crop: the two-view pipeline's random stream kept, sizes and area ranges per kind, the center-suppressed
crop on any crop, and the quickstart's views unchanged by the engine's multi-crop path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hallucinator.data import augment, multicrop, presets
from hallucinator.data.multicrop import CropSpec

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
IMAGES = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))


def test_two_global_crops_draw_exactly_what_the_two_view_pipeline_draws() -> None:
    two = presets.build("cifar10-simclr", 24, alpha=0.1)
    crops = multicrop.build("cifar10-simclr", CropSpec(2, 24), center_crop_views=(1,), alpha=0.1)
    expected = two(IMAGES, generator=torch.Generator().manual_seed(3))
    got = crops(IMAGES, generator=torch.Generator().manual_seed(3))
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, expected))


def test_global_and_local_crops_have_their_own_size_scale_and_center_crop() -> None:
    crops = multicrop.build(
        "cifar10-simclr", CropSpec(2, 32, (0.4, 1.0)), CropSpec(6, 16, (0.05, 0.4)), center_crop_views=(1, 5)
    )
    assert crops.num_global == 2 and len(crops.views) == 8
    first_ops = [view.ops[0] for view in crops.views]
    centre = [isinstance(op, augment.CenterSuppressedResizedCrop) for op in first_ops]
    assert centre == [True, False, False, False, True, False, False, False]
    views = crops(IMAGES, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(6, 3, 32, 32)] * 2 + [(6, 3, 16, 16)] * 6
    # the boxes each kind draws cover the area fraction it was given (independently: width x height / image area)
    generator = torch.Generator().manual_seed(1)
    for op, (low, high) in ((first_ops[1], (0.4, 1.0)), (first_ops[2], (0.05, 0.4))):
        boxes = op.sample_boxes(4000, 32, 32, generator)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (32 * 32)
        assert low - 1e-5 <= area.min() and area.max() <= high + 1e-5
        assert area.min() < low + 0.05 and area.max() > high - 0.05  # the whole range is used
    # seeded: the same generator seed gives the same crops, another seed other crops
    again = crops(IMAGES, generator=torch.Generator().manual_seed(0))
    other = crops(IMAGES, generator=torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    assert not any(torch.equal(a, b) for a, b in zip(views, other))


def test_bad_crop_lists_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match=r"names crops \[4\] that do not exist: the crops are numbered 1..3"):
        multicrop.build("cifar10-simclr", CropSpec(2, 32), CropSpec(1, 16), center_crop_views=(1, 4))
    with pytest.raises(ValueError, match="at least 1 global crop"):
        multicrop.build("cifar10-simclr", CropSpec(0, 32))


def test_the_quickstart_draws_the_views_it_drew_before_multi_crop() -> None:
    """Per-view channel means and a few pixels of the quickstart's step-0 views, recorded before the change."""
    from hallucinator.engine import load_config
    from hallucinator.engine.module import PretrainModule

    module = PretrainModule(load_config(QUICKSTART), steps_per_epoch=390, num_classes=10)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(123))
    views = module._views(images)
    means = torch.stack([v.mean(dim=(2, 3)) for v in views])
    recorded = [
        [
            [0.14399, 0.15684, 0.24872],
            [-0.1404, -0.12039, 0.03033],
            [-0.08299, -0.0464, 0.09328],
            [0.04976, 0.067, 0.17051],
        ],
        [
            [-0.09756, -0.06118, 0.07952],
            [-0.23035, -0.18752, -0.06931],
            [0.26762, 0.30925, 0.42432],
            [-0.50457, -0.45182, -0.35566],
        ],
    ]
    pixels = [0.07443, 0.45838, -0.35019, 0.12308, -0.48128, -0.40332, 0.15627, -1.09714]
    assert len(views) == 2 and views[0].shape == (4, 3, 24, 24)
    torch.testing.assert_close(means, torch.tensor(recorded), atol=2e-5, rtol=0)
    torch.testing.assert_close(torch.cat([v[:, 0, 5, 7] for v in views]), torch.tensor(pixels), atol=2e-5, rtol=0)
