"""A progress bar and a status line on a terminal; one plain line per phase elsewhere; and the
same progress as a small JSON file that other programs read (``blobnet web --run``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

from blobnet.files import atomic_write_bytes

__all__ = ["Status", "STATUS_FILE"]

STATUS_FILE = "status.json"  # in a run directory: iteration, phase, progress, ETA, last line
FILE_PERIOD = 1.0  # seconds between rewrites of the file within one phase: readers poll about that often


class Status:
    """``phase(...)`` redraws one line (iteration, phase, a bar and an ETA) at most 4 times a
    second when ``stream`` is a terminal; otherwise it prints a line when a phase starts.
    ``line`` prints a permanent line above the bar. With ``path`` the same progress is written
    there as JSON (``write_file``), whether or not anything is printed."""

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None, path: Path | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.path = path
        self._last_file = 0.0
        self._state: dict[str, object] = {}
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_phase: tuple[int, str] | None = None
        self._last_phase_file: tuple[int, str] | None = None
        self._iter_started: dict[int, float] = {}
        self._first_iteration: int | None = None

    def phase(self, iteration: int, iterations: int, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        self._iter_started.setdefault(iteration, now)
        if self._first_iteration is None:
            self._first_iteration = iteration
        if self.path is not None and (
            self._last_phase_file != (iteration, name) or now - self._last_file >= FILE_PERIOD or done >= total
        ):
            self._last_phase_file = (iteration, name)
            eta = self._eta_seconds(iteration, iterations, now)
            elapsed = round(now - self.start, 1)
            eta_s = None if eta is None else round(eta, 1)
            self.write_file(iteration=iteration, iterations=iterations, phase=name, done=done, total=total,
                            elapsed_s=elapsed, eta_s=eta_s)  # fmt: skip
        if not self.enabled:
            return
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
        eta = self._eta_seconds(iteration, iterations, now)
        return "--:--" if eta is None else self._fmt(eta)

    def _eta_seconds(self, iteration: int, iterations: int, now: float) -> float | None:
        """Mean time of the iterations finished in this session times the ones left; None before
        one has finished."""
        first = self._first_iteration or iteration
        finished = iteration - first
        if finished <= 0:
            return None
        per = (self._iter_started[iteration] - self._iter_started[first]) / finished
        return max(per * (iterations - iteration + 1) - (now - self._iter_started[iteration]), 0.0)

    def write_file(self, **fields: object) -> None:
        """Merge ``fields`` into the status and rewrite ``path`` atomically (readers never see half
        a file), stamped with the wall-clock time; nothing without a path."""
        if self.path is None:
            return
        self._last_file = time.monotonic()
        self._state.update(fields, updated=round(time.time(), 3))
        atomic_write_bytes(self.path, json.dumps(self._state).encode())

    def _clock(self, now: float) -> str:
        return self._fmt(now - self.start)

    @staticmethod
    def _fmt(seconds: float) -> str:
        m, s = divmod(int(seconds), 60)
        h, m = divmod(m, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"

    def line(self, text: str) -> None:
        self.write_file(line=text)
        if not self.enabled:
            return
        prefix = "\r\x1b[2K" if self.tty else ""
        print(f"{prefix}{text}", file=self.stream, flush=True)

    def done(self, text: str) -> None:
        self.write_file(phase="done", eta_s=0.0)
        self.line(text)
