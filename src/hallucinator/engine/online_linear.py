"""An online linear probe: a classifier on detached backbone features, trained during pre-training.

As lightly's and solo-learn's online classifiers: it tells how linearly separable the features
are while the run is going, at the cost of one small Linear layer per step. It changes nothing
in the pre-training itself: the features are detached (no gradient reaches the backbone), the
weights start at zero (no draw from any random generator) and it has its own SGD, outside the
pre-training optimiser and its lr schedule. It is kept out of the LightningModule's module tree
(so DDP does not manage it and checkpoints of earlier runs still load); the engine saves and
restores its state under its own checkpoint key.

Example:
    >>> probe = OnlineLinear(num_features=512, num_classes=10)
    >>> loss, top1 = probe.step(features.detach(), labels)   # one SGD step; top1 before the step, in %
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hallucinator import distributed


class OnlineLinear(nn.Module):
    """``Linear(num_features, num_classes)`` trained by plain SGD on labelled rows (label >= 0) of each batch.

    Under DDP every process averages the gradients over all processes (one all-reduce per step),
    so the copies stay identical. ``epoch_top1()`` is the training top-1 since :meth:`reset_epoch`,
    accumulated on the device (no synchronisation per step).
    """

    correct: torch.Tensor
    seen: torch.Tensor

    def __init__(self, num_features: int, num_classes: int, lr: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"an online linear probe needs at least 2 classes, got {num_classes}")
        self.linear = nn.Linear(num_features, num_classes)
        with torch.no_grad():  # zeros, not a random init: the run's random streams stay untouched
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, momentum=momentum)
        self.register_buffer("correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long), persistent=False)

    def reset_epoch(self) -> None:
        self.correct.zero_()
        self.seen.zero_()

    def epoch_top1(self) -> float:
        return 100.0 * int(self.correct) / max(1, int(self.seen))

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on ``features`` (detached here) -> (loss, top-1 in % of this batch before the step)."""
        self._to(features.device)
        labelled = labels >= 0
        count = labelled.sum().clamp(min=1)
        with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
            logits = self.linear(features.detach().float())
            # unlabelled rows weigh 0 (a mask, not indexing: no device synchronisation)
            loss = (F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * labelled).sum() / count
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if distributed.world_size() > 1:
            for parameter in self.linear.parameters():
                grad = parameter.grad
                assert grad is not None  # zero_grad(set_to_none=False) above keeps every gradient a tensor
                dist.all_reduce(grad)
                grad /= distributed.world_size()
        self.optimizer.step()
        correct = ((logits.detach().argmax(dim=1) == labels) & labelled).sum()
        self.correct += correct
        self.seen += labelled.sum()
        return loss.detach(), 100.0 * correct / count

    def _to(self, device: torch.device) -> None:
        """Follow the features' device, optimiser state included (a restored state is loaded on the CPU)."""
        if self.linear.weight.device == device:
            return
        self.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[key] = value.to(device)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the weights and the optimiser's momentum."""
        return {"weights": self.linear.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.linear.load_state_dict(state["weights"])
        # a copy: torch would otherwise share the given momentum tensors with this optimiser
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    @torch.no_grad()
    def top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 in % on held-out ``features`` (e.g. the test set's, from the final kNN evaluation)."""
        logits = self.linear(features.to(self.linear.weight.device, torch.float32))
        return 100.0 * float((logits.argmax(dim=1) == labels.to(logits.device)).float().mean())
