"""A progress bar and a status line on a terminal; one plain line per phase elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Status"]


class Status:
    """``phase(...)`` redraws one line (iteration, phase, a bar and an ETA) at most 4 times a
    second when ``stream`` is a terminal; otherwise it prints a line when a phase starts.
    ``line`` prints a permanent line above the bar."""

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_phase: tuple[int, str] | None = None
        self._iter_started: dict[int, float] = {}
        self._first_iteration: int | None = None

    def phase(self, iteration: int, iterations: int, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        self._iter_started.setdefault(iteration, now)
        if self._first_iteration is None:
            self._first_iteration = iteration
        if not self.tty:
            if self._last_phase != (iteration, name):
                self._last_phase = (iteration, name)
                print(f"[{self._clock(now)}] iteration {iteration}/{iterations}: {name}", file=self.stream, flush=True)
            return
        if now - self._last_draw < 0.25 and done < total:
            return
        self._last_draw = now
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        text = (
            f"\r\x1b[2Kiter {iteration}/{iterations} {name:<16} [{bar}] {done}/{total}"
            f"  elapsed {self._clock(now)}  ETA {self._eta(iteration, iterations, now)}"
        )
        self.stream.write(text)
        self.stream.flush()

    def _eta(self, iteration: int, iterations: int, now: float) -> str:
        """Mean time of the iterations finished in this session times the ones left."""
        first = self._first_iteration or iteration
        finished = iteration - first
        if finished <= 0:
            return "--:--"
        per = (self._iter_started[iteration] - self._iter_started[first]) / finished
        left = per * (iterations - iteration + 1) - (now - self._iter_started[iteration])
        return self._fmt(max(left, 0.0))

    def _clock(self, now: float) -> str:
        return self._fmt(now - self.start)

    @staticmethod
    def _fmt(seconds: float) -> str:
        m, s = divmod(int(seconds), 60)
        h, m = divmod(m, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        prefix = "\r\x1b[2K" if self.tty else ""
        print(f"{prefix}{text}", file=self.stream, flush=True)

    def done(self, text: str) -> None:
        self.line(text)
