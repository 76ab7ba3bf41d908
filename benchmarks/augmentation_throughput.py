"""Two-view augmentation throughput, CIFAR MoCo v2 recipe: ours (batched tensor ops) vs torchvision PIL.

Both run in a DataLoader with as many workers as cores, batch 512, interleaved round by round:
each round starts a fresh pass of each loader, lets it deliver one batch (workers started, queue
filled), then times the next ``--batches`` batches; ending the pass stops its workers, so no
loader's prefetching runs while another is timed.
- ``torchvision``: per-image PIL transforms (RandomResizedCrop(32, (0.2, 1)), flip,
  ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, ToTensor, Normalize) twice per image,
  the way lightly, solo-learn (without DALI) and the authors' code feed their models;
- ``ours_workers``: ``batch_loader(..., transform=presets.build("cifar10-mocov2"))``: each worker
  gathers a uint8 batch and augments it with one thread;
- ``ours_main``: ``batch_loader`` without workers and the augmentation in the main process with
  ONE thread (one core, where the others use all of them): our per-core efficiency. (Two intra-op
  threads were slower than one on this shared machine.)
- ``multicrop_main`` against ``ours_main``: DINO's multi-crop (2 global crops of 32 px and 6 local crops of
  16 px, ``hallucinator.data.multicrop``) and the two-view pipeline of the same recipe, main process, one thread,
  on the same batches, back to back in each round (``multicrop_cost`` = their time ratio per image).
On a CUDA device it also times the two views on the GPU (batch already there).

Images: the real CIFAR-10 (``../shared/datasets``) when present, else random pixels (same cost).

    python benchmarks/augmentation_throughput.py [--images 20480] [--batches 6] [--rounds 5] [--only-multicrop]

Ends with one JSON line of the figures (images per second, each image giving two views).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from hallucinator.data import ImageDataset, batch_loader, build_dataset, multicrop, presets

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
BATCH = 512


class PILTwoViews(torch.utils.data.Dataset):
    """What torchvision-based SSL code does: a PIL image per index, the transform applied twice."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image), int(self.labels[i])


def torchvision_recipe() -> T.Compose:
    r = presets.recipe("cifar10-mocov2")
    return T.Compose(
        [
            T.RandomResizedCrop(32, scale=r.scale),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(*r.jitter)], p=r.jitter_p),
            T.RandomGrayscale(r.grayscale_p),
            T.ToTensor(),
            T.Normalize(r.mean, r.std),
        ]
    )


def load_images(count: int, cache_dir: str) -> ImageDataset:
    if ARCHIVE.is_file():
        data = build_dataset("cifar10", ARCHIVE, "train", cache_dir=cache_dir)
        return ImageDataset(data.images[:count].clone(), data.labels[:count].clone(), data.classes)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return ImageDataset(images, torch.arange(count) % 10, [str(i) for i in range(10)])


def time_batches(loader, batches: int) -> float:
    """Images per second over ``batches`` batches of a fresh pass over ``loader``."""
    iterator = iter(loader)
    next(iterator)  # the first batch pays for the pipeline filling up
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(iterator)[-1])
    elapsed = time.perf_counter() - start
    del iterator
    return seen / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20480)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--cache-dir", default=None, help="dataset cache (default: a temporary folder)")
    parser.add_argument("--only-multicrop", action="store_true", help="time only multi-crop against two views")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = load_images(args.images, args.cache_dir or tmp)
    two_views = presets.build("cifar10-mocov2")
    multi_crop = multicrop.build(
        "cifar10-mocov2", multicrop.CropSpec(2, 32, (0.4, 1.0)), multicrop.CropSpec(6, 16, (0.05, 0.4))
    )
    pil = PILTwoViews(data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy(), torchvision_recipe())
    loaders = {
        "torchvision": torch.utils.data.DataLoader(pil, BATCH, shuffle=True, drop_last=True, num_workers=args.workers),
        "ours_workers": batch_loader(
            data,
            BATCH,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            transform=two_views,
        ),
        "ours_main": None,
    }
    if args.only_multicrop:
        loaders = {"ours_main": None}

    def _main_pass(views: torch.nn.Module) -> float:
        loader = batch_loader(data, BATCH, shuffle=True, drop_last=True)
        generator = torch.Generator().manual_seed(0)
        iterator = iter(loader)
        views(next(iterator)[0], generator=generator)
        start = time.perf_counter()
        seen = 0
        for _ in range(args.batches):
            images, labels = next(iterator)
            with torch.no_grad():
                views(images, generator=generator)
            seen += len(labels)
        return seen / (time.perf_counter() - start)

    def main_thread(views) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _main_pass(views)
        finally:
            torch.set_num_threads(threads)

    results: dict[str, list[float]] = {name: [] for name in [*loaders, "multicrop_main"]}
    for round_index in range(args.rounds):
        for name, loader in loaders.items():
            rate = main_thread(two_views) if loader is None else time_batches(loader, args.batches)
            results[name].append(rate)
            print(f"round {round_index + 1} {name:>14}: {rate:9.0f} images/s (two views each)", flush=True)
        results["multicrop_main"].append(main_thread(multi_crop))
        print(f"round {round_index + 1} multicrop_main: {results['multicrop_main'][-1]:9.0f} images/s", flush=True)

    figures: dict[str, object] = {name: round(statistics.median(rates)) for name, rates in results.items()}
    # Ratios per round (the loaders of one round ran back to back under the same load), then the median.
    pairs = [("multicrop_cost", "ours_main", "multicrop_main")]
    if "torchvision" in loaders:
        pairs += [
            ("speedup_workers", "ours_workers", "torchvision"),
            ("speedup_main_1thread", "ours_main", "torchvision"),
        ]
    for key, name, reference in pairs:
        ratios = [ours / theirs for ours, theirs in zip(results[name], results[reference])]
        figures[key] = round(statistics.median(ratios), 2)
        figures[key + "_min"] = round(min(ratios), 2)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        gpu_views = presets.build("cifar10-mocov2").to(device)
        images = data.images[: 4 * BATCH].to(device)
        generator = torch.Generator(device=device).manual_seed(0)
        for _ in range(3):
            gpu_views(images, generator=generator)
        torch.cuda.synchronize()
        start = time.perf_counter()
        repeats = 20
        for _ in range(repeats):
            gpu_views(images, generator=generator)
        torch.cuda.synchronize()
        figures["cuda_batch2048"] = round(repeats * images.shape[0] / (time.perf_counter() - start))
        figures["cuda_device"] = torch.cuda.get_device_name()
    figures.update(workers=args.workers, batch=BATCH, rounds=args.rounds, real_cifar10=ARCHIVE.is_file())
    if "torchvision" in loaders:
        print(
            f"ours vs torchvision PIL (median of per-round ratios): {args.workers} workers each "
            f"{figures['speedup_workers']}x, main process on one core {figures['speedup_main_1thread']}x"
        )
    print(f"multi-crop 2x32 + 6x16 costs {figures['multicrop_cost']}x the two views of 32 px per image (one core)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
