"""One progress bar for the evaluation loops: live on a terminal, a line every 30 s in a log file.

for batch in progress_bar(loader, desc="embed", unit="batch"):
    ...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

# tqdm redraws ~10 times a second; in a redirected log (a sweep's, a batch job's) each redraw is kept,
# so a one-minute feature pass left hundreds of updates on one line
LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Iterable[T], *, desc: str, unit: str, leave: bool = True) -> Iterable[T]:
    """``tqdm(iterable)`` on stderr, updated at most every :data:`LOG_INTERVAL_S` when stderr is not a terminal."""
    from tqdm.auto import tqdm

    interval = 0.1 if sys.stderr.isatty() else LOG_INTERVAL_S
    return tqdm(iterable, desc=desc, unit=unit, leave=leave, mininterval=interval, maxinterval=max(10.0, interval))
