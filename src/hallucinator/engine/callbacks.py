"""Run-directory callbacks: atomic checkpoints, save-and-stop on SIGINT/SIGTERM, throughput."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

LAST = "last.ckpt"


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class Checkpointing(Checkpoint):
    """Keeps ``checkpoints/last.ckpt`` current and saves it before a signalled exit.

    - ``last.ckpt`` at the end of every epoch (and every ``last_every_n_steps`` steps),
      ``epoch=NNNN.ckpt`` every ``every_n_epochs`` epochs, and at the end of training.
    - Every write goes to ``*.tmp`` first and is then ``os.replace``-d, so a crash or a kill
      during the write never leaves a truncated checkpoint behind.
    - SIGINT / SIGTERM (Ctrl-C, preemption, ``scancel``) set a flag; after the current step
      all processes agree, ``last.ckpt`` is saved and training stops (``interrupted`` names
      the signal). A second signal is handled by the previous handler (e.g. Ctrl-C again).
    - As a ``Checkpoint`` it runs after the other callbacks, so it sees a stop they request.
    - After a non-finite loss (``pl_module.diverged``) nothing is saved: the last good
      checkpoint stays.

    Example:
        >>> trainer = pl.Trainer(callbacks=[Checkpointing("runs/x/checkpoints", every_n_epochs=50)])
    """

    def __init__(self, directory: str | Path, every_n_epochs: int = 0, last_every_n_steps: int = 0) -> None:
        self.directory = Path(directory)
        self.every_n_epochs = every_n_epochs
        self.last_every_n_steps = last_every_n_steps
        self.interrupted: str | None = None
        self._received: int | None = None
        self._previous: dict[int, Any] = {}
        self._saved_step = -1

    @property
    def last(self) -> Path:
        return self.directory / LAST

    def save_last(self, trainer: pl.Trainer) -> None:
        if trainer.lightning_module.diverged or self._saved_step == trainer.global_step:
            return
        tmp = self.last.with_name(LAST + ".tmp")
        # full state (optimizer, loops, callbacks) for an exact resume; collective under DDP, rank 0 writes
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.last)
        trainer.strategy.barrier("checkpoint")
        self._saved_step = trainer.global_step

    # ---- signals

    def _handle(self, signum: int, frame: Any) -> None:
        if self._received is not None:  # second signal: fall back to the previous behaviour
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self._received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        # before Lightning's own teardown restores the handlers it found at the start of fit
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    # ---- saving

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.strategy.reduce_boolean_decision(self._received is not None, all=False):
            self.interrupted = signal.Signals(self._received or signal.SIGTERM).name
            self.save_last(trainer)
            trainer.should_stop = True
        elif (
            trainer.should_stop  # stopped mid-epoch by another callback: save before the loop closes the epoch
            or 0 < trainer.max_steps <= trainer.global_step
            or (self.last_every_n_steps and trainer.global_step % self.last_every_n_steps == 0)
        ):
            self.save_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interrupted or pl_module.diverged:
            return
        self.save_last(trainer)
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0 and trainer.is_global_zero:
            _atomic_copy(self.last, self.directory / f"epoch={epoch:04d}.ckpt")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_last(trainer)  # no-op unless the run stopped in a way not seen above
        self._restore_handlers()


class Throughput(pl.Callback):
    """Logs ``train/images_per_s``: image pairs per second over all processes, loading and augmentation included.

    The time of a step runs from the end of the previous step, so the data gathering and
    the on-device augmentation are counted. ``images`` and ``seconds`` accumulate over the run.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        elapsed, self._last = now - (self._last or now), now
        images = batch[0].shape[0] * trainer.world_size
        self.images += images
        self.seconds += elapsed
        if elapsed > 0:
            pl_module.log("train/images_per_s", images / elapsed, prog_bar=True, on_step=True, on_epoch=False)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0
