"""Profile of the GPU-resident data path: host syncs per step, host-to-device copies, GPU busy fraction.

One pre-training step here is what the engine does per batch: gather the batch from the
device-resident uint8 dataset (``engine.device_data.ResidentBatches``), make the two views on the
device (the method's preset, a device generator), forward, backward and SGD. The PyTorch profiler
records a few steps of the data part alone and of whole steps, and the script counts:

- ``data_sync_ops_per_step``: ops in the data part that make the host wait for the device (a
  data-dependent shape or a value read back: ``nonzero``, ``unique``, ``_local_scalar_dense``,
  ``masked_select``, CUDA synchronize calls). 0 is the goal;
- ``data_h2d_copies_per_step`` (CUDA): host-to-device copies in the data part (0 is the goal);
- ``cuda_syncs_per_step`` (CUDA): syncs of the whole step reported by ``torch.cuda.set_sync_debug_mode``;
- ``gpu_busy_fraction`` (CUDA): time the GPU runs kernels over the wall time of the profiled steps.

``--rehearse`` runs the accelerator form of the augmentation on the CPU
(``augment.avoids_host_sync``), so the CPU rehearsal profiles the very ops a GPU runs. The whole
step on the CPU also counts the Hallucinator's draw of ``lam`` (a CPU scalar, not a device sync).
``Tensor.tolist()`` and ``.cpu()`` are no ops on the CPU, so only the CUDA run (its sync debug mode
sees every device-to-host copy) rules them out.

    python benchmarks/data_path_profile.py --device cpu --rehearse --synthetic 2048 --width 16 --batch-size 128
    python benchmarks/data_path_profile.py --device cuda --data-dir .device/cifar10-jpeg.tar.gz --width 64 --batch-size 512

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from hallucinator import backbones
from hallucinator.data import ImageDataset, augment, batch_loader
from hallucinator.engine import load_config
from hallucinator.engine.device_data import ResidentBatches
from hallucinator.engine.module import build_augmentation, build_method

SYNC_OPS = (
    "aten::nonzero",
    "aten::_local_scalar_dense",
    "aten::unique_consecutive",
    "aten::_unique2",
    "aten::masked_select",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
)


def _dataset(args: argparse.Namespace) -> ImageDataset:
    if args.synthetic:
        images = torch.randint(
            0, 256, (args.synthetic, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        return ImageDataset(images, torch.zeros(args.synthetic, dtype=torch.long), ["synthetic"])
    from hallucinator.data import build_dataset

    return build_dataset("cifar10", args.data_dir, "pretrain")


def _merged_length(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals (kernels of several streams overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--synthetic", type=int, default=0, help="N random uint8 32 px images instead of CIFAR-10")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (after 2 untimed)")
    parser.add_argument("--rehearse", action="store_true", help="the accelerator form of the augmentation on the CPU")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator_form = augment.avoids_host_sync
    if args.rehearse:
        augment.avoids_host_sync = lambda device: True
    try:
        figures = profile_steps(args)
    finally:
        augment.avoids_host_sync = accelerator_form
    print(json.dumps(figures))
    return figures


def profile_steps(args: argparse.Namespace) -> dict:
    """The figures of the module's docstring for ``args``."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = load_config(
        None, [f"--model.method={args.method}", f"--model.width={args.width}", f"--data.batch_size={args.batch_size}"]
    )
    dataset = _dataset(args)
    step = 0
    cpu = batch_loader(dataset, args.batch_size, shuffle=True, drop_last=True, position=lambda: step)
    batches = ResidentBatches(cpu, device)
    views_of = build_augmentation(config).to(device)
    method = build_method(config).to(device).train()
    memory_format = torch.channels_last if backbones.channels_last_safe(method) else torch.contiguous_format
    method.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    stream = iter(batches)

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            images, _ = next(stream)
            view1, view2 = views_of(images, generator=generator)
        return view1.contiguous(memory_format=memory_format), view2.contiguous(memory_format=memory_format)

    def train_step() -> None:
        views = data()
        with autocast:
            loss = method(*views)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: kernel selection, allocator
        train_step()
        step += 1
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    synchronize()
    with profile(activities=activities) as data_profile:
        for _ in range(args.steps):
            data()
        synchronize()
    data_ops = Counter(e.name for e in data_profile.events() if e.name in SYNC_OPS)
    figures: dict[str, object] = {
        "data_sync_ops_per_step": sum(data_ops.values()) / args.steps,
        "data_sync_ops": dict(data_ops),
    }
    if cuda:
        copies = [e for e in data_profile.events() if "HtoD" in e.name]
        figures["data_h2d_copies_per_step"] = len(copies) / args.steps

    synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as step_profile:
        for _ in range(args.steps):
            train_step()
        synchronize()
    wall = time.perf_counter() - started
    step_ops = Counter(e.name for e in step_profile.events() if e.name in SYNC_OPS)
    figures.update(
        step_sync_ops_per_step=sum(step_ops.values()) / args.steps,
        step_sync_ops=dict(step_ops),
        step_ms=round(wall / args.steps * 1000, 2),
    )
    if cuda:
        kernels = [
            (e.time_range.start, e.time_range.end)
            for e in step_profile.events()
            if e.device_type == torch.autograd.DeviceType.CUDA
        ]
        spans = [(e.time_range.start, e.time_range.end) for e in step_profile.events()]
        if kernels:
            window = max(end for _, end in spans) - min(start for start, _ in spans)
            figures["gpu_busy_fraction"] = round(_merged_length(kernels) / window, 4)
        else:
            figures["gpu_busy_fraction"] = None  # this torch's profiler recorded no kernels
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            with contextlib.ExitStack() as restore:
                restore.callback(torch.cuda.set_sync_debug_mode, "default")
                for _ in range(args.steps):
                    train_step()
        figures["cuda_syncs_per_step"] = sum("synchroniz" in str(w.message) for w in caught) / args.steps
        figures["gpu"] = torch.cuda.get_device_name(device)
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    figures.update(
        device=str(device),
        rehearse=args.rehearse,
        method=args.method,
        width=args.width,
        batch_size=args.batch_size,
        precision=args.precision,
        steps=args.steps,
    )
    return figures


if __name__ == "__main__":
    main()
