"""The ways of running self-play that ``bench.sweep`` compares, each measured as one point.

    python -m bench.strategies point SPEC_JSON       one point; prints a JSON object on its last line
    python -m bench.strategies calibrate SPEC_JSON   searched decisions per round, on complete rounds
    python -m bench.strategies raw SPEC_JSON         the forward pass alone at given batch sizes
    python -m bench.strategies worker SPEC_JSON INDEX RESULT_FILE                 (a "processes" worker)
    python -m bench.strategies client SPEC_JSON INDEX RESULT_FILE ADDRESS SHARE   (a "processes+server" client,
                                                                              or "asyncio-pool" with ADDRESS local)

Strategies (STRATEGIES), all playing independent rounds with the same search (blobnet.search):

- "asyncio": the project's engine (clients.selfplay.SelfPlayEngine), ``concurrency`` game coroutines
  awaiting one ``servers.Batcher`` in its default mode ("auto"): the forward pass runs in-line on the
  event loop thread, except a batch that fills to ``max_batch`` while requesters still run, which goes
  to a worker thread;
- "asyncio-thread": the same with the forward pass on a worker thread (``Batcher(mode="thread")``);
- "direct": the same engine without batching: every row is its own forward pass of batch one, run
  the moment it is asked for (``bench.common.DirectEvaluator``);
- "threads": the predecessor's thread mode: ``concurrency`` OS threads each play games
  synchronously and share a lock-guarded batcher (``ThreadBatcher``): a request waits on a condition
  until every thread has a request in the batch or ``thread_timeout`` expires, and the thread that
  closes the batch runs the forward pass;
- "processes": the predecessor's process mode: ``workers`` processes, each with its own network (one
  torch thread), each playing one game at a time with direct evaluation;
- "processes+server": ``workers`` client processes, each running the asyncio engine with
  ``concurrency / workers`` games over ``clients.remote.RemoteEvaluator``, sharing one
  ``python -m servers`` process (its torch threads: ``server_threads``);
- "asyncio-pool": ``workers`` client processes, each running the asyncio engine with
  ``concurrency / workers`` games over its own in-process ``servers.Batcher`` (default mode, one torch
  thread): what ``clients.pool.SelfPlayPool`` does (``blobnet selfplay --workers N``, ``train.workers``),
  measured as separate processes sharing one window;
- "free" (not a strategy, a ceiling): the asyncio engine with ``clients.selfplay.FreeEvaluator``,
  which answers at once with uniform priors: the search-only ceiling.

A point warms up for ``warmup`` seconds, then measures for ``window`` seconds: simulations,
evaluations and searched decisions per second (least-squares slopes over counter samples,
``bench.common.rate``), rounds finished in the window, the batch sizes of the window, the latency of
every evaluator request in it, the CPU seconds and peak resident memory of the process tree, GPU
utilisation when there is a GPU. Rounds per minute are derived by the sweep from the simulation rate
and the calibrated searched decisions per round (every searched decision runs dets x sims
simulations), because under hundreds of games too few rounds finish inside a short window.
Processes share the window by absolute time: each reports "ready", the point writes one start time
to every worker's standard input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from bench.common import (
    Adapted,
    DirectEvaluator,
    Gpu,
    Monitor,
    SyncPlayer,
    ThreadBatcher,
    batch_spread,
    child_env,
    percentiles_ms,
    rate,
    raw_forward_rate,
)
from blobnet.config import GameConfig, SearchConfig
from blobnet.net import make_net
from blobnet.search import Search
from clients.pool import split

__all__ = [
    "STRATEGIES",
    "BATCHED",
    "MULTI_PROCESS",
    "PointSpec",
    "CalibrateSpec",
    "RawSpec",
    "engine_window",
    "run_point",
    "calibrate",
    "raw_rates",
]

STRATEGIES = ("asyncio", "asyncio-thread", "direct", "threads", "processes", "processes+server", "asyncio-pool")
BATCHED = ("asyncio", "asyncio-thread", "threads", "processes+server", "asyncio-pool")  # the rest: row by row
CLIENTS = ("processes+server", "asyncio-pool")  # client processes that split ``concurrency`` between them
MULTI_PROCESS = ("processes", *CLIENTS)  # ``workers`` processes share the games
ENGINE = ("asyncio", "asyncio-thread", "direct", "free")  # run in this process on clients.selfplay's engine
LATENCY_KEEP = 20_000  # latency samples a worker process sends back (evenly thinned beyond this)


class PointSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One measured point."""

    strategy: str  # one of STRATEGIES, or "free"
    concurrency: int = 1  # games live at once, over all processes
    workers: int = 1  # processes ("processes", "processes+server", "asyncio-pool")
    players: int = 4
    cards: int = 5
    dets: int = 3  # determinizations per decision
    sims: int = 30  # simulations per determinization
    leaves: int = 4  # leaves in flight per tree
    preset: str = "small"  # network preset (blobnet.net.PRESETS)
    warmup: float = 2.0  # seconds before the window
    window: float = 4.0  # seconds measured
    seed: int = 0
    max_batch: int = 4096  # the batcher's rows per forward pass at most
    thread_timeout: float = 0.005  # "threads": seconds a request waits for its batch to fill
    server_threads: int = 1  # "processes+server": torch threads of the server

    def check(self) -> None:
        if self.strategy not in (*STRATEGIES, "free"):
            raise ValueError(f"strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)} or free")
        for name in ("concurrency", "workers", "dets", "sims", "leaves", "max_batch", "server_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.warmup < 0 or self.window <= 0:
            raise ValueError(f"warmup={self.warmup}, window={self.window}: warmup >= 0 and window > 0 seconds")
        if self.strategy in CLIENTS and self.concurrency < self.workers:
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


# ---- one point ------------------------------------------------------------------------------------


def _summary(
    samples: Sequence[Sequence[float]], latency: Sequence[float], batch: tuple[float, float, float, float]
) -> dict[str, Any]:
    """samples: (t, simulations, evaluations, searched decisions, rounds finished) in the window."""
    p50, p99 = percentiles_ms(latency)
    mean, p10, b50, p90 = batch
    window = samples[-1][0] - samples[0][0] if len(samples) >= 2 else math.nan
    return {
        "sims_per_s": rate(samples, 1),
        "evals_per_s": rate(samples, 2),
        "decisions_per_s": rate(samples, 3),
        "rounds_done": samples[-1][4] - samples[0][4] if samples else 0,
        "window_s": window,
        "requests": len(latency),
        "mean_batch": mean,
        "batch_p10": p10,
        "batch_p50": b50,
        "batch_p90": p90,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
    }


def _make_evaluator(spec: PointSpec) -> Any:
    if spec.strategy == "free":
        from clients.selfplay import FreeEvaluator

        return FreeEvaluator()
    model = make_net(spec.preset, seed=spec.seed)
    if spec.strategy == "direct":
        return DirectEvaluator(model)
    from servers import Batcher

    if spec.strategy == "asyncio-thread":
        return Batcher(model, max_batch=spec.max_batch, mode="thread")
    return Batcher(model, max_batch=spec.max_batch)  # "asyncio": the batcher's default mode ("auto")


async def engine_window(
    evaluator: Adapted, spec: PointSpec, *, concurrency: int, seed: int, start: float, end: float,
    clock: Callable[[], float], monitor: Monitor | None,
) -> tuple[list[tuple[float, ...]], list[float], dict[str, Any]]:  # fmt: skip
    """Run the asyncio engine until ``end`` (by ``clock``), measuring from ``start``. Returns the
    counter samples of the window, the request latencies and the evaluator's stats of the window."""
    from clients.selfplay import SelfPlayEngine

    engine = SelfPlayEngine(evaluator, search=spec.search(), game=spec.game(), concurrency=concurrency, seed=seed)
    task = asyncio.create_task(engine.run(10**12))
    samples: list[tuple[float, ...]] = []

    def snap() -> None:
        s = engine.stats
        samples.append((clock(), engine.search.simulations, engine.search.evaluations, s.searched_decisions, s.rounds))

    try:
        while clock() < start and not task.done():
            await asyncio.sleep(0.05)
        evaluator.reset_stats()
        evaluator.latency.start()
        if monitor is not None:
            monitor.mark_start()
        snap()
        while clock() < end and not task.done():
            await asyncio.sleep(0.05)
            snap()
        if monitor is not None:
            monitor.mark_end()
        latency = evaluator.latency.stop()
        stats = evaluator.stats()
        if task.done():
            task.result()  # the engine failed: raise its error
            raise RuntimeError("the engine stopped before the window ended")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return samples, latency, stats


def _run_engine_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    from clients.selfplay import run_loop

    async def main() -> dict[str, Any]:
        evaluator = Adapted(_make_evaluator(spec))
        try:
            t0 = time.perf_counter()
            samples, latency, stats = await engine_window(
                evaluator, spec, concurrency=spec.concurrency, seed=spec.seed, start=t0 + spec.warmup,
                end=t0 + spec.warmup + spec.window, clock=time.perf_counter, monitor=monitor,
            )  # fmt: skip
        finally:
            await evaluator.aclose()
        batch = batch_spread(stats) if stats else (math.nan,) * 4
        return _summary(samples, latency, batch)  # type: ignore[arg-type]

    out: dict[str, Any] = run_loop(main())
    return out


def _run_threads_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    model = make_net(spec.preset, seed=spec.seed)
    tb = ThreadBatcher(model, fill=spec.concurrency, timeout=spec.thread_timeout)
    players = [
        SyncPlayer(Search(tb, spec.search()), np.random.default_rng([spec.seed, i]), players=spec.players,
                   cards=spec.cards)
        for i in range(spec.concurrency)
    ]  # fmt: skip
    stop = threading.Event()
    errors: list[BaseException] = []

    def play(pl: SyncPlayer) -> None:
        try:
            while not stop.is_set():
                pl.play_round(stop.is_set)
        except BaseException as e:  # noqa: BLE001 - reported by the point
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=play, args=(pl,), daemon=True) for pl in players]
    for t in threads:
        t.start()

    def snap() -> tuple[float, ...]:
        return (
            time.perf_counter(),
            sum(pl.search.simulations for pl in players),
            sum(pl.search.evaluations for pl in players),
            sum(pl.decisions for pl in players),
            sum(pl.rounds for pl in players),
        )

    try:
        time.sleep(spec.warmup)
        tb.latency.start()
        monitor.mark_start()
        samples = [snap()]
        end = time.perf_counter() + spec.window
        while time.perf_counter() < end and not stop.is_set():
            time.sleep(0.05)
            samples.append(snap())
        monitor.mark_end()
        latency = tb.latency.stop()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    if errors:
        raise errors[0]
    sizes = np.asarray(tb.sizes or [0], dtype=np.float64)
    p10, p50, p90 = np.percentile(sizes, [10, 50, 90])
    out = _summary(samples, latency, (float(sizes.mean()), float(p10), float(p50), float(p90)))
    out["note"] = f"{spec.concurrency} threads, batch timeout {1e3 * spec.thread_timeout:g} ms"
    return out


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.strategies", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip


