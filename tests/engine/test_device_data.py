"""The GPU data path yields the very batches of the CPU path; the choice between its forms.

On this CPU-only machine the forms run with ``device=cpu`` (their logic does not depend on the
device); on a GPU machine the last test also checks them on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from hallucinator.data import ImageDataset, batch_loader
from hallucinator.data.loader import StepBatches
from hallucinator.engine import device_data
from hallucinator.engine.device_data import PinnedPrefetch, ResidentBatches, fits_on_device, on_device

CPU = torch.device("cpu")


# data.limit's subset: dataset indices in no particular order, so a copy that ignored them would differ
SUBSET = torch.randperm(50, generator=torch.Generator().manual_seed(1))[:40]


def _batches(step: int = 0, rank: int = 0, world_size: int = 1, subset: torch.Tensor | None = None) -> StepBatches:
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    dataset = ImageDataset(images, torch.arange(50), [str(i) for i in range(50)])  # each label names its image
    return batch_loader(
        dataset,
        8,
        shuffle=True,
        drop_last=True,
        seed=3,
        position=lambda: step,
        rank=rank,
        world_size=world_size,
        subset=subset,
    )


def _expected(batches: StepBatches, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Independently: epoch ``e``'s order is randperm(N) seeded by seed * 1_000_003 + e (docs/training.md)."""
    epoch, start = divmod(step, len(batches))
    rank = batches.sampler.rank
    order = torch.randperm(batches.sampler.num_samples, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
    local = batches.sampler.batch_size // batches.sampler.world_size
    images, labels = batches.dataset.images, batches.dataset.labels
    if batches.subset is not None:
        images, labels = images[batches.subset], labels[batches.subset]
    slices = [order[n * 8 + rank * local : n * 8 + (rank + 1) * local] for n in range(start, len(batches))]
    return [(images[index], labels[index]) for index in slices]


@pytest.mark.parametrize(
    ("step", "rank", "world_size", "subset"), [(0, 0, 1, None), (9, 0, 1, None), (2, 1, 2, SUBSET)]
)
@pytest.mark.parametrize("form", [ResidentBatches, PinnedPrefetch])
def test_device_forms_yield_the_cpu_batches(form, step: int, rank: int, world_size: int, subset) -> None:
    batches = _batches(step, rank, world_size, subset)
    got = list(form(batches, CPU))
    expected = _expected(batches, step)
    assert len(form(batches, CPU)) == len(batches) and len(got) == len(expected) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))


def test_resident_copy_holds_only_the_used_images() -> None:
    assert ResidentBatches(_batches(subset=SUBSET), CPU).images.shape[0] == 40


def test_fits_on_device_compares_bytes_with_a_quarter_of_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.zeros(10, 3, 10, 10, dtype=torch.uint8)  # 3,000 bytes
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (12_000, 80_000))
    assert fits_on_device(images, cuda)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (11_999, 80_000))
    assert not fits_on_device(images, cuda)
    assert not fits_on_device(images, CPU)


def test_on_device_picks_resident_then_prefetch_on_cuda_and_nothing_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _batches()
    assert on_device(batches, CPU) is batches
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(ResidentBatches, "__init__", lambda self, batches, device: None)  # no CUDA here to copy to
    monkeypatch.setattr(device_data, "fits_on_device", lambda images, device: True)
    assert isinstance(on_device(batches, cuda), ResidentBatches)
    monkeypatch.setattr(device_data, "fits_on_device", lambda images, device: False)
    assert isinstance(on_device(batches, cuda), PinnedPrefetch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("form", [ResidentBatches, PinnedPrefetch])
def test_device_forms_on_cuda(form) -> None:
    batches = _batches(step=2)
    got = list(form(batches, torch.device("cuda")))
    assert all(a.is_cuda and torch.equal(a.cpu(), b) for a, b in zip(got, _expected(batches, 2)))
