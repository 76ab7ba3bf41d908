"""Batched augmentation ops against torchvision's per-image functional ops and scipy's distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy import stats

from hallucinator.data import augment as A
from hallucinator.data import presets


def _images(n: int = 24, h: int = 20, w: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    x[:3] = x[:3].round()  # saturated pixels: ties between channels, zero chroma
    x[3:5] = x[3:5, :1]  # gray images
    return x


def _clone(generator: torch.Generator) -> torch.Generator:
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    return copy


# --------------------------------------------------------------------------- colour ops


@pytest.mark.parametrize(
    "ours, reference, low, high",
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.5, 1.6),
        (A.adjust_contrast, TF.adjust_contrast, 0.5, 1.6),
        (A.adjust_saturation, TF.adjust_saturation, 0.0, 1.8),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_op_matches_torchvision(ours, reference, low, high):
    x = _images()
    factors = torch.linspace(low, high, x.shape[0])
    expected = torch.stack([reference(x[i], float(factors[i])) for i in range(x.shape[0])])
    assert (ours(x, factors) - expected).abs().max() < 1e-5


def test_hue_on_uint8_derived_pixels_matches_torchvision():
    x = torch.randint(0, 256, (16, 3, 9, 9), generator=torch.Generator().manual_seed(1)).float() / 255
    for shift in (-0.5, -0.13, 0.0, 0.27, 0.5):
        expected = torch.stack([TF.adjust_hue(image, shift) for image in x])
        assert (A.adjust_hue(x, shift) - expected).abs().max() < 1e-5


def test_grayscale_solarize_normalize_blur_match_torchvision():
    x = _images()
    assert (A.grayscale(x) - TF.rgb_to_grayscale(x, num_output_channels=3)).abs().max() < 1e-6
    g = torch.Generator().manual_seed(3)
    solarized = A.RandomSolarize(0.4, p=1.0)(x, generator=g)
    assert (solarized - TF.solarize(x, 0.4)).abs().max() < 1e-6
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    assert (A.Normalize(mean, std)(x) - TF.normalize(x, list(mean), list(std))).abs().max() < 1e-5
    sigmas = torch.linspace(0.1, 2.0, x.shape[0])
    expected = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigmas[i])] * 2) for i in range(x.shape[0])])
    assert (A.gaussian_blur(x, 7, sigmas) - expected).abs().max() < 1e-5


def test_uint8_input_is_scaled_like_to_dtype():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    expected = TF.to_dtype(x, torch.float32, scale=True)
    assert torch.allclose(A.to_float(x), expected, atol=1e-6, rtol=0)
    assert torch.allclose(A.RandomGrayscale(0.0)(x), expected, atol=1e-6, rtol=0)


@pytest.fixture(params=["subset", "sync-free"])
def host_sync_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both forms of the p-applied ops: the CPU's subset indexing and the accelerators' whole-batch select."""
    monkeypatch.setattr(A, "avoids_host_sync", lambda device: request.param == "sync-free")
    return request.param


def test_color_jitter_module_reproduces_torchvision_per_sample_order_and_probability(host_sync_mode):
    x = _images(n=64)
    jitter = A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.7)
    g = torch.Generator().manual_seed(5)
    replay = _clone(g)
    out = jitter(x, generator=g)
    chosen = torch.rand(x.shape[0], generator=replay) < 0.7
    params = jitter.sample(x.shape[0], replay, x.device)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    assert 0 < int(chosen.sum()) < x.shape[0]
    orders = set()
    for i in range(x.shape[0]):
        expected = x[i]
        if chosen[i]:
            order = params["order"][i].tolist()
            orders.add(tuple(order))
            for op_index in order:
                expected = ops[op_index](expected, float(params["factors"][i, op_index]))
        assert (out[i] - expected).abs().max() < 1e-5, i
    assert len(orders) > 10  # per-sample orders, not one per batch
    factors = params["factors"]
    assert factors[:, :3].min() >= 0.6 and factors[:, :3].max() <= 1.4
    assert factors[:, 3].abs().max() <= 0.1


