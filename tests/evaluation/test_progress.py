"""``progress_bar``: live on a terminal, rare redraws in a log file."""

from __future__ import annotations

import io
import sys
import time

from hallucinator.evaluation.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def slow(count: int):
    for i in range(count):
        time.sleep(0.01)  # 0.4 s in all: a terminal's bar redraws several times, a log's not at all
        yield i


def test_a_log_file_gets_the_start_and_the_end_not_every_redraw(monkeypatch):
    for stream, redraws in ((io.StringIO(), range(0, 4)), (Terminal(), range(4, 100))):
        monkeypatch.setattr(sys, "stderr", stream)  # StringIO: not a terminal, like a sweep's redirected output
        assert list(progress_bar(slow(40), desc="features", unit="batch")) == list(range(40))
        assert stream.getvalue().count("\r") in redraws, stream.getvalue()
        assert "features: 40batch" in stream.getvalue()  # the closing state (all 40 of an unsized iterable) is written


def test_a_terminal_gets_a_live_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_bar(range(3), desc="linear", unit="epoch").mininterval == 0.1
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(range(3), desc="linear", unit="epoch").mininterval == LOG_INTERVAL_S
