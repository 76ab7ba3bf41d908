"""Dataset readers and the decode cache, on synthetic fixtures of every format (plus the real CIFAR-10)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd

from hallucinator.data import FileImageDataset, ImageDataset, batch_loader, build_dataset
from hallucinator.data import decode as D


def _rgb(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


@pytest.fixture()
def odd_modes_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """ImageFolder with RGB, grayscale, RGBA and palette PNGs (lossless, so pixels are known)."""
    root = tmp_path / "folder"
    expected: dict[str, np.ndarray] = {}
    rgb = _rgb(0)
    gray = _rgb(1)[..., 0]
    rgba = np.dstack([_rgb(2), np.full((16, 16), 77, np.uint8)])
    palette = Image.fromarray(_rgb(3)).quantize(16)
    palette.info["transparency"] = 0
    images = {
        "train/cat/a.png": Image.fromarray(rgb),
        "train/cat/b.png": Image.fromarray(gray, mode="L"),
        "train/dog/c.png": Image.fromarray(rgba, mode="RGBA"),
        "train/dog/d.png": palette,
        "test/dog/e.png": Image.fromarray(_rgb(4)),
        "unlabeled/f.png": Image.fromarray(_rgb(5)),
    }
    for name, image in images.items():
        _save_png(root / name, image)
    expected["train/cat/a.png"] = rgb
    expected["train/cat/b.png"] = np.repeat(gray[..., None], 3, axis=2)
    expected["train/dog/c.png"] = rgba[..., :3]
    expected["train/dog/d.png"] = np.asarray(palette.convert("RGBA"))[..., :3]
    expected["test/dog/e.png"] = _rgb(4)
    expected["unlabeled/f.png"] = _rgb(5)
    return root, expected


def _tar(source: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(source.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(source)), recursive=False)
    return target


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@pytest.mark.parametrize("as_archive", [False, True])
def test_imagefolder_converts_modes_to_rgb_and_labels_by_sorted_class(odd_modes_folder, tmp_path, as_archive):
    root, expected = odd_modes_folder
    location = _tar(root, tmp_path / "folder.tar.gz") if as_archive else root
    train = build_dataset("imagefolder", location, "train", cache_dir=tmp_path / "cache")
    assert isinstance(train, ImageDataset)
    assert train.classes == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert train.images.dtype == torch.uint8 and train.images.shape == (4, 3, 16, 16)
    for i, name in enumerate(["train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "train/dog/d.png"]):
        assert torch.equal(train.images[i], _chw(expected[name])), name
    pretrain = build_dataset("imagefolder", location, "pretrain", cache_dir=tmp_path / "cache")
    assert pretrain.labels.tolist() == [0, 0, 1, 1, -1]
    assert torch.equal(pretrain.images[4], _chw(expected["unlabeled/f.png"]))
    test = build_dataset("imagefolder", location, "test", cache_dir=tmp_path / "cache")
    assert test.labels.tolist() == [1] and test.classes == ["cat", "dog"]
    images, labels = train[torch.tensor([3, 0])]
    assert torch.equal(images[0], train.images[3]) and labels.tolist() == [1, 0]


def test_odd_sized_image_is_named_or_resized(tmp_path):
    root = tmp_path / "sizes"
    _save_png(root / "train/a/one.png", Image.fromarray(_rgb(0, 16, 16)))
    _save_png(root / "train/a/two.png", Image.fromarray(_rgb(1, 16, 24)))
    _save_png(root / "test/a/three.png", Image.fromarray(_rgb(2, 40, 20)))
    # an archive names the file and the flag; a directory (one's own images) picks a size instead
    with pytest.raises(ValueError, match=r"two\.png.*--data\.image_size=S"):
        build_dataset("imagefolder", _tar(root, tmp_path / "sizes.tar"), "train", cache_dir=tmp_path / "cache")
    chosen = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    assert chosen.images.shape == (2, 3, 16, 16) and "median shorter side (16 px)" in chosen.report.size_reason
    resized = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache", image_size=8)
    assert resized.images.shape == (2, 3, 8, 8)
    # Policy: shorter side to 8, centre crop; reference computed with PIL directly.
    reference = Image.fromarray(_rgb(1, 16, 24)).resize((12, 8), Image.BILINEAR, reducing_gap=None).crop((2, 0, 10, 8))
    assert torch.equal(resized.images[1], _chw(np.asarray(reference)))
    # Named datasets store their native size: a 40 x 20 image in a "cifar10" folder becomes 32 x 32.
    test = build_dataset("cifar10", root, "test", cache_dir=tmp_path / "cache")
    assert test.images.shape == (1, 3, 32, 32)


def test_corrupt_jpeg_error_names_the_file(tmp_path):
    root = tmp_path / "corrupt"
    good = io.BytesIO()
    Image.fromarray(_rgb(0)).save(good, format="JPEG")
    (root / "train/a").mkdir(parents=True)
    (root / "train/a/good.jpg").write_bytes(good.getvalue())
    (root / "train/a/broken.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (root / "train/a/garbage.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"(broken|garbage)\.jpg"):
        build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy")), "a failed decode must not leave a cache behind"


def test_cache_is_reused_and_invalidated_by_a_changed_source(odd_modes_folder, tmp_path, monkeypatch):
    root, _ = odd_modes_folder
    first = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    assert isinstance(first.images.untyped_storage(), torch.UntypedStorage)
    calls = []
    original = D.decode_image
    monkeypatch.setattr(D, "decode_image", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    again = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    assert calls == [] and torch.equal(again.images, first.images)
    build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache", image_size=8)  # other options
    build_dataset("imagefolder", root, "test", cache_dir=tmp_path / "cache")  # other split
    cached = set((tmp_path / "cache").glob("*.npy"))
    _save_png(root / "train/cat/a.png", Image.fromarray(_rgb(9)))  # new content, size and mtime
    changed = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    assert calls and torch.equal(changed.images[0], _chw(_rgb(9)))
    # the decodes of the old version (both sizes), which no key reaches again, are deleted; the test split's stays
    assert torch.equal(first.images, again.images)  # still mapped: deleting does not pull the data from under it
    now = set((tmp_path / "cache").glob("*.npy"))
    assert len(cached - now) == 4 and len(now - cached) == 2 and len(now) == 4
    assert all(path.name.startswith("imagefolder-train-") for path in cached ^ now)
    calls.clear()
    build_dataset("imagefolder", root, "test", cache_dir=tmp_path / "cache")
    assert calls == []
    monkeypatch.setenv("HALLUCINATOR_CACHE", str(tmp_path / "env-cache"))
    build_dataset("imagefolder", root, "test")
    assert list((tmp_path / "env-cache").glob("imagefolder-test-*.images.npy"))


def test_full_disk_is_a_one_line_error_before_decoding(odd_modes_folder, tmp_path, monkeypatch):
    import errno
    import os

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    decoded = []
    original = D.decode_image
    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    monkeypatch.setattr(D, "decode_image", lambda *a, **k: decoded.append(a[1]) or original(*a, **k))
    with pytest.raises(
        ValueError,
        match=r"^no room in the cache directory .*cache for the decoded imagefolder "
        r"train split \(0 MB, \d+ MB free\): .* --data.cache_dir \(or \$HALLUCINATOR_CACHE\)",
    ):
        build_dataset("imagefolder", odd_modes_folder[0], "train", cache_dir=tmp_path / "cache")
    # failed before decoding (only the first image was read, for the split's shape), nothing left behind
    assert len(decoded) == 1 and not list((tmp_path / "cache").glob("*.npy"))


def test_dataset_pickles_without_copying_the_memory_map(odd_modes_folder, tmp_path):
    root, _ = odd_modes_folder
    data = build_dataset("imagefolder", root, "train", cache_dir=tmp_path / "cache")
    payload = pickle.dumps(data)
    assert len(payload) < data.images.numel()
    restored = pickle.loads(payload)
    assert torch.equal(restored.images, data.images) and torch.equal(restored.labels, data.labels)


def _write_cifar_batches(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return batches


def test_cifar_batches_py_read_with_torchvision(tmp_path, monkeypatch):
    # Synthetic files fail torchvision's md5 checks, which are torchvision's business, not ours.
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *args, **kwargs: True)
    batches = _write_cifar_batches(tmp_path / "data", np.random.default_rng(0))
    train = build_dataset("cifar10", tmp_path / "data", "train", cache_dir=tmp_path / "cache")
    names = [f"data_batch_{i}" for i in range(1, 6)]
    expected = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.tolist() == sum((batches[n][1] for n in names), [])
    assert train.classes == [f"c{i}" for i in range(10)]
    # The batches folder itself is accepted as the location too.
    test = build_dataset("cifar10", tmp_path / "data" / "cifar-10-batches-py", "test", cache_dir=tmp_path / "cache")
    assert torch.equal(test.images, torch.from_numpy(batches["test_batch"][0].reshape(-1, 3, 32, 32)))


def test_missing_dataset_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_dataset("cifar10", tmp_path / "nothing", "train")
    with pytest.raises(FileNotFoundError, match="stl10_binary"):
        build_dataset("stl10", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        build_dataset("tiny-imagenet", tmp_path, "test")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("mnist", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("cifar10", tmp_path, "validation")


def test_stl10_binaries_train_plus_unlabeled_for_pretraining(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = {
        split: rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        for split, n in [("train", 3), ("test", 2), ("unlabeled", 4)]
    }
    labels = {"train": np.array([1, 10, 4], np.uint8), "test": np.array([2, 3], np.uint8)}
    for split, array in images.items():
        # STL-10 stores each image column-major: the file holds (N, 3, W, H).
        (folder / f"{split}_X.bin").write_bytes(array.transpose(0, 1, 3, 2).tobytes())
    for split, array in labels.items():
        (folder / f"{split}_y.bin").write_bytes(array.tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    pretrain = build_dataset("stl10", tmp_path, "pretrain", cache_dir=tmp_path / "cache")
    assert torch.equal(pretrain.images, torch.from_numpy(np.concatenate([images["train"], images["unlabeled"]])))
    assert pretrain.labels.tolist() == [0, 9, 3, -1, -1, -1, -1]
    train = build_dataset("stl10", tmp_path, "train", cache_dir=tmp_path / "cache")
    assert train.labels.tolist() == [0, 9, 3] and train.classes[0] == "k0"
    test = build_dataset("stl10", tmp_path, "test", cache_dir=tmp_path / "cache")
    assert torch.equal(test.images, torch.from_numpy(images["test"])) and test.labels.tolist() == [1, 2]


def test_tiny_imagenet_native_layout_with_val_annotations(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    train_pixels = {}
    for k, wnid in enumerate(wnids):
        for j in range(2):
            pixels = _rgb(10 * k + j, 64, 64)
            _save_png(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", Image.fromarray(pixels))
            train_pixels[(wnid, j)] = pixels
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    rows = []
    for j, wnid in enumerate(["n03", "n01", "n03", "n02"]):
        _save_png(root / "val/images" / f"val_{j}.JPEG", Image.fromarray(_rgb(100 + j, 64, 64)))
        rows.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t10\t10")
    (root / "val/val_annotations.txt").write_text("\n".join(rows) + "\n")
    train = build_dataset("tiny-imagenet", tmp_path, "train", cache_dir=tmp_path / "cache")
    assert train.classes == ["n01", "n02", "n03"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(train.images[2], _chw(train_pixels[("n02", 0)]))
    test = build_dataset("tiny-imagenet", root, "test", cache_dir=tmp_path / "cache")
    assert test.labels.tolist() == [2, 0, 2, 1]
    assert torch.equal(test.images[1], _chw(_rgb(101, 64, 64)))


def test_imagenet_streams_files_and_imagenet200_chooses_seeded_classes(tmp_path):
    root = tmp_path / "imagenet"
    for k in range(203):
        for split in ("train", "val"):
            size = (12, 20) if k % 2 else (20, 12)
            _save_png(root / split / f"n{k:04d}" / f"{split}_{k}.png", Image.fromarray(_rgb(k, *size)))
    full = build_dataset("imagenet", root, "train", image_size=8)
    assert isinstance(full, FileImageDataset) and len(full) == 203
    images, labels = full[torch.tensor([0, 5])]
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8 and labels.tolist() == [0, 5]
    sub = build_dataset("imagenet200", root, "train", image_size=8, class_list="random", seed=1)
    again = build_dataset("imagenet200", root, "test", image_size=8, class_list="random", seed=1)
    other = build_dataset("imagenet200", root, "train", image_size=8, class_list="random", seed=2)
    assert len(sub.classes) == 200 and sub.classes == again.classes and sub.classes != other.classes
    assert sorted(sub.labels.tolist()) == list(range(200))
    listed = tmp_path / "classes.txt"
    listed.write_text("n0007\nn0003\n")
    two = build_dataset("imagenet200", root, "test", image_size=8, class_list=listed)
    assert two.classes == ["n0007", "n0003"] and len(two) == 2
    assert Path(two.files[two.labels.tolist().index(0)]).parent.name == "n0007"
    batches = list(batch_loader(two, 2, shuffle=False, drop_last=False, num_workers=1))
    assert batches[0][0].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="names 200 classes not in .*set data.class_list"):
        build_dataset("imagenet200", root, "test", image_size=8)  # the authors' wnids are not in this fake root


def test_imagenet200_defaults_to_the_authors_200_classes(tmp_path):
    from hallucinator.data.native import imagenet200_classes

    authors = imagenet200_classes()
    assert len(set(authors)) == 200 and all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in authors)
    reference = Path(__file__).resolve().parents[3] / "shared" / "reference" / "imagenet200.class"
    if reference.is_file():  # the authors' file, beside the repository on the project's machines
        assert authors == reference.read_text().split()
    root = tmp_path / "imagenet"
    extra = ["n00000001", "n99999999"]  # classes of ImageNet-1K outside the list
    for k, wnid in enumerate(sorted(authors + extra)):
        _save_png(root / "val" / wnid / f"{k}.png", Image.fromarray(_rgb(k, 8, 8)))
    subset = build_dataset("imagenet200", root, "test", image_size=8)
    assert subset.classes == authors and len(subset) == 200
    assert [Path(f).parent.name for f in subset.files] == [authors[label] for label in subset.labels.tolist()]


# --------------------------------------------------------------------------- the real CIFAR-10


@pytest.fixture(scope="session")
def real_cifar10(cifar10_archive, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cifar10-cache")
    return {
        split: build_dataset("cifar10", cifar10_archive, split, cache_dir=cache_dir) for split in ("pretrain", "test")
    }


def test_archive_loader_reads_the_real_cifar10(real_cifar10, cifar10_subset):
    train, test = real_cifar10["pretrain"], real_cifar10["test"]
    assert len(train) == 50_000 and len(test) == 10_000
    assert train.images.shape == (50_000, 3, 32, 32) and train.images.dtype == torch.uint8
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert train.classes == classes and test.classes == classes
    assert train.labels.bincount().tolist() == [5000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    # Independently decoded (conftest): the first 200 images of each class, with their labels.
    subset_images, subset_labels = cifar10_subset
    index = torch.cat([torch.nonzero(train.labels == c).squeeze(1)[:200] for c in range(10)])
    assert torch.equal(train.labels[index], subset_labels)
    assert torch.equal(train.images[index], subset_images)


def test_streamed_imagenet_decodes_like_pil(tmp_path):
    root = tmp_path / "imagenet"
    for k, size in enumerate([(30, 40), (50, 20), (24, 24)]):
        path = root / "train" / f"n{k}" / f"{k}.JPEG"
        path.parent.mkdir(parents=True)
        Image.fromarray(_rgb(k, *size)).save(path, format="JPEG", quality=90)
    plain = build_dataset("imagenet", root, "train", image_size=16)
    images, labels = plain[torch.arange(3)]
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8 and labels.tolist() == [0, 1, 2]
    # The worker path agrees with PIL's decoding of the same JPEG to within JPEG decoder rounding.
    with Image.open(plain.files[2]) as image:
        reference = _chw(np.asarray(image.convert("RGB").resize((16, 16), Image.BILINEAR, reducing_gap=None)))
    assert (images[2].int() - reference.int()).abs().float().mean() < 3