def test_random_apply_fraction_and_flip(host_sync_mode):
    x = _images(n=4000, h=4, w=6)
    out = A.RandomHorizontalFlip(0.3)(x, generator=torch.Generator().manual_seed(0))
    flipped = (out - x.flip(-1)).flatten(1).abs().amax(1) == 0
    kept = (out - x).flatten(1).abs().amax(1) == 0
    assert torch.all(flipped ^ kept)
    assert abs(flipped.float().mean().item() - 0.3) < 0.03
    gray = A.RandomGrayscale(0.2)(x, generator=torch.Generator().manual_seed(1))
    is_gray = (gray[:, 0] == gray[:, 1]).flatten(1).all(1) & (gray[:, 1] == gray[:, 2]).flatten(1).all(1)
    assert abs(is_gray.float().mean().item() - 0.2) < 0.03


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="odd"):
        A.GaussianBlur(4)
    with pytest.raises(ValueError, match="probability"):
        A.RandomGrayscale(1.5)
    with pytest.raises(ValueError, match="hue"):
        A.ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="too large"):
        A.gaussian_blur(torch.rand(1, 3, 8, 8), 17, 1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        A.RandomResizedCrop(8)(torch.rand(3, 8, 8))


# --------------------------------------------------------------------------- crops


def test_crop_resampling_matches_torchvision_resized_crop():
    x = _images(n=6, h=24, w=30)
    crop = A.RandomResizedCrop((20, 26))
    full = torch.tensor([[0.0, 0.0, 30.0, 24.0]]).repeat(6, 1)
    expected = TF.resize(x, [20, 26], antialias=True)
    # Shrinking: roi_align's area average vs torchvision's antialiased triangle filter.
    assert (crop.crop(x, full) - expected).abs().mean() < 0.03
    enlarge = A.RandomResizedCrop(32)
    box = torch.tensor([[3.0, 5.0, 19.0, 17.0]]).repeat(6, 1)  # x0, y0, x1, y1: a 16 x 12 box
    expected = TF.resized_crop(x, 5, 3, 12, 16, [32, 32], antialias=True)
    ours = enlarge.crop(x, box)
    # Same bilinear sampling inside; at the rim we read the true neighbour pixels where torchvision clamps.
    assert (ours[..., 2:-2, 2:-2] - expected[..., 2:-2, 2:-2]).abs().max() < 1e-5
    identity = A.RandomResizedCrop((24, 30)).crop(x, full)
    assert (identity - x).abs().max() < 1e-6


@pytest.mark.parametrize("height, width", [(32, 32), (40, 25)])
def test_random_resized_crop_boxes_inside_image_with_scale_and_ratio_in_range(height, width):
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    for crop in (
        A.RandomResizedCrop(32, scale, ratio),
        A.CenterSuppressedResizedCrop(32, scale, ratio, center_fraction=0.5, alpha=0.6),
    ):
        boxes = crop.sample_boxes(20000, height, width, torch.Generator().manual_seed(0))
        x0, y0, x1, y1 = boxes.unbind(1)
        assert x0.min() >= 0 and y0.min() >= 0 and x1.max() <= width + 1e-4 and y1.max() <= height + 1e-4
        w, h = x1 - x0, y1 - y0
        area = w * h / (width * height)
        aspect = w / h
        # The fallback (whole image trimmed to the ratio range) may exceed the scale range, as in torchvision.
        in_range = (area >= scale[0] - 1e-5) & (area <= scale[1] + 1e-5)
        assert in_range.float().mean() > 0.999
        assert aspect.min() >= ratio[0] - 1e-4 and aspect.max() <= ratio[1] + 1e-4
        # Area fractions cover the range (not stuck at one value).
        assert area.min() < 0.25 and area.max() > 0.8  # 40 x 25: ratio >= 3/4 caps the area at 0.83


def test_plain_crop_positions_are_uniform():
    crop = A.RandomResizedCrop(32, scale=(0.25, 0.25), ratio=(1.0, 1.0))  # 16 x 16 boxes in 32 x 32
    boxes = crop.sample_boxes(20000, 32, 32, torch.Generator().manual_seed(0))
    assert stats.kstest((boxes[:, 0] / 16).numpy(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("p", [0.3, 0.5, 0.8])
def test_center_suppressed_centres_fall_in_central_box(p):
    height, width = 64, 48
    crop = A.CenterSuppressedResizedCrop(
        16, scale=(0.002, 0.004), center_fraction=p, alpha=0.6
    )  # tiny crops: never clamped
    boxes = crop.sample_boxes(20000, height, width, torch.Generator().manual_seed(1))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    low, high = 0.5 - p / 2, 0.5 + p / 2
    assert cx.min() >= low * width - 1e-3 and cx.max() <= high * width + 1e-3
    assert cy.min() >= low * height - 1e-3 and cy.max() <= high * height + 1e-3
    # And they spread over the whole box.
    assert cx.min() < (low + 0.05 * p) * width and cx.max() > (high - 0.05 * p) * width
    assert crop.central_box(height, width) == pytest.approx((low * width, low * height, high * width, high * height))


def _centre_fractions(alpha: float, p: float = 0.5, n: int = 40000) -> np.ndarray:
    crop = A.CenterSuppressedResizedCrop(16, scale=(0.002, 0.004), center_fraction=p, alpha=alpha)
    boxes = crop.sample_boxes(n, 100, 100, torch.Generator().manual_seed(2))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / 100
    return ((cx - (0.5 - p / 2)) / p).numpy()


def test_centre_histogram_is_u_shaped_below_one_and_flat_at_one():
    bins = np.linspace(0, 1, 11)
    u_shaped, _ = np.histogram(_centre_fractions(0.6), bins)
    assert u_shaped[0] > 1.5 * u_shaped[4:6].mean() and u_shaped[-1] > 1.5 * u_shaped[4:6].mean()
    assert np.all(np.diff(u_shaped[:5]) < 0) and np.all(np.diff(u_shaped[5:]) > 0)
    flat, _ = np.histogram(_centre_fractions(1.0), bins)
    assert stats.chisquare(flat).pvalue > 1e-3
    assert stats.chisquare(u_shaped).pvalue < 1e-10


@pytest.mark.parametrize("alpha", [0.1, 0.6, 1.0, 2.5])
def test_beta_sampler_matches_scipy(alpha):
    draws = A.sample_beta(20000, alpha, torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    assert np.all((draws >= 0) & (draws <= 1))
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def contrastive_crop_tops(n: int, side: int, crop: int, p: float, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """An independent reimplementation of ContrastiveCrop's placement along one axis (xyupeng/ContrastiveCrop,
    ``ContrastiveCrop.get_params``, pixel-rounded as theirs): the start range is clamped first, then Beta-spread."""
    low, high = 0.5 - p / 2, 0.5 + p / 2
    first = min(max(int(side * low) - crop // 2, 0), side - crop)
    last = min(max(int(side * high) - crop // 2, 0), side - crop)
    return first + ((last - first) * rng.beta(alpha, alpha, n)).astype(int)


@pytest.mark.parametrize("scale", [0.01, 0.36, 0.81], ids=["small", "medium", "large"])
def test_crop_placement_matches_contrastive_crops_sampler(scale):
    side, n, p, alpha = 1000, 20000, 0.5, 0.6  # a large image: ContrastiveCrop's pixel rounding is negligible
    crop = A.CenterSuppressedResizedCrop(32, scale=(scale, scale), ratio=(1.0, 1.0), center_fraction=p, alpha=alpha)
    boxes = crop.sample_boxes(n, side, side, torch.Generator().manual_seed(4)).double()
    size = round(math.sqrt(scale) * side)
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], torch.full((n,), float(size), dtype=torch.float64), atol=1e-2)
    assert boxes.min() >= 0 and boxes.max() <= side + 1e-3
    theirs = contrastive_crop_tops(n, side, size, p, alpha, np.random.default_rng(5))
    for ours in (boxes[:, 0].numpy(), boxes[:, 1].numpy()):
        assert stats.ks_2samp(np.floor(ours + 1e-6), theirs).pvalue > 1e-3  # their starts are whole pixels
    if scale == 0.81:  # drawing the centre first and then shifting the crop inside is a different law
        centres = side * (0.25 + 0.5 * np.random.default_rng(6).beta(alpha, alpha, n))
        shifted = np.floor(np.clip(centres - size / 2, 0, side - size))
        assert stats.ks_2samp(shifted, theirs).pvalue < 1e-10
        border = lambda tops: np.mean((tops < 0.05 * (side - size)) | (tops > 0.95 * (side - size)))  # noqa: E731
        assert border(shifted) > border(theirs) + 0.1


# --------------------------------------------------------------------------- pipelines


def test_two_views_deterministic_for_a_seed_and_uint8_equals_float():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    two = presets.build("cifar10-mocov2")
    a1, a2 = two(images, generator=torch.Generator().manual_seed(7))
    b1, b2 = two(images, generator=torch.Generator().manual_seed(7))
    c1, _ = two(images.float() / 255, generator=torch.Generator().manual_seed(7))
    d1, _ = two(images, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert torch.allclose(a1, c1, atol=1e-5)
    assert not torch.allclose(a1, d1)
    assert not torch.allclose(a1, a2)
    assert a1.dtype == torch.float32 and a1.shape == (32, 3, 32, 32)


def test_generator_on_cpu_with_global_rng_fallback():
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(0)
    first = presets.build("cifar10", image_size=16)(images)
    torch.manual_seed(0)
    second = presets.build("cifar10", image_size=16)(images)
    assert torch.equal(first[0], second[0])


@pytest.mark.parametrize("name", ["cifar10-mocov2", "cifar10-simclr", "stl10-simsiam"])
def test_sync_free_views_equal_the_subset_views(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    two = presets.build(name, image_size=32)
    subset = two(images, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(A, "avoids_host_sync", lambda device: True)
    sync_free = two(images, generator=torch.Generator().manual_seed(3))
    for a, b in zip(subset, sync_free):
        assert (a - b).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_same_generator_on_cpu():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    two = presets.build("cifar10-mocov2")
    cpu = two(images, generator=torch.Generator().manual_seed(0))
    gpu = two.cuda()(images.cuda(), generator=torch.Generator().manual_seed(0))
    for a, b in zip(cpu, gpu):
        assert (a - b.cpu()).abs().max() < 1e-3
