"""The variants of ``pretrain_throughput.py --variants``: the engine as shipped, or one lever of a step's speed
(issue 28) as config overrides over it, so that every lever is timed side by side in one run.

A variant is a name below or several joined by ``+`` (``compile-cl+sgd-fused+batch-512``), their overrides in
order; at most one of them may choose the compilation and the memory format (``eager``, ``eager-cl``,
``compile*``). ``batch-N`` and ``threads-N`` take any N.

- ``eager-cl``: as shipped (eager, channels_last, PyTorch's default SGD, one thread per core); the others
  differ from it in their overrides only.
- ``compile*``: ``trainer.compile`` (inductor). Compiling is also the BatchNorm + ReLU fusion: eager PyTorch has no
  fused CPU BatchNorm + ReLU training kernel, inductor generates one kernel per BatchNorm for its statistics,
  normalisation, running statistics and ReLU, and one for their backward, where eager runs separate kernels
  (``step_profile.py --compile true`` lists them). ``-max-autotune``: inductor's mode of that name;
  ``-method``: the method's whole forward compiled (backbone, heads and loss; the benchmark runs without
  the Hallucinator), not only the backbone.
- ``sgd-*``: ``optimizer.implementation`` (the same update up to float rounding).
- ``batch-N``: N image pairs per step; the lr follows (``optimizer.scale_lr``: base_lr x N / 256).
- ``threads-N``: ``trainer.cpu_threads`` (torch's intra-op threads).

Example:
    >>> overrides("compile-cl+batch-512")
    ['--trainer.compile=true', '--data.batch_size=512']
"""

from __future__ import annotations

import re

# the compilation and the memory format: one of these per variant
BASES = {
    "eager": ["--trainer.channels_last=false"],
    "eager-cl": [],
    "compile": ["--trainer.compile=true", "--trainer.channels_last=false"],
    "compile-cl": ["--trainer.compile=true"],
    "compile-max-autotune-cl": ["--trainer.compile=max-autotune"],
    "compile-method-cl": ["--trainer.compile=true", "--trainer.compile_scope=method"],
}
LEVERS = {
    "sgd-for-loop": ["--optimizer.implementation=for-loop"],
    "sgd-foreach": ["--optimizer.implementation=foreach"],
    "sgd-fused": ["--optimizer.implementation=fused"],
}
NUMBERED = {"batch": "--data.batch_size={}", "threads": "--trainer.cpu_threads={}"}  # batch-N, threads-N


def _part(name: str) -> list[str]:
    if name in BASES:
        return BASES[name]
    if name in LEVERS:
        return LEVERS[name]
    numbered = re.fullmatch(r"(batch|threads)-([1-9][0-9]*)", name)
    if numbered:
        return [NUMBERED[numbered[1]].format(numbered[2])]
    known = [*BASES, *LEVERS, "batch-N", "threads-N"]
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(known)} (joined by +)")


def overrides(variant: str) -> list[str]:
    """The config overrides of ``variant`` (names joined by ``+``); a ValueError for an unknown or contradictory one."""
    parts = variant.split("+")
    bases = [part for part in parts if part in BASES]
    if len(bases) > 1:
        raise ValueError(f"{variant!r} chooses the compilation twice ({', '.join(bases)}); keep one")
    return [override for part in parts for override in _part(part)]