def _expect_line(proc: subprocess.Popen[str], prefix: str, what: str) -> str:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith(prefix):
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"{what} did not start (got {line.strip()!r}): {err.strip()[-800:]}")
    return line


def _run_process_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    """"processes", "processes+server" and "asyncio-pool": the window is shared by wall-clock time."""
    server: subprocess.Popen[str] | None = None
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="blobnet-bench-") as tmp:
        try:
            address = ""
            if spec.strategy == "processes+server":
                cmd = [sys.executable, "-m", "servers", "--listen", f"unix:{tmp}/s.sock", "--preset", spec.preset]
                cmd += ["--seed", str(spec.seed), "--max-batch", str(spec.max_batch)]
                cmd += ["--threads", str(spec.server_threads)]
                server = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
                )
                address = _expect_line(server, "serving on ", "the server").split("serving on ", 1)[1].strip()
            payload = msgspec.json.encode(spec).decode()
            shares = split(spec.concurrency, spec.workers)
            for i in range(spec.workers):
                if spec.strategy == "processes":
                    procs.append(_spawn(["worker", payload, str(i), f"{tmp}/{i}.json"]))
                else:
                    share = shares[i]
                    where = address or "local"  # "asyncio-pool": each client has its own batcher
                    procs.append(_spawn(["client", payload, str(i), f"{tmp}/{i}.json", where, str(share)]))
            for p in procs:
                _expect_line(p, "ready", "a worker")
            go = time.time() + 0.05
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{go!r}\n")
                p.stdin.flush()
            start, end = go + spec.warmup, go + spec.warmup + spec.window
            time.sleep(max(0.0, start - time.time()))
            monitor.mark_start()
            if address:
                _server_stats(address, reset=True)
            time.sleep(max(0.0, end - time.time()))
            monitor.mark_end()
            stats = _server_stats(address, reset=False) if address else {}
            results = []
            for i, p in enumerate(procs):
                _, stderr = p.communicate(timeout=60 + 2 * spec.warmup + 2 * spec.window)
                if p.returncode != 0:
                    raise RuntimeError(f"a worker failed ({p.returncode}): {stderr.strip()[-800:]}")
                # A file, not standard output: a second worker's result of a few hundred kB came back
                # cut at the pipe's 64 KiB while the first one was being read.
                results.append(json.loads(Path(f"{tmp}/{i}.json").read_text()))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if server is not None:
                server.terminate()
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    latency: list[float] = [x for r in results for x in r["latency"]]
    keys = ("sims_per_s", "evals_per_s", "decisions_per_s", "rounds_done")
    if spec.strategy == "asyncio-pool":
        batch = _pooled_batches([r["batcher"] for r in results])
    else:
        batch = batch_spread(stats) if stats else (1.0, 1.0, 1.0, 1.0)
    out = _summary([], latency, batch)
    for k in keys:
        out[k] = float(sum(r[k] for r in results))
    out["window_s"] = float(np.mean([r["window_s"] for r in results]))
    out["requests"] = int(sum(r["requests"] for r in results))
    if spec.strategy == "processes":
        out["note"] = f"{spec.workers} worker processes, one game each, direct evaluation, 1 torch thread each"
    elif spec.strategy == "asyncio-pool":
        out["note"] = f"{spec.workers} client processes, each with its own batcher (default mode, 1 torch thread)"
    else:
        out["note"] = f"{spec.workers} client processes + 1 server process ({spec.server_threads} torch threads)"
    return out


