"""A training run's directory, read for the page: its progress and its curves, as the run writes them.

``blobnet train`` writes, in its run directory (``clients.train``): ``status.json`` (iteration,
phase, progress and ETA, rewritten about once a second, ``blobnet.status``), ``metrics.csv`` (one
row per finished iteration: losses, rounds/min, mean batch, Elo, and the arena's results against
the baselines and best.pt), ``config.json`` and, at the end, ``final.json``. Every one of them is
replaced whole by a rename, so a reader never sees half a file.

``RunWatch.changes`` notices new versions by polling the files' modification times and sizes once a
``period``: a handful of ``stat`` calls, portable, and no extra package (inotify is Linux-only).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from blobnet.status import STATUS_FILE

__all__ = ["Arena", "RunSnapshot", "RunWatch", "FILES"]

FILES = (STATUS_FILE, "metrics.csv", "config.json", "final.json")  # the files a snapshot reads
ARENA_COLUMN = re.compile(r"vs_(.+)_diff")  # metrics.csv: vs_<opponent>_diff, _lo, _hi per arena match


class Arena(msgspec.Struct, frozen=True):
    """One match of an iteration's arena: the candidate's mean points a round over the opponent's."""

    opponent: str
    diff: float
    lo: float  # the 95% interval of diff
    hi: float


class RunSnapshot(msgspec.Struct):
    """What the page shows of a run at one moment."""

    run: str  # the run directory's name
    status: dict[str, Any] | None  # status.json as written (blobnet.status), None before the first
    iterations: int | None  # the run's planned iterations (config.json)
    metrics: dict[str, list[float | None]]  # metrics.csv by column; None where a row has no value
    arena: list[Arena]  # the last finished iteration's matches
    promoted: bool | None  # whether that iteration's network became best.pt
    final: dict[str, Any] | None  # final.json once the run has ended
    now: float  # the server's wall clock, so the page can tell how old status.json is


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_metrics(text: str) -> dict[str, list[float | None]]:
    """metrics.csv as one list of numbers per column (the header's order)."""
    reader = csv.DictReader(io.StringIO(text))
    columns: dict[str, list[float | None]] = {name: [] for name in reader.fieldnames or ()}
    for row in reader:
        for name in columns:
            columns[name].append(_number(row.get(name) or ""))
    return columns


def last_arena(metrics: dict[str, list[float | None]]) -> list[Arena]:
    """The last row's arena matches, in the columns' order (whichever baselines the run plays)."""
    out = []
    for name in (m.group(1) for column in metrics if (m := ARENA_COLUMN.fullmatch(column))):
        diff, lo, hi = (metrics.get(f"vs_{name}_{k}", []) for k in ("diff", "lo", "hi"))
        if diff and diff[-1] is not None and lo[-1] is not None and hi[-1] is not None:
            out.append(Arena(opponent=name, diff=diff[-1], lo=lo[-1], hi=hi[-1]))
    return out


class RunWatch:
    """Reads the run directory ``path`` (given on the command line, never by a request)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """(mtime ns, size) of each file of ``FILES``; (0, 0) for one that is missing."""
        out = []
        for name in FILES:
            try:
                st = (self.path / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append((0, 0))
        return tuple(out)

    def _json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the run, None when missing; one being replaced right now reads as missing."""
        try:
            data = json.loads((self.path / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def snapshot(self) -> RunSnapshot:
        try:
            metrics = read_metrics((self.path / "metrics.csv").read_text())
        except FileNotFoundError:
            metrics = {}
        config = self._json("config.json") or {}
        iterations = config.get("train", {}).get("iterations") if isinstance(config.get("train"), dict) else None
        promoted = metrics.get("promoted", [])
        return RunSnapshot(
            run=self.path.name or str(self.path),
            status=self._json(STATUS_FILE),
            iterations=iterations if isinstance(iterations, int) else None,
            metrics=metrics,
            arena=last_arena(metrics),
            promoted=None if not promoted or promoted[-1] is None else bool(promoted[-1]),
            final=self._json("final.json"),
            now=round(time.time(), 3),
        )

    async def changes(self, period: float = 1.0) -> AsyncIterator[RunSnapshot]:
        """A snapshot now, then one each time a file of the run changes (looked at every ``period`` s)."""
        last = None
        while True:
            stamp = self.stamp()
            if stamp != last:
                last = stamp
                yield self.snapshot()
            await asyncio.sleep(period)
