"""batch_loader (coverage, determinism, workers; its StepSampler: tests/data/test_sampler.py), presets, eval transform and show-augmentations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from hallucinator.cli import main as cli_main
from hallucinator.data import ImageDataset, StepSampler, augment, batch_loader, eval_transform, presets


def _dataset(n: int = 37, size: int = 8) -> ImageDataset:
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageDataset(images, torch.arange(n) % 5, [str(i) for i in range(5)])


def _epoch(loader) -> list[torch.Tensor]:
    return [labels for *_, labels in loader]


def test_batches_cover_every_sample_once_and_match_the_dataset():
    data = _dataset()
    data.labels = torch.arange(37) * 10  # unique labels: each one names its image's row
    loader = batch_loader(data, 8, shuffle=True, drop_last=False, seed=3)
    seen = []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 8, 8)
        assert torch.equal(images, data.images[labels // 10])  # every image travels with its own label
        seen.append(labels)
    assert [len(b) for b in seen] == [8, 8, 8, 8, 5]
    order = StepSampler(37, 8, shuffle=True, drop_last=False, seed=3).order(0)
    assert sorted(order.tolist()) == list(range(37))
    assert torch.equal(torch.cat(seen), data.labels[order])


def test_deterministic_per_seed_new_order_per_epoch_and_set_epoch():
    data = _dataset()
    a = batch_loader(data, 8, shuffle=True, drop_last=True, seed=0)
    b = batch_loader(data, 8, shuffle=True, drop_last=True, seed=0)
    epoch0 = [x.tolist() for x in _epoch(a)]
    assert len(epoch0) == 4 and all(len(x) == 8 for x in epoch0)
    assert epoch0 == [x.tolist() for x in _epoch(b)]
    s1 = StepSampler(37, 8, shuffle=True, drop_last=True, seed=0)
    e0, e1 = [x.tolist() for x in s1], [x.tolist() for x in s1]
    assert e0 != e1  # the next pass is the next epoch: a new permutation
    s2 = StepSampler(37, 8, shuffle=True, drop_last=True, seed=0)
    s2.set_epoch(1)
    assert [x.tolist() for x in s2] == e1
    s2.set_epoch(1)  # what Lightning does: the same epoch gives the same batches
    assert [x.tolist() for x in s2] == e1
    assert [x.tolist() for x in StepSampler(37, 8, shuffle=True, drop_last=True, seed=1)] != e0
    unshuffled = [x.tolist() for x in StepSampler(10, 4, shuffle=False, drop_last=False)]
    assert unshuffled == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_transform_in_workers_is_deterministic_and_independent_of_worker_count():
    data = _dataset(n=48, size=16)
    two = presets.build("cifar10", image_size=16)
    kwargs = dict(shuffle=True, drop_last=True, seed=11, transform=two)
    in_main = list(batch_loader(data, 16, **kwargs))
    in_workers = list(batch_loader(data, 16, num_workers=2, **kwargs))
    assert len(in_main) == 3
    for (a1, a2, la), (b1, b2, lb) in zip(in_main, in_workers):
        assert torch.equal(la, lb) and torch.equal(a1, b1) and torch.equal(a2, b2)
        assert a1.shape == (16, 3, 16, 16) and a1.dtype == torch.float32
    loader = batch_loader(data, 16, **kwargs)
    epoch0, epoch1 = list(loader), list(loader)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


# --------------------------------------------------------------------------- presets


def _ops(view: augment.Compose) -> dict[str, torch.nn.Module]:
    return {type(op).__name__: op for op in view.ops}


def test_presets_follow_the_paper_recipes():
    cifar = presets.build("cifar10-mocov2")
    v1, v2 = _ops(cifar.view1), _ops(cifar.view2)
    crop = v1["CenterSuppressedResizedCrop"]
    assert (crop.center_fraction, crop.alpha, crop.scale, crop.size) == (0.5, 0.6, (0.2, 1.0), (32, 32))
    assert "CenterSuppressedResizedCrop" not in v2 and v2["RandomResizedCrop"].scale == (0.2, 1.0)
    jitter = v1["ColorJitter"]
    assert (
        jitter.p == 0.8
        and jitter.ranges[0] == pytest.approx((0.6, 1.4))
        and jitter.ranges[3] == pytest.approx((-0.1, 0.1))
    )
    assert v1["RandomGrayscale"].p == 0.2 and "GaussianBlur" not in v1
    assert v1["Normalize"].mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    imagenet = _ops(presets.build("imagenet200-mocov2").view2)
    assert imagenet["RandomResizedCrop"].size == (224, 224)
    assert imagenet["GaussianBlur"].sigma == (0.1, 2.0) and imagenet["GaussianBlur"].p == 0.5
    mocov1 = _ops(presets.build("imagenet-mocov1").view1)
    assert mocov1["ColorJitter"].p == 1.0 and mocov1["ColorJitter"].ranges[3] == pytest.approx((-0.4, 0.4))
    assert "GaussianBlur" not in mocov1
    assert _ops(presets.build("imagenet-simclr").view1)["CenterSuppressedResizedCrop"].scale == (0.08, 1.0)
    assert _ops(presets.build("stl10").view1)["CenterSuppressedResizedCrop"].size == (96, 96)
    assert _ops(presets.build("tiny-imagenet-simsiam").view2)["RandomResizedCrop"].size == (64, 64)
    for name in presets.PRESETS:
        presets.build(name)


def test_preset_overrides():
    both = presets.build("cifar10", center_crop_views=(1, 2), center_fraction=0.3, alpha=0.1, scale=(0.3, 1.0))
    for view in (both.view1, both.view2):
        crop = _ops(view)["CenterSuppressedResizedCrop"]
        assert (crop.center_fraction, crop.alpha, crop.scale) == (0.3, 0.1, (0.3, 1.0))
    with pytest.warns(FutureWarning, match=r"'p' is now 'center_fraction' \(data.augment.center_fraction\)"):
        old = presets.build("cifar10", p=0.3)  # the key's name until 2026-11-30 still works
    assert _ops(old.view1)["CenterSuppressedResizedCrop"].center_fraction == 0.3
    none = presets.build("cifar10", center_crop_views=())
    assert "CenterSuppressedResizedCrop" not in _ops(none.view1)
    half = _ops(presets.build("cifar10", jitter_strength=0.5).view1)["ColorJitter"]
    assert half.ranges[0] == pytest.approx((0.8, 1.2))
    assert "GaussianBlur" in _ops(presets.build("cifar10", blur=True).view1)
    assert _ops(presets.build("cifar10", image_size=24).view1)["CenterSuppressedResizedCrop"].size == (24, 24)
    with pytest.raises(ValueError, match="unknown augmentation override"):
        presets.build("cifar10", alhpa=0.1)
    with pytest.raises(ValueError, match="unknown preset"):
        presets.build("mnist-mocov2")
    with pytest.raises(ValueError, match="center_crop_views"):
        presets.build("cifar10", center_crop_views=(3,))


def test_eval_transform_normalises_small_images_and_centre_crops_imagenet():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = TF.normalize(images.float() / 255, list(mean), list(std))
    assert (eval_transform("cifar10")(images) - expected).abs().max() < 1e-5
    stored = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = TF.normalize(TF.center_crop(stored.float() / 255, [224, 224]), list(mean), list(std))
    assert (eval_transform("imagenet")(stored) - expected).abs().max() < 1e-5
    big = torch.rand(2, 3, 300, 400)
    reference = TF.center_crop(TF.resize(big, 256, antialias=True), [224, 224])
    ours = eval_transform("imagenet")(big) * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert ours.shape == (2, 3, 224, 224) and (ours - reference.clamp(0, 1)).abs().max() < 1e-3


# --------------------------------------------------------------------------- show-augmentations


def test_show_augmentations_writes_a_png(tmp_path: Path):
    root = tmp_path / "data"
    for k in range(3):
        path = root / "train" / f"c{k}" / "x.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()).save(path)
    output = tmp_path / "grid.png"
    code = cli_main(
        [
            "show-augmentations",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(root),
            "--preset",
            "cifar10-mocov2",
            "--output",
            str(output),
            "--num-images",
            "3",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(output) as image:
        assert image.size[0] > 300 and image.size[1] > 300


def test_show_augmentations_reports_bad_input_in_one_line(tmp_path: Path, capsys):
    missing = ["show-augmentations", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")]
    assert cli_main([*missing, "--output", str(tmp_path / "grid.png")]) == 2
    assert capsys.readouterr().err.startswith(f"hallucinator show-augmentations: cifar10 not found at {tmp_path}")
    assert (
        cli_main(["show-augmentations", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--preset", "nope"]) == 2
    )
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_run_view_reproduces_the_module_forward():
    from hallucinator.evaluation.augmentation_grid import run_view

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    two = presets.build("cifar10-mocov2")
    expected = two.view1(images, generator=torch.Generator().manual_seed(4))
    out, boxes = run_view(two.view1, images, torch.Generator().manual_seed(4))
    assert torch.equal(out, expected) and boxes.shape == (6, 4)


def test_lightning_consumes_the_loader_and_sets_its_epoch(tmp_path):
    import lightning as L

    base = _dataset(n=24)
    data = ImageDataset(base.images, torch.arange(24), base.classes)  # labels = indices: batches identify themselves
    seen: list[list[int]] = []

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_index):
            images, labels = batch
            assert images.dtype == torch.uint8 and images.shape == (8, 3, 8, 8)
            seen.append(labels.tolist())
            return (self.weight * images.float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = batch_loader(data, 8, shuffle=True, drop_last=True, seed=2)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Recorder(), loader)
    expected = []
    for epoch in range(2):
        sampler = StepSampler(24, 8, shuffle=True, drop_last=True, seed=2)
        sampler.set_epoch(epoch)
        expected += [data.labels[batch].tolist() for batch in sampler]
    assert seen == expected
    assert seen[:3] != seen[3:]  # epoch 1 is a new permutation: Lightning called set_epoch