def _pooled_batches(clients: Sequence[dict[str, Any]]) -> tuple[float, float, float, float]:
    """(mean, p10, p50, p90) batch size over "asyncio-pool" clients' batchers (``_batch_window``): the
    mean is exact (all rows over all batches); p10, p50 and p90 are the means of the clients' own
    percentiles, not percentiles of the pooled batches (the clients send no size histograms)."""
    batches = sum(int(c["batches"]) for c in clients)
    if not batches:
        return (math.nan,) * 4
    mean = sum(int(c["rows"]) for c in clients) / batches
    live = [c for c in clients if c["batches"]]
    p10, p50, p90 = (float(np.mean([c[k] for c in live])) for k in ("p10", "p50", "p90"))
    return mean, p10, p50, p90


def _server_stats(address: str, *, reset: bool) -> dict[str, Any]:
    from clients.remote import RemoteEvaluator

    async def ask() -> dict[str, Any]:
        ev = await RemoteEvaluator.connect(address)
        try:
            return await ev.stats(reset)
        finally:
            await ev.aclose()

    return asyncio.run(ask())


def run_point(spec: PointSpec) -> dict[str, Any]:
    """Measure one point in this process (children as the strategy needs). The result has the
    ``_summary`` keys plus cpu_cores, cpu_percent, peak_rss_mb, gpu_util, gpu_mem_mb, gpu, note."""
    spec.check()
    gpu, why = Gpu.probe()
    with Monitor(gpu) as monitor:
        if spec.strategy in ENGINE:
            out = _run_engine_point(spec, monitor)
        elif spec.strategy == "threads":
            out = _run_threads_point(spec, monitor)
        else:
            out = _run_process_point(spec, monitor)
    out.update(monitor.report())
    out["gpu"] = gpu.name if gpu is not None else why
    out.setdefault("note", "")
    return out


