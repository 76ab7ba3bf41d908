"""BatchNorm synchronised over processes on any backend: detectron2's ``NaiveSyncBatchNorm``, MoCo's detection norm.

Example:
    >>> detector = convert_sync_batchnorm(detector)  # before DDP wraps it and an optimizer takes its parameters
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hallucinator.distributed import gather_with_grad, world_size

__all__ = ["NaiveSyncBatchNorm", "convert_sync_batchnorm"]


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm with the statistics of the global batch, on any process-group backend (gloo on CPUs too).

    detectron2's ``NaiveSyncBatchNorm``, the norm of MoCo's ``Base-RCNN-C4-BN`` (``NORM: naiveSyncBN``; its
    comment: "SyncBN seems to cause larger variance"); ``nn.SyncBatchNorm`` runs on GPUs only. Each process
    sums ``x`` and ``x**2`` per channel (in fp32 at least) and counts its elements; the sums are gathered
    differentiably (:func:`hallucinator.distributed.gather_with_grad`) and added, and the batch is normalised
    by the global mean and biased variance; the running statistics take the unbiased one, as BatchNorm's do.
    Processes with different numbers of elements (RoIs in the res5 head) weigh by their counts (detectron2's
    ``stats_mode="N"``). Without a process group, or in eval mode, it is ``nn.BatchNorm2d``; the state dict
    is BatchNorm's, so checkpoints load either way.

    Example:
        >>> model = convert_sync_batchnorm(model)  # before DDP wraps it and an optimizer takes its parameters
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        exact = x.to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), x.numel() // channels, dtype=exact.dtype, device=x.device)
        local = torch.cat([exact.sum((0, 2, 3)), exact.square().sum((0, 2, 3)), count])
        total = gather_with_grad(local[None]).sum(0)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean.square()).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                assert tracked is not None  # with track_running_stats
                tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` a :class:`NaiveSyncBatchNorm` of the same values (in place below the top)."""
    if type(module) is nn.BatchNorm2d:
        like = next(t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point())
        synced = NaiveSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=like.device,
            dtype=like.dtype,
        )
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module
