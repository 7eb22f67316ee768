"""What every benchmark here shares: where results go and how child processes start, the forward
pass alone, request latency, and rates from counter samples.

- ``raw_forward_rate``: the product's forward pass (the CPU engine the batcher runs, ``blobnet.net``)
  on a ready batch, nothing around it: the inference-only ceiling.
- ``Timed``: any evaluator, timing every request while active (the latency figures).
- ``rate``: a counter's rate by least squares over timestamped samples. Under thousands of games the
  counters move in bursts (every game backs up after the same batch), so the difference of the two ends
  of a window would swing by a whole burst; the slope over every sample does not.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from blobnet.cards import BID0, N_ACTIONS, N_CARDS
from blobnet.config import CPU_ENGINE, CPU_SPARSE
from blobnet.evaluator import Evaluator, Priors
from blobnet.net import make_engine

__all__ = [
    "RESULTS",
    "TORCH_ENV",
    "Timed",
    "batch_spread",
    "child_env",
    "git_commit",
    "parse_floats",
    "parse_ints",
    "percentiles_ms",
    "rate",
    "raw_forward_rate",
    "sample_inputs",
    "stamp",
]

RESULTS = Path(__file__).resolve().parent / "results"
# The torch settings of every process the benchmarks start, as ``blobnet`` sets them for itself
# (clients/cli.py): one torch thread, and OpenMP threads that sleep rather than spin while waiting.
# Two spinning threads turn a 7 ms forward pass into 200 ms as soon as anything else wants the second
# core. What the caller's environment already says wins.
TORCH_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def child_env() -> dict[str, str]:
    """The environment for a benchmark's child process: TORCH_ENV unless the caller's says otherwise."""
    return {**TORCH_ENV, **os.environ}


def stamp() -> str:
    """Local date and time for a results folder name: 2025-01-31_14-05-09."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def git_commit() -> str:
    """Short commit of the working tree ("+dirty" when it has changes), or "unknown" outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_ints(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers of at least 1 (an argparse ``type``)."""
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated whole numbers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more numbers of at least 1")
    return vals


def parse_floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers, at least one (an argparse ``type``)."""
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more numbers")
    return vals


def sample_inputs(
    n: int, width: int, rng: np.random.Generator, n_actions: int = N_ACTIONS
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` feature rows (n, width) float32 about as sparse as ``blobnet.encode``'s, and legal masks
    (n, n_actions) bool shaped like Blob's: 2 to 8 bids in about 3 rows of 10, else 2 to 13 cards."""
    x = (rng.random((n, width)) < 0.05).astype(np.float32)
    legal = np.zeros((n, n_actions), dtype=np.bool_)
    for i in range(n):
        if rng.random() < 0.3:
            legal[i, BID0 : BID0 + int(rng.integers(2, 9))] = True
        else:
            legal[i, rng.choice(N_CARDS, size=int(rng.integers(2, 14)), replace=False)] = True
    return x, legal


def repeat_for(call: Callable[[], object], seconds: float, *, at_least: int = 1) -> tuple[int, float]:
    """Call ``call`` until at least ``at_least`` calls and ``seconds`` have passed: (calls, seconds taken)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and calls >= at_least:
            return calls, elapsed


def raw_forward_rate(model: nn.Module, batch: int, seconds: float, *, seed: int = 0) -> float:
    """Evaluations per second of the forward pass alone, as the product runs it on a CPU (the engine
    and first layer of ``blobnet.config``: the model and the softmax) on a ready batch of ``batch``
    rows (``sample_inputs``): the inference-only ceiling at that batch size. Two passes warm up;
    then at least 3 and at least ``seconds`` are timed."""
    n_actions = int(getattr(model, "n_actions", N_ACTIONS))
    x, mask = sample_inputs(batch, int(model.width), np.random.default_rng(seed), n_actions)  # type: ignore[arg-type]
    forward = make_engine(CPU_ENGINE, model, sparse=CPU_SPARSE)
    for _ in range(2):
        forward(x, mask)
    reps, dt = repeat_for(lambda: forward(x, mask), seconds, at_least=3)
    return reps * batch / dt


class Timed:
    """``inner``'s answers, the seconds of every request kept in ``seconds`` while ``active``
    (between ``start`` and ``stop``: the measurement window)."""

    def __init__(self, inner: Evaluator) -> None:
        self.inner = inner
        self.active = False
        self.seconds: list[float] = []

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        t0 = time.perf_counter()
        out = await self.inner.evaluate_many(features, legal)
        if self.active:
            self.seconds.append(time.perf_counter() - t0)
        return out

    @property
    def model_version(self) -> object:
        """The inner evaluator's (``blobnet.evaluator``): a search keeps its answers as it would the inner's."""
        return getattr(self.inner, "model_version", None)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def start(self) -> None:
        self.seconds = []
        self.active = True

    def stop(self) -> list[float]:
        self.active = False
        return self.seconds


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds; NaN for no samples."""
    if not seconds:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(seconds, dtype=np.float64), [50, 99])
    return 1e3 * float(p50), 1e3 * float(p99)


def batch_spread(stats: dict[str, Any]) -> tuple[float, float, float, float]:
    """(mean, p10, p50, p90) batch size from a ``Batcher.stats()`` dict; NaN where it has none."""
    mean, p10, p50, p90 = (float(stats.get(k, math.nan)) for k in ("mean_batch", "p10_batch", "p50_batch", "p90_batch"))
    return mean, p10, p50, p90


def rate(samples: Sequence[Sequence[float]], column: int) -> float:
    """Per-second rate of ``samples[i][column]`` against ``samples[i][0]`` (seconds): the least-squares
    slope over every sample, or the end-point difference with fewer than 3 samples."""
    if len(samples) < 2:
        return math.nan
    t = np.array([s[0] for s in samples], dtype=np.float64)
    y = np.array([s[column] for s in samples], dtype=np.float64)
    if t[-1] - t[0] <= 0:
        return math.nan
    if len(samples) < 3:
        return float((y[-1] - y[0]) / (t[-1] - t[0]))
    return float(np.polyfit(t - t[0], y, 1)[0])
