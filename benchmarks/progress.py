"""A progress line for long benchmark runs: done/total, running accuracy, tokens/s, ETA.

On a terminal it redraws one line; otherwise (CI logs, `| tee`) it prints a line at
most every `every_s` seconds and at the end, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        *,
        already_done: int = 0,
        stream: TextIO | None = None,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.already_done = already_done
        self.done = 0
        self.correct = 0
        self.tokens = 0
        self.failed = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._last_print = -float("inf")

    def advance(self, *, correct: bool, tokens: int) -> None:
        self.done += 1
        self.correct += int(correct)
        self.tokens += tokens
        self._show()

    def fail(self) -> None:
        self.failed += 1
        self._show()

    def line(self) -> str:
        elapsed = self._clock() - self._started
        to_do = self.total - self.already_done
        finished = self.done + self.failed
        width = 24
        filled = int(width * (self.already_done + finished) / self.total) if self.total else width
        parts = [
            f"[{'#' * filled}{'.' * (width - filled)}] {self.already_done + self.done}/{self.total}"
        ]
        if self.done:
            parts.append(f"acc {self.correct / self.done:.3f}")
        if elapsed > 0:
            parts.append(f"{self.tokens / elapsed:.0f} tok/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if finished and finished < to_do:
            parts.append(f"ETA {format_duration(elapsed / finished * (to_do - finished))}")
        if self.failed:
            parts.append(f"failed {self.failed}")
        if self.already_done:
            parts.append(f"(resumed {self.already_done})")
        return " | ".join(parts)

    def _show(self) -> None:
        now = self._clock()
        last = self.done + self.failed == self.total - self.already_done
        if self._tty:
            self._stream.write("\r\x1b[2K" + self.line())
            if last:
                self._stream.write("\n")
        elif last or now - self._last_print >= self._every_s:
            self._stream.write(self.line() + "\n")
            self._last_print = now
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self.done + self.failed < self.total - self.already_done:
            self._stream.write("\n")
            self._stream.flush()
