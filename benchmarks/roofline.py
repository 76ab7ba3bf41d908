"""The roofline limit of a training step: the FLOPs it computes, the bytes it moves and the machine's two peaks.

A step can go no faster than ``max(FLOPs / matmul peak, bytes / memory bandwidth)``: thin layers (a width-16
ResNet) are bound by memory traffic long before they reach the matmul peak. This module measures the
bandwidth (a STREAM-like copy and triad probe), counts the bytes of a step (:class:`ByteCounter`) and
turns the two into the limit; ``benchmarks/pretrain_throughput.py`` prints each run's fraction of it.

The byte count is our own (no library counts memory traffic): every aten operation reads its tensor
inputs and writes its outputs once, so a step's traffic is the sum of those sizes over its operations,
forward and backward, optimizer included. Views move nothing and are skipped. It ignores caches (an
operation whose operands fit in cache moves less) and counts each operand once (a convolution that
re-reads its input moves more), so it is the traffic of an ideal kernel per operation: the honest limit
for kernels that are not fused across operations.

    >>> with ByteCounter() as counter:
    ...     torch.nn.Linear(64, 32)(torch.randn(8, 64))
    >>> counter.total  # 4 bytes x (input 8*64 + weight 32*64 + bias 32 + output 8*32)
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class ByteCounter(TorchDispatchMode):
    """Counts the bytes every aten operation reads (its tensor inputs) and writes (its outputs) while active.

    ``total`` is the sum; ``by_op`` the same per operation name. A tensor passed twice to one operation
    (``x * x``) is read once; views (``t``, ``view``, ``expand``, ...) move no data and are skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_op: dict[str, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
            moved = 0
            for tensor in (*tree_leaves((args, kwargs)), *tree_leaves(out)):
                if isinstance(tensor, torch.Tensor) and tensor.numel():
                    # a tensor's own extent: a view of a big storage moves only what it covers
                    key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
                    if key not in seen:
                        seen.add(key)
                        moved += tensor.numel() * tensor.element_size()
            self.by_op[str(func.overloadpacket)] += moved
        return out


def memory_bandwidth_gbps(device: str, megabytes: int = 256, seconds: float = 1.0) -> dict[str, float]:
    """STREAM-like copy (``b = a``: 2 arrays moved) and triad (``a = b + s * c``: 3 arrays) bandwidths in GB/s.

    Arrays of ``megabytes`` each (far beyond the caches); the best of repetitions over about ``seconds`` each.

    Example:
        >>> memory_bandwidth_gbps("cpu")  # e.g. {"copy": 12.3, "triad": 13.1} on 2 cores
    """
    device_ = torch.device("cuda" if device == "gpu" else device)
    n = megabytes * 2**20 // 4
    a, b, c = (torch.rand(n, device=device_) for _ in range(3))
    kernels = {"copy": (lambda: b.copy_(a), 2), "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), 3)}
    figures = {}
    for name, (kernel, arrays) in kernels.items():
        best = best_seconds(kernel, device_, seconds)
        figures[name] = arrays * n * 4 / best / 1e9
    return figures


def best_seconds(kernel: Any, device: torch.device, seconds: float) -> float:
    """The fastest of repeated runs of ``kernel`` over about ``seconds`` (after one warm-up run), synchronised on a GPU."""

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        kernel()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    timed()  # warm-up: page faults, kernel selection
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        elapsed = timed()
        best, spent = min(best, elapsed), spent + elapsed
    return best


def gemm_kernels(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """The product ``a @ b`` (``M x K`` times ``K x N``) two ways: ``torch.mm``, and a 1 x 1 convolution of ``M``
    pixels with ``K`` channels by ``N`` filters, which oneDNN computes. Each returns the product, ``M x N``."""
    rows = a.shape[0]
    height = max(h for h in range(1, math.isqrt(rows) + 1) if rows % h == 0)  # a square-ish image: oneDNN's fast case
    pixels = a.reshape(1, height, rows // height, a.shape[1]).permute(0, 3, 1, 2)  # (1, K, h, w), channels_last
    filters = b.t().reshape(b.shape[1], b.shape[0], 1, 1)
    return {
        "mm": lambda: torch.mm(a, b),
        "conv1x1": lambda: torch.nn.functional.conv2d(pixels, filters).flatten(2)[0].t(),
    }


def gemm_peak_gflops(device: str, dtype_name: str, size: int, seconds: float = 1.0) -> float:
    """The best GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype_name`` over about ``seconds``: the
    machine's compute limit.

    The best of the two :func:`gemm_kernels`: float32 ``torch.mm`` goes to MKL, whose sgemm takes its AVX2 path on
    AMD CPUs (measured on a 2-core AVX-512 EPYC: 162 GFLOP/s, against 328 for the same product in oneDNN, which
    the convolutions of a training step use); bf16 goes to oneDNN either way.

    Example:
        >>> gemm_peak_gflops("cpu", "fp32", 1024)  # e.g. ~100 on 2 AVX2 cores
    """
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device_ = torch.device("cuda" if device == "gpu" else device)
    a, b = (torch.randn(size, size, device=device_).to(dtype) for _ in range(2))
    best = min(best_seconds(kernel, device_, seconds / 2) for kernel in gemm_kernels(a, b).values())
    return 2 * size**3 / best / 1e9


def roofline_seconds(flops: float, bytes_moved: float, peak_gflops: float, bandwidth_gbps: float) -> float:
    """The least time a step can take: its FLOPs at the matmul peak or its bytes at the bandwidth, whichever is longer."""
    return max(flops / (peak_gflops * 1e9), bytes_moved / (bandwidth_gbps * 1e9))
