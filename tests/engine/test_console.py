"""What the engine lets through to the console: Lightning's advertising and internal deprecations are dropped."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_module

from hallucinator.engine.train import quiet_lightning


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_tips_are_dropped_and_other_messages_kept():
    collect = Collect()
    rank_zero_module.log.addHandler(collect)
    try:
        with quiet_lightning():
            rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
            rank_zero_info("GPU available: False, used: False")
        rank_zero_info("💡 Tip: outside the block nothing is filtered")
    finally:
        rank_zero_module.log.removeHandler(collect)
    assert collect.messages == ["GPU available: False, used: False", "💡 Tip: outside the block nothing is filtered"]


def test_lightning_internal_deprecation_is_dropped_and_other_warnings_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning
            )
            warnings.warn("data.batch_size is larger than the dataset", UserWarning)
    assert [str(w.message) for w in caught] == ["data.batch_size is larger than the dataset"]