# ---- the worker processes ----------------------------------------------------------------------------


def _thin(xs: list[float], keep: int = LATENCY_KEEP) -> list[float]:
    if len(xs) <= keep:
        return xs
    return [xs[int(i)] for i in np.linspace(0, len(xs) - 1, keep)]


def _window_result(samples: list[tuple[float, ...]], latency: list[float]) -> dict[str, Any]:
    out = _summary(samples, latency, (1.0, 1.0, 1.0, 1.0))
    out["latency"] = _thin(latency)
    return out


def worker_main(spec: PointSpec, index: int) -> dict[str, Any]:
    """"processes": one game at a time, direct evaluation, until the shared window ends."""
    torch.set_num_threads(1)
    ev = Adapted(DirectEvaluator(make_net(spec.preset, seed=spec.seed), yield_each=False))
    player = SyncPlayer(
        Search(ev, spec.search()), np.random.default_rng([spec.seed, 1000 + index]), players=spec.players,
        cards=spec.cards,
    )  # fmt: skip
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    start, end = go + spec.warmup, go + spec.warmup + spec.window
    samples: list[tuple[float, ...]] = []

    def on_decision() -> None:
        now = time.time()
        if start <= now <= end:
            if not ev.latency.active:
                ev.latency.start()
            s = player.search
            samples.append((now, s.simulations, s.evaluations, player.decisions, player.rounds))
        elif now > end:
            ev.latency.active = False

    while time.time() < end:
        player.play_round(lambda: time.time() >= end, on_decision)
    return _window_result(samples, ev.latency.stop())


