"""One measured point: what it asks for (``PointSpec``, and the sweep's ``CalibrateSpec`` and
``RawSpec``), and how counters become its figures.

The engine in this process ("asyncio", "asyncio-thread", "direct", "free") and
"threads" warm up for ``warmup`` seconds, then measure for ``window`` seconds: simulations,
evaluations and searched decisions per second (least-squares slopes over counter samples,
``bench.common.rate``), rounds finished in the window, the batch sizes of the window, the latency of
every evaluator request in it. "processes" share such a window by absolute time: each worker reports
"ready", the point writes one start time to every worker's standard input. The pool strategies
("asyncio-pool", "processes+server") run the same window over ``clients.pool.SelfPlayPool``'s live
counts (its helper processes report theirs every 0.1 s), starting once the helpers play; their mean
batch counts every process's batches, the batch percentiles and the request latency are this
process's share's (the helpers report batch counts only). Every point reports
the CPU seconds and peak resident memory of the process tree and GPU utilisation where there is a
GPU. Rounds per minute are derived by the sweep from the simulation rate and the calibrated searched
decisions per round (every searched decision runs dets x sims simulations), because under hundreds of
games too few rounds finish inside a short window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from bench.common import Timed, percentiles_ms, rate
from bench.monitor import Monitor
from blobnet.config import GameConfig, SearchConfig
from clients.selfplay import SelfPlayEngine

__all__ = [
    "UNBATCHED", "POOLED", "MULTI_PROCESS", "OWN_NETWORK", "PointSpec", "CalibrateSpec", "RawSpec", "Counted",
    "window_summary", "play_window", "engine_window",
]  # fmt: skip

# Groups of the strategies (bench/strategies.py) by how they run.
UNBATCHED = ("direct", "processes")  # a forward pass per row
POOLED = ("processes+server", "asyncio-pool")  # clients.pool: ``concurrency`` split over ``workers`` engines
MULTI_PROCESS = ("processes", *POOLED)  # ``workers`` processes share the games
OWN_NETWORK = ("processes", "asyncio-pool")  # every one of the ``workers`` processes runs a network


class PointSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One measured point."""

    strategy: str  # a name of bench.strategies.STRATEGIES, or "free" (the search-only ceiling)
    concurrency: int = 1  # games live at once, over all processes
    workers: int = 1  # processes ("processes", "processes+server", "asyncio-pool")
    players: int = 4
    cards: int = 5
    dets: int = 3  # determinizations per decision
    sims: int = 30  # simulations per determinization
    leaves: int = 4  # leaves in flight per tree
    preset: str = "small"  # network preset (blobnet.config.PRESETS)
    warmup: float = 2.0  # seconds before the window
    window: float = 4.0  # seconds measured
    seed: int = 0
    max_batch: int = 4096  # the batcher's rows per forward pass at most
    thread_timeout: float = 0.005  # "threads": seconds a request waits for its batch to fill
    server_threads: int = 1  # "processes+server": torch threads of the server
    server_device: str = "cpu"  # "processes+server": the server's device (cpu, cuda[:N])
    server_dtype: str | None = None  # "processes+server": its inference precision (None: float32; bf16, fp16)
    # the in-process batchers' precision ("asyncio", "asyncio-thread", "asyncio-pool"; None: float32;
    # bf16 or fp16 on the engine blobnet.net.cpu_engine_for picks for it)
    dtype: str | None = None

    def check(self) -> None:
        for name in ("concurrency", "workers", "dets", "sims", "leaves", "max_batch", "server_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.warmup < 0 or self.window <= 0:
            raise ValueError(f"warmup={self.warmup}, window={self.window}: warmup >= 0 and window > 0 seconds")
        if self.strategy in POOLED and self.concurrency < self.workers:
            raise ValueError(f"concurrency={self.concurrency} < workers={self.workers}: every client needs a game")

    def search(self) -> SearchConfig:
        return SearchConfig(dets=self.dets, sims=self.sims, leaves=self.leaves)

    def game(self) -> GameConfig:
        return GameConfig(players=[self.players], cards=[self.cards])


class CalibrateSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Search-only runs to completion: searched decisions per round for each hand size."""

    players: int = 4
    cards: list[int] = msgspec.field(default_factory=lambda: [5])
    dets: int = 3
    sims: int = 30
    leaves: int = 4
    rounds: int = 64  # rounds per hand size
    concurrency: int = 16
    seed: int = 0


class RawSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The forward pass alone."""

    preset: str = "small"
    batches: list[int] = msgspec.field(default_factory=lambda: [1])
    seconds: float = 0.3  # per batch size
    seed: int = 0


@runtime_checkable
class Counted(Protocol):
    """An evaluator that counts its batches (``servers.Batcher``, ``RowByRow``)."""

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...


def window_summary(
    samples: Sequence[Sequence[float]], latency: Sequence[float], batch: tuple[float, float, float, float]
) -> dict[str, Any]:
    """samples: (t, simulations, evaluations, searched decisions, rounds finished) in the window;
    batch: (mean, p10, p50, p90) rows per forward pass."""
    p50, p99 = percentiles_ms(latency)
    mean, p10, b50, p90 = batch
    return {
        "sims_per_s": rate(samples, 1),
        "evals_per_s": rate(samples, 2),
        "decisions_per_s": rate(samples, 3),
        "rounds_done": samples[-1][4] - samples[0][4] if samples else 0,
        "window_s": samples[-1][0] - samples[0][0] if len(samples) >= 2 else math.nan,
        "requests": len(latency),
        "mean_batch": mean,
        "batch_p10": p10,
        "batch_p50": b50,
        "batch_p90": p90,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
    }


Counts = Callable[[], tuple[int, ...]]  # (simulations, evaluations, searched decisions, rounds finished, ...)


async def play_window(
    run: Coroutine[Any, Any, Any],
    counts: Counts,
    spec: PointSpec,
    *,
    timed: Timed,
    monitor: Monitor,
    reset: Callable[[], Awaitable[object]] | None = None,
) -> tuple[list[tuple[float, ...]], list[float]]:
    """Play ``run`` (an engine's or a pool's, asked for more rounds than it can finish) for
    ``spec.warmup`` seconds once it has begun to play (a pool first starts its helper processes),
    then ``reset()`` and measure for ``spec.window`` seconds, sampling ``counts()`` every 50 ms;
    then cancel it. Returns the samples ``(t, *counts())`` of the window and ``timed``'s request
    latencies in it."""
    task = asyncio.ensure_future(run)
    samples: list[tuple[float, ...]] = []

    def snap() -> None:
        samples.append((time.perf_counter(), *counts()))

    try:
        while not counts()[0] and not task.done():
            await asyncio.sleep(0.05)
        start = time.perf_counter() + spec.warmup
        end = start + spec.window
        while time.perf_counter() < start and not task.done():
            await asyncio.sleep(0.05)
        if reset is not None:
            await reset()
        timed.start()
        monitor.mark_start()
        snap()
        while time.perf_counter() < end and not task.done():
            await asyncio.sleep(0.05)
            snap()
        monitor.mark_end()
        latency = timed.stop()
        if task.done():
            task.result()  # the run failed: raise its error
            raise RuntimeError("the run stopped before the window ended")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return samples, latency


async def engine_window(
    evaluator: Timed, spec: PointSpec, *, counted: Counted | None, monitor: Monitor
) -> tuple[list[tuple[float, ...]], list[float], dict[str, Any]]:
    """``spec.concurrency`` games of the engine over ``evaluator`` in ``play_window``. Returns its
    samples and latencies and the window's batch statistics of ``counted`` (the evaluator inside;
    {} for None)."""
    engine = SelfPlayEngine(
        evaluator, search=spec.search(), game=spec.game(), concurrency=spec.concurrency, seed=spec.seed
    )

    def counts() -> tuple[int, ...]:
        return (
            engine.search.simulations,
            engine.search.evaluations,
            engine.stats.searched_decisions,
            engine.stats.rounds,
        )

    async def reset() -> None:
        if counted is not None:
            counted.reset_stats()

    samples, latency = await play_window(
        engine.run(10**12), counts, spec, timed=evaluator, monitor=monitor, reset=reset
    )
    return samples, latency, counted.stats() if counted is not None else {}
