"""Folders of one's own images (``hallucinator.data.folder``) and the stratified subset helper, on generated folders."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hallucinator.data import FileImageDataset, ImageDataset, batch_loader, build_dataset
from hallucinator.data.folder import FolderOptions, choose_image_size, missing_test_split
from hallucinator.data.subset import stratified_subset


def _pixels(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _jpeg_bytes(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_pixels(seed, 20, 20)).save(out, format="JPEG")
    return out.getvalue()


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _load(root: Path, split: str = "pretrain", cache: Path | None = None, **options):
    size = options.pop("image_size", None)
    return build_dataset(
        "imagefolder",
        root,
        split,
        image_size=size,
        cache_dir=cache or root.parent / "cache",
        folder=FolderOptions(**options),
    )


# ---- stratified subsets


def _largest_remainder(counts: dict[int, int], size: int) -> dict[int, int]:
    """Independent reference: exact fractions, floor, then the largest remainders (smaller label first on ties)."""
    total = sum(counts.values())
    exact = {c: Fraction(n * size, total) for c, n in counts.items()}
    quota = {c: int(q) for c, q in exact.items()}
    left = size - sum(quota.values())
    for c in sorted(counts, key=lambda c: (-(exact[c] - quota[c]), c))[:left]:
        quota[c] += 1
    return quota


@pytest.mark.parametrize("size", [1, 7, 30, 61])
def test_stratified_subset_keeps_each_class_share(size):
    labels = torch.tensor([2] * 25 + [0] * 20 + [-1] * 9 + [1] * 7).roll(13)  # unsorted, with unlabeled
    index = stratified_subset(labels, size, seed=3)
    assert index.tolist() == sorted(set(index.tolist())) and len(index) == size
    counts = {c: int((labels == c).sum()) for c in (-1, 0, 1, 2)}
    chosen = {c: int((labels[index] == c).sum()) for c in counts}
    assert chosen == _largest_remainder(counts, size)
    assert torch.equal(stratified_subset(labels, size, seed=3), index)  # a pure function of the seed
    if 0 < size < len(labels):
        assert any(not torch.equal(stratified_subset(labels, size, seed=s), index) for s in range(4, 8))
    with pytest.raises(ValueError, match="62 images"):
        stratified_subset(labels, 62)


# ---- sizes and modes


def test_mixed_sizes_and_modes_become_rgb_at_the_chosen_size(tmp_path):
    root = tmp_path / "photos"
    gray16 = (np.random.default_rng(5).integers(0, 65536, (24, 24))).astype(np.uint16)
    _save(root / "a_rgb.png", Image.fromarray(_pixels(0, 24, 24)))
    _save(root / "b_gray.png", Image.fromarray(_pixels(1, 24, 24)[..., 0], mode="L"))
    _save(
        root / "c_rgba.png",
        Image.fromarray(np.dstack([_pixels(2, 24, 24), np.full((24, 24), 9, np.uint8)]), mode="RGBA"),
    )
    _save(root / "d_palette.bmp", Image.fromarray(_pixels(3, 24, 24)).quantize(8))
    _save(root / "e_gray16.png", Image.fromarray(gray16))
    _save(root / "f_cmyk.jpg", Image.fromarray(_pixels(4, 60, 40)).convert("CMYK"))
    _save(root / "g_big.webp", Image.fromarray(_pixels(6, 80, 120)), lossless=True)
    data = _load(root)
    assert isinstance(data, ImageDataset) and data.labels.tolist() == [-1] * 7 and data.classes == []
    # sizes 24 (x5), 40x60 and 120x80: the median shorter side is 24, reported with the reason
    assert data.images.shape == (7, 3, 24, 24)
    assert "median shorter side (24 px)" in data.report.size_reason and "--data.image_size=S" in data.report.size_reason
    expected = {
        0: _pixels(0, 24, 24),
        1: np.repeat(_pixels(1, 24, 24)[..., :1], 3, axis=2),
        2: _pixels(2, 24, 24),
        3: np.asarray(Image.fromarray(_pixels(3, 24, 24)).quantize(8).convert("RGB")),
        4: np.repeat(((gray16.astype(np.int64) + 128) // 257).astype(np.uint8)[..., None], 3, axis=2),
    }
    for i, pixels in expected.items():
        assert torch.equal(data.images[i], _chw(pixels)), i
    # a 60x40 CMYK JPEG, resized (shorter side 24) and centre-cropped
    cmyk = Image.open(root / "f_cmyk.jpg").convert("RGB").resize((24, 36), Image.BILINEAR, reducing_gap=None)
    assert torch.equal(data.images[5], _chw(np.asarray(cmyk.crop((0, 6, 24, 30)))))
    resized = _load(root, image_size=16)
    assert resized.images.shape == (7, 3, 16, 16) and resized.report.size_reason.startswith("16 x 16 (data.image_size)")


def test_default_size_keeps_small_square_sets_and_shrinks_the_rest() -> None:
    assert choose_image_size([[32, 32]] * 3, None)[0] is None  # a CIFAR-like set keeps its size
    assert choose_image_size([[4032, 3024]] * 3, None)[0] == 224  # one camera's photos: capped
    assert choose_image_size([[100, 60]] * 2, None)[0] == 60  # equal but not square: shorter side
    size, reason = choose_image_size([[50, 40], [90, 70], [300, 200], [30, 30]], None)
    assert size == 55 and "4 different sizes (shorter sides 30-200 px)" in reason  # median of 30, 40, 70, 200
    assert choose_image_size([[50, 40]], 16) == (16, "16 x 16 (data.image_size)")


def test_exif_orientation_is_applied_by_both_decoders(tmp_path) -> None:
    from hallucinator.data import decode as D

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 20 high, shown rotated 90 degrees clockwise
    Image.fromarray(_pixels(0, 20, 40)).save(path, exif=exif, quality=95)
    upright = np.asarray(Image.open(path).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    decoded = D.decode_image(path.read_bytes(), path.name)
    assert decoded.shape == (40, 20, 3) and np.array_equal(decoded, upright)
    streamed = D.read_file(str(path), 20).astype(np.int64)  # torchvision.io, as streamed datasets decode
    cached = D.decode_image(path.read_bytes(), path.name, 20).astype(np.int64)
    assert streamed.shape == cached.shape == (20, 20, 3) and np.abs(streamed - cached).mean() < 8


# ---- layouts: unlabeled, nested, labeled, held out


def _tree(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        _save(root / name, Image.fromarray(_pixels(i, 8, 8)))


def test_flat_nested_and_labeled_folders(tmp_path):
    flat = tmp_path / "flat"
    _tree(flat, ["x.png", "y.png", "trip/z.png"])
    assert _load(flat).labels.tolist() == [-1, -1, -1]  # loose images: no class folders
    assert "no labels" in missing_test_split(flat)
    nested = tmp_path / "nested"
    _tree(nested, ["2021/a.png", "2021/b.png", "2022/c.png", "2022/deep/d.png"])
    auto = _load(nested)
    assert auto.classes == ["2021", "2022"] and auto.labels.tolist() == [0, 0, 1, 1]
    assert "--data.holdout_fraction=0.1" in missing_test_split(nested)
    plain = _load(nested, labels="none")
    assert plain.labels.tolist() == [-1] * 4 and plain.classes == []
    with pytest.raises(ValueError, match="not in a class folder.*--data.labels=none"):
        _load(flat, labels="folders")
    with pytest.raises(FileNotFoundError, match="no test split"):
        _load(nested, "test")


def test_holdout_is_a_seeded_stratified_split(tmp_path):
    root = tmp_path / "labeled"
    _tree(root, [f"cat/{i}.png" for i in range(12)] + [f"dog/{i}.png" for i in range(8)])
    options = dict(holdout_fraction=0.25)
    assert missing_test_split(root, FolderOptions(**options)) is None
    train, test, pretrain = (_load(root, split, **options) for split in ("train", "test", "pretrain"))
    assert len(test) == 5 and len(train) == 15 and torch.equal(pretrain.images, train.images)
    assert torch.bincount(test.labels).tolist() == [3, 2]  # 12:8 of 5 -> 3, 2
    all_pixels = {bytes(image.numpy()) for image in _load(root, "train").images}
    held, kept = {bytes(i.numpy()) for i in test.images}, {bytes(i.numpy()) for i in train.images}
    assert not held & kept and held | kept == all_pixels
    with pytest.raises(ValueError, match="data.holdout_fraction"):
        _load(tmp_path / "labeled" / "cat", holdout_fraction=0.25)


# ---- odd files


def test_unreadable_files_are_all_named_or_skipped_and_non_images_counted(tmp_path):
    root = tmp_path / "photos"
    _tree(root, ["a.png", "b.png", "sub/c.png"])
    (root / "sub" / "truncated.jpg").write_bytes(_jpeg_bytes(0)[:200])
    (root / "garbage.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("x")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "thumb.png").write_bytes(b"x")
    with pytest.raises(ValueError) as error:
        _load(root)
    message = str(error.value)
    assert message.startswith("2 unreadable images in") and "\n" not in message
    assert "garbage.png" in message and "sub/truncated.jpg" in message and "--data.skip_unreadable=true" in message
    assert not list((tmp_path / "cache").glob("*.npy"))
    data = _load(root, skip_unreadable=True)
    assert len(data) == 3 and data.report.unreadable == ["garbage.png", "sub/truncated.jpg"]
    assert data.report.ignored_files == 3  # notes.txt, .DS_Store, .hidden/
    assert any("skipped 2 unreadable" in line for line in data.report.lines())
    assert any("ignored 3 files" in line for line in data.report.lines())


# ---- streaming


def test_a_folder_over_the_memory_budget_streams_the_same_pixels(tmp_path):
    root = tmp_path / "photos"
    _tree(root, [f"{i:02d}.png" for i in range(10)])
    _save(root / "gray.png", Image.fromarray(_pixels(50, 8, 8)[..., 0], mode="L"))
    cached = _load(root)
    streamed = _load(root, memory_budget_gb=10 * 3 * 8 * 8 / 1e9)  # 11 images of 192 bytes: over by one
    assert isinstance(cached, ImageDataset) and isinstance(streamed, FileImageDataset)
    assert streamed.report.streamed and not cached.report.streamed
    assert "streaming" in streamed.report.lines()[0] and "memory-mapped cache" in cached.report.lines()[0]
    batches = list(batch_loader(streamed, 4, shuffle=False, drop_last=False, num_workers=2, rank=0, world_size=1))
    assert torch.equal(torch.cat([images for images, _ in batches]), cached.images)
