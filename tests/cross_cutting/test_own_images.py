"""A newcomer's folder of real photos (CIFAR-10 images at mixed sizes, modes and formats, one broken file):
``pretrain`` then ``embed``, from the command line, with no traceback."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hallucinator
from hallucinator.cli import main
from hallucinator.data import DATASETS

TINY = [
    "--model.width=8",
    "--batch-size=16",
    "--trainer.max_steps=2",
    "--trainer.progress_bar=false",
    "--trainer.cpu_threads=1",
    "--device=cpu",
]
MODES = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "bmp"), ("CMYK", "jpg"), ("RGB", "webp")]


@pytest.fixture(scope="module")
def photos(cifar10_subset, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """200 real images: 180 resized to random sizes in every mode, 20 lossless 32 x 32 PNGs (pixels known), in
    nested folders; plus a broken JPEG, a text file and a .DS_Store."""
    images, _ = cifar10_subset
    root = tmp_path_factory.mktemp("own") / "photos"
    rng = np.random.default_rng(0)
    exact = {}
    for n, i in enumerate(rng.permutation(len(images))[:200].tolist()):
        pixels = images[i].permute(1, 2, 0).numpy()
        folder = root / ("" if n % 3 == 0 else f"trip{n % 3}/day{n % 2}")
        folder.mkdir(parents=True, exist_ok=True)
        if n < 20:
            name = f"exact{n:03d}.png"
            Image.fromarray(pixels).save(folder / name)
            exact[(folder / name).relative_to(root).as_posix()] = pixels
            continue
        mode, ext = MODES[n % len(MODES)]
        size = tuple(int(s) for s in rng.integers(24, 97, 2))
        Image.fromarray(pixels).resize(size, Image.BILINEAR).convert(mode).save(folder / f"img{n:03d}.{ext}")
    good = io.BytesIO()
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(good, format="JPEG")
    (root / "broken.jpg").write_bytes(good.getvalue()[:100])
    (root / "notes.txt").write_text("holiday 2026")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root, exact


def test_a_folder_of_mixed_photos_pretrains_then_embeds(photos, tmp_path, capsys) -> None:
    root, exact = photos
    run, cache = tmp_path / "run", tmp_path / "cache"
    base = [
        "pretrain",
        "configs/base/small.yaml",
        "--dataset=imagefolder",
        "--data-dir",
        str(root),
        "--output-dir",
        str(run),
        "--data.cache_dir",
        str(cache),
        *TINY,
    ]
    assert main(base) == 2  # the default: stop before training, naming the broken file and the fix
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 unreadable images" in err and "broken.jpg" in err
    assert "--data.skip_unreadable=true" in err and "Traceback" not in err
    assert main([*base, "--data.skip_unreadable=true", "--data.image_size=32"]) == 0
    out = capsys.readouterr().out
    assert "kNN monitor and final kNN skipped:" in out and "has no labels" in out  # small.yaml monitors kNN
    assert "(pretrain): 200 images, unlabeled; decoded once into the memory-mapped cache" in out
    assert "skipped 1 unreadable images" in out and "ignored 2 files" in out
    assert (run / "unreadable.txt").read_text() == "broken.jpg\n"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    output = tmp_path / "embeddings.npz"
    embed = ["embed", str(checkpoint), "--data-dir", str(root), "--no-progress", "--batch-size", "64"]
    assert main([*embed, "--output", str(output)]) == 2  # the broken file again, with embed's own flag
    assert "--skip-unreadable" in capsys.readouterr().err
    assert main([*embed, "--output", str(output), "--skip-unreadable"]) == 0
    assert "wrote 200 embeddings of 64 dimensions (backbone, images at 32 px)" in capsys.readouterr().out
    saved = np.load(output)
    paths, vectors = saved["paths"].tolist(), saved["embeddings"]
    assert len(paths) == 200 == len(set(paths)) and vectors.shape == (200, 64) and vectors.dtype == np.float32
    assert all((root / p).is_file() for p in paths) and "broken.jpg" not in paths

    # each row is the backbone's output on that image, normalised independently here
    backbone = hallucinator.load_backbone(checkpoint)
    assert not backbone.training
    info = DATASETS["imagefolder"]
    names = sorted(exact)
    pixels = torch.from_numpy(np.stack([exact[n] for n in names])).permute(0, 3, 1, 2).float() / 255
    normalised = (pixels - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = backbone(normalised).numpy()
    rows = vectors[[paths.index(n) for n in names]]
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-4)

    projected = tmp_path / "projected.npz"
    assert main([*embed, "--output", str(projected), "--skip-unreadable", "--head", "projector"]) == 0
    assert np.load(projected)["embeddings"].shape == (200, 128)  # SimCLR's projector output
    assert np.load(projected)["paths"].tolist() == paths


def test_parquet_output(photos, tmp_path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is the optional [parquet] extra; not installed here")
    import pyarrow.parquet as pq

    from hallucinator.evaluation.embed import save_embeddings

    vectors = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    table = pq.read_table(save_embeddings(tmp_path / "e.parquet", ["a.jpg", "b/c.png", "d.webp"], vectors))
    assert table.column("path").to_pylist() == ["a.jpg", "b/c.png", "d.webp"]
    np.testing.assert_array_equal(np.asarray(table.column("embedding").to_pylist(), dtype=np.float32), vectors)


def test_a_labeled_folder_over_the_budget_streams_and_holds_out_a_knn_split(photos, tmp_path, capsys) -> None:
    root, exact = photos
    labeled = tmp_path / "labeled"
    for n, name in enumerate(sorted(exact)):  # 2 classes of 10 lossless images
        (labeled / f"class{n % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(exact[name]).save(labeled / f"class{n % 2}" / f"{n}.png")
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--dataset=imagefolder",
            "--data-dir",
            str(labeled),
            "--output-dir",
            str(tmp_path / "run"),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            *TINY,
            "--data.holdout_fraction=0.2",
            "--data.memory_budget_gb=0.00001",
            "--data.num_workers=2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "(pretrain): 16 images, 2 classes; streaming from the files, decoded in DataLoader workers" in out
    assert "decoding in 2 DataLoader workers" in out
    assert "kNN top-1 on the imagefolder test set (all images):" in out  # on the 4 held-out images


def test_an_archive_without_test_split_keeps_the_training_and_says_why_knn_did_not_run(
    photos, tmp_path, capsys
) -> None:
    import tarfile

    root, exact = photos
    archive = tmp_path / "labeled.tar"
    with tarfile.open(archive, "w") as tar:
        for n, name in enumerate(sorted(exact)):
            tar.add(root / name, arcname=f"train/class{n % 2}/{n}.png")
    code = main(
        [
            "pretrain",
            "configs/base/small.yaml",
            "--dataset=imagefolder",
            "--data-dir",
            str(archive),
            "--output-dir",
            str(tmp_path / "run"),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            *TINY,
            "--trainer.knn_every_n_epochs=0",
        ]
    )
    assert code == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after Lightning's own INFO lines
    assert last.startswith("hallucinator pretrain: final kNN not run: archive") and "has no test images" in last
    assert "--no-knn" in last and (tmp_path / "run/checkpoints/last.ckpt").is_file()