async def client_main(spec: PointSpec, address: str, share: int, index: int) -> dict[str, Any]:
    """The asyncio engine with ``share`` games: over the socket to ``address`` ("processes+server"),
    or over a batcher of its own when ``address`` is "local" ("asyncio-pool"; the result then holds
    that batcher's window under "batcher")."""
    if address == "local":
        from servers import Batcher

        ev = Adapted(Batcher(make_net(spec.preset, seed=spec.seed), max_batch=spec.max_batch))
    else:
        from clients.remote import RemoteEvaluator

        ev = Adapted(await RemoteEvaluator.connect(address))
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    try:
        samples, latency, stats = await engine_window(
            ev, spec, concurrency=share, seed=spec.seed * 1000 + index, start=go + spec.warmup,
            end=go + spec.warmup + spec.window, clock=time.time, monitor=None,
        )  # fmt: skip
    finally:
        await ev.aclose()
    out = _window_result(samples, latency)
    if address == "local":
        out["batcher"] = _batch_window(stats)
    return out


def _batch_window(stats: dict[str, Any]) -> dict[str, float]:
    """A batcher's window for the point: batches, rows and its p10/p50/p90 batch size."""
    _, p10, p50, p90 = batch_spread(stats)
    return {"batches": int(stats.get("batches", 0)), "rows": int(stats.get("rows", 0)), "p10": p10, "p50": p50,
            "p90": p90}  # fmt: skip


# ---- calibration and the raw forward pass --------------------------------------------------------


def calibrate(spec: CalibrateSpec) -> dict[str, dict[str, float]]:
    """For each hand size: searched decisions, simulations and evaluations per round, and the
    search-only rounds/min, from ``rounds`` complete rounds with the free evaluator."""
    from clients.selfplay import FreeEvaluator, SelfPlayEngine, run_loop

    out: dict[str, dict[str, float]] = {}
    for cards in spec.cards:
        engine = SelfPlayEngine(
            FreeEvaluator(), search=SearchConfig(dets=spec.dets, sims=spec.sims, leaves=spec.leaves),
            game=GameConfig(players=[spec.players], cards=[cards]), concurrency=spec.concurrency, seed=spec.seed,
        )  # fmt: skip
        st = run_loop(engine.run(spec.rounds))
        out[str(cards)] = {
            "decisions_per_round": st.searched_decisions / st.rounds,
            "sims_per_round": st.simulations / st.rounds,
            "evals_per_round": st.evaluations / st.rounds,
            "rounds_per_min": 60.0 * st.rounds / st.seconds,
            "rounds": st.rounds,
        }
    return out


def raw_rates(spec: RawSpec) -> dict[str, float]:
    """Evaluations per second of the forward pass alone, per batch size (torch's default threads)."""
    model = make_net(spec.preset, seed=spec.seed)
    return {str(b): raw_forward_rate(model, b, spec.seconds, seed=spec.seed) for b in spec.batches}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] not in ("point", "calibrate", "raw", "worker", "client"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    kind, payload = args[0], args[1]
    result: Any
    if kind == "calibrate":
        result = calibrate(msgspec.json.decode(payload, type=CalibrateSpec))
    elif kind == "raw":
        result = raw_rates(msgspec.json.decode(payload, type=RawSpec))
    else:
        spec = msgspec.json.decode(payload, type=PointSpec)
        if kind == "point":
            result = run_point(spec)
        elif kind == "worker":
            result = worker_main(spec, int(args[2]))
            Path(args[3]).write_text(json.dumps(result))
            return 0
        else:
            from clients.selfplay import run_loop

            result = run_loop(client_main(spec, args[4], int(args[5]), int(args[2])))
            Path(args[3]).write_text(json.dumps(result))
            return 0
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
