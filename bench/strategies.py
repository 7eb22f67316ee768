"""The ways of running self-play that ``bench.sweep`` compares, each measured as one point.

    python -m bench.strategies point SPEC_JSON       one point; prints a JSON object on its last line
    python -m bench.strategies calibrate SPEC_JSON   searched decisions per round, on complete rounds
    python -m bench.strategies raw SPEC_JSON         the forward pass alone at given batch sizes
    python -m bench.strategies worker SPEC_JSON INDEX RESULT_FILE     (a "processes" worker)

Strategies (``STRATEGIES``: name -> the function that measures a point), all playing independent
rounds with the same search (blobnet.search). The product's, measured as it runs:

- "asyncio": the engine (clients.selfplay.SelfPlayEngine), ``concurrency`` game coroutines awaiting
  one ``servers.Batcher`` in its default mode ("auto": the forward pass in-line on the event loop
  thread, except a batch that fills to ``max_batch`` while requesters still run, which goes to a
  worker thread);
- "asyncio-thread": the same with the forward pass on a worker thread (``Batcher(mode="thread")``);
- "asyncio-pool": ``clients.pool.SelfPlayPool`` with ``workers`` engines, this process's and its
  helper processes', each over a batcher of its own in the default mode (one torch thread): what
  ``blobnet selfplay --workers N`` runs (``train.workers``);
- "processes+server": the same pool with every engine asking one ``python -m servers`` process over
  ``clients.remote.RemoteEvaluator`` (its torch threads: ``server_threads``), on a Unix socket with
  a shared-memory ring per engine (rows packed, only notices on the socket): what
  ``blobnet selfplay --server unix:PATH --workers N`` runs.

The predecessor's designs (bench/predecessor.py), the baselines:

- "direct": the engine without batching: every row is its own forward pass of batch one, run the
  moment it is asked for (``RowByRow``);
- "threads": ``concurrency`` OS threads each play games synchronously and share a lock-guarded
  batcher (``ThreadBatcher``): a request waits on a condition until every thread has a request in
  the batch or ``thread_timeout`` expires, and the thread that closes the batch runs the forward pass;
- "processes": ``workers`` processes, each with its own network (one torch thread), each playing one
  game at a time with direct evaluation.

"free" (not a strategy, a ceiling): the engine with ``blobnet.evaluator.FreeEvaluator``, which answers
at once with uniform priors: the search-only ceiling.

How a point measures each: bench/point.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from bench.common import Timed, batch_spread, child_env, raw_forward_rate
from bench.monitor import Gpu, Monitor
from bench.point import (
    UNBATCHED,
    CalibrateSpec,
    Counted,
    PointSpec,
    RawSpec,
    engine_window,
    play_window,
    window_summary,
)
from bench.predecessor import RowByRow, SyncPlayer, ThreadBatcher
from blobnet.aio import run_loop
from blobnet.config import CPU_SPARSE, GameConfig, SearchConfig
from blobnet.evaluator import Evaluator, FreeEvaluator
from blobnet.net import cpu_engine_for, make_net
from blobnet.search import Search
from clients.pool import BatcherSpec, EvaluatorSpec, RemoteSpec, SelfPlayPool
from clients.remote import RING_ROWS, RemoteEvaluator
from clients.selfplay import SelfPlayEngine
from servers import Batcher
from servers.shm import MAX_RING_ROWS

__all__ = ["STRATEGIES", "POINTS", "BATCHED", "ENGINE_EVALUATORS", "COMMANDS", "run_point", "calibrate", "raw_rates"]

LATENCY_KEEP = 20_000  # latency samples a worker process sends back (evenly thinned beyond this)


# ``concurrency`` games of the engine in this process: the evaluator each strategy gives it.
def _batcher(spec: PointSpec, **kw: Any) -> Batcher:
    return Batcher(make_net(spec.preset, seed=spec.seed), max_batch=spec.max_batch, **kw, **_product(spec))


def _product(spec: PointSpec) -> dict[str, Any]:
    """The forward pass as the product runs it on a CPU in the point's precision (blobnet.config,
    blobnet.net.cpu_engine_for)."""
    return {"engine": cpu_engine_for(spec.dtype), "sparse": CPU_SPARSE, "dtype": spec.dtype}


ENGINE_EVALUATORS: dict[str, Callable[[PointSpec], Evaluator]] = {
    "asyncio": _batcher,  # the batcher's default mode
    "asyncio-thread": partial(_batcher, mode="thread"),
    "direct": lambda spec: RowByRow(make_net(spec.preset, seed=spec.seed)),
    "free": lambda spec: FreeEvaluator(),
}


def _engine_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    """The engine in this process: "asyncio", "asyncio-thread", "direct" and "free"."""

    async def main() -> dict[str, Any]:
        inner = ENGINE_EVALUATORS[spec.strategy](spec)
        evaluator = Timed(inner)
        counted = inner if isinstance(inner, Counted) else None
        try:
            samples, latency, stats = await engine_window(evaluator, spec, counted=counted, monitor=monitor)
        finally:
            await evaluator.aclose()
        return window_summary(samples, latency, batch_spread(stats))

    return run_loop(main())


def _threads_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    tb = ThreadBatcher(make_net(spec.preset, seed=spec.seed), fill=spec.concurrency, timeout=spec.thread_timeout)
    evaluator = Timed(tb)
    players = [
        SyncPlayer(Search(evaluator, spec.search()), np.random.default_rng([spec.seed, i]), spec.game())
        for i in range(spec.concurrency)
    ]
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
        first = len(tb.sizes)
        evaluator.start()
        monitor.mark_start()
        samples = [snap()]
        end = time.perf_counter() + spec.window
        while time.perf_counter() < end and not stop.is_set():
            time.sleep(0.05)
            samples.append(snap())
        monitor.mark_end()
        latency = evaluator.stop()
        sizes = np.asarray(tb.sizes[first:] or [0], dtype=np.float64)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    if errors:
        raise errors[0]
    p10, p50, p90 = np.percentile(sizes, [10, 50, 90])
    out = window_summary(samples, latency, (float(sizes.mean()), float(p10), float(p50), float(p90)))
    out["note"] = f"{spec.concurrency} threads, batch timeout {1e3 * spec.thread_timeout:g} ms"
    return out


def _expect_line(proc: subprocess.Popen[str], prefix: str, what: str) -> str:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith(prefix):
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"{what} did not start (got {line.strip()!r}): {err.strip()[-800:]}")
    return line


def _processes_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    """The predecessor's "processes": ``worker_main`` in ``workers`` processes, sharing one window by
    wall-clock time."""
    payload = msgspec.json.encode(spec).decode()
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="blobnet-bench-") as tmp:
        try:
            for i in range(spec.workers):
                cmd = [sys.executable, "-m", "bench.strategies", "worker", payload, str(i), f"{tmp}/{i}.json"]
                procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=child_env(),
                    )
                )
            for p in procs:
                _expect_line(p, "ready", "a worker")
            go = time.time() + 0.05
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{go!r}\n")
                p.stdin.flush()
            time.sleep(max(0.0, go + spec.warmup - time.time()))
            monitor.mark_start()
            time.sleep(max(0.0, go + spec.warmup + spec.window - time.time()))
            monitor.mark_end()
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
    out = window_summary([], [x for r in results for x in r["latency"]], (1.0, 1.0, 1.0, 1.0))
    for k in ("sims_per_s", "evals_per_s", "decisions_per_s", "rounds_done"):
        out[k] = float(sum(r[k] for r in results))
    out["window_s"] = float(np.mean([r["window_s"] for r in results]))
    out["requests"] = int(sum(r["requests"] for r in results))
    out["note"] = f"{spec.workers} worker processes, one game each, direct evaluation, 1 torch thread each"
    return out


def worker_main(spec: PointSpec, index: int) -> dict[str, Any]:
    """A "processes" worker: one game at a time, direct evaluation, until the shared window ends."""
    torch.set_num_threads(1)
    evaluator = Timed(RowByRow(make_net(spec.preset, seed=spec.seed), yield_each=False))
    player = SyncPlayer(Search(evaluator, spec.search()), np.random.default_rng([spec.seed, 1000 + index]), spec.game())
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    start, end = go + spec.warmup, go + spec.warmup + spec.window
    samples: list[tuple[float, ...]] = []

    def on_decision() -> None:
        now = time.time()
        if start <= now <= end:
            if not evaluator.active:
                evaluator.start()
            s = player.search
            samples.append((now, s.simulations, s.evaluations, player.decisions, player.rounds))
        elif now > end:
            evaluator.active = False

    while time.time() < end:
        player.play_round(lambda: time.time() >= end, on_decision)
    latency = evaluator.stop()
    out = window_summary(samples, latency, (1.0, 1.0, 1.0, 1.0))
    if len(latency) > LATENCY_KEEP:  # evenly thinned: the point pools every worker's samples
        latency = [latency[int(i)] for i in np.linspace(0, len(latency) - 1, LATENCY_KEEP)]
    out["latency"] = latency
    return out


async def _pool_window(
    spec: PointSpec,
    monitor: Monitor,
    local: Timed,
    remote: EvaluatorSpec,
    weights: dict[str, Any] | None,
    reset: Callable[[], Awaitable[object]],
) -> tuple[list[tuple[float, ...]], list[float]]:
    """A ``SelfPlayPool`` of ``spec.workers`` engines, this process's over ``local``, its helpers'
    built from ``remote`` and ``weights``, in ``play_window``, sampling ``pool.counts()`` (the
    helpers report theirs every 0.1 s). The samples end with the batches and rows of the engines'
    own batchers."""
    pool = SelfPlayPool(spec.workers)
    run = pool.run(local, remote, weights, search=spec.search(), game=spec.game(), rounds=10**12,
                   concurrency=spec.concurrency, seed=spec.seed)  # fmt: skip

    def counts() -> tuple[int, ...]:
        c = pool.counts()
        return c.simulations, c.evaluations, c.searched_decisions, c.rounds, c.batches, c.rows

    try:
        return await play_window(run, counts, spec, timed=local, monitor=monitor, reset=reset)
    finally:
        pool.close()


def _pool_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    """The "asyncio-pool": a pool of engines, each over a batcher of its own (the default mode)."""

    async def main() -> dict[str, Any]:
        model = make_net(spec.preset, seed=spec.seed)
        weights = model.state_dict()  # float32, as the helpers take them: the batcher converts the model
        product = _product(spec)
        batcher = Batcher(model, max_batch=spec.max_batch, **product)
        helpers = BatcherSpec(preset=spec.preset, max_batch=spec.max_batch, mode=batcher.mode, **product)
        local = Timed(batcher)

        try:
            samples, latency = await _pool_window(spec, monitor, local, helpers, weights, _async(batcher.reset_stats))
            own = batcher.stats()
        finally:
            await local.aclose()
        batches, rows = samples[-1][5] - samples[0][5], samples[-1][6] - samples[0][6]
        _, p10, p50, p90 = batch_spread(own)  # this process's batcher: the helpers report counts only
        return window_summary(samples, latency, (rows / batches if batches else math.nan, p10, p50, p90))

    out: dict[str, Any] = run_loop(main())
    out["note"] = f"{spec.workers} engine processes (clients.pool), each with its own batcher (1 torch thread)"
    return out


@contextlib.contextmanager
def _server(spec: PointSpec) -> Iterator[str]:
    """A ``python -m servers`` process serving a fresh ``spec.preset`` network; yields its address."""
    with tempfile.TemporaryDirectory(prefix="blobnet-bench-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "servers",
            "--listen",
            f"unix:{tmp}/s.sock",
            "--preset",
            spec.preset,
            "--seed",
            str(spec.seed),
            "--max-batch",
            str(spec.max_batch),
            "--threads",
            str(spec.server_threads),
            "--device",
            spec.server_device,
            *(["--dtype", spec.server_dtype] if spec.server_dtype else []),
        ]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        try:
            yield _expect_line(server, "serving on ", "the server").split("serving on ", 1)[1].strip()
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def ring_rows(spec: PointSpec) -> int:
    """Ring slots for one engine of ``spec``: room for every row its games can have in flight (a
    wave of each one's search), at least the default."""
    games = -(-spec.concurrency // spec.workers)
    return min(MAX_RING_ROWS, max(RING_ROWS, games * Search.rows_per_wave(spec.search())))


def _server_point(spec: PointSpec, monitor: Monitor) -> dict[str, Any]:
    """The "processes+server": a pool of engines asking one server process."""

    async def main(address: str) -> dict[str, Any]:
        remote = await RemoteEvaluator.connect(address, shm=True, ring_rows=ring_rows(spec))  # the helpers' too
        local = Timed(remote)
        try:
            before = partial(remote.stats, reset=True)
            helpers = RemoteSpec(address, ring_rows=ring_rows(spec))
            samples, latency = await _pool_window(spec, monitor, local, helpers, None, before)
            served = await remote.stats()
        finally:
            await local.aclose()
        return window_summary(samples, latency, batch_spread(served))

    with _server(spec) as address:
        out: dict[str, Any] = run_loop(main(address))
    out["note"] = (
        f"{spec.workers} engine processes (clients.pool) + 1 server process ({spec.server_threads} torch threads)"
    )
    return out


def _async(f: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    """``f`` as a coroutine function (what ``play_window``'s ``reset`` awaits)."""

    async def call() -> None:
        f()

    return call


Strategy = Callable[[PointSpec, Monitor], dict[str, Any]]
STRATEGIES: dict[str, Strategy] = {
    "asyncio": _engine_point,
    "asyncio-thread": _engine_point,
    "direct": _engine_point,
    "threads": _threads_point,
    "processes": _processes_point,
    "processes+server": _server_point,
    "asyncio-pool": _pool_point,
}
POINTS: dict[str, Strategy] = {**STRATEGIES, "free": _engine_point}  # what a point may measure
BATCHED = tuple(s for s in STRATEGIES if s not in UNBATCHED)


def run_point(spec: PointSpec) -> dict[str, Any]:
    """Measure one point in this process (children as the strategy needs). The result has the
    ``window_summary`` keys plus cpu_cores, cpu_percent, peak_rss_mb, gpu_util, gpu_mem_mb, gpu, note."""
    if spec.strategy not in POINTS:
        raise ValueError(f"strategy {spec.strategy!r}: use one of {', '.join(STRATEGIES)} or free")
    spec.check()
    gpu, why = Gpu.probe()
    with Monitor(gpu) as monitor:
        out = POINTS[spec.strategy](spec, monitor)
    out.update(monitor.report())
    out["gpu"] = gpu.name if gpu is not None else why
    out.setdefault("note", "")
    return out


def calibrate(spec: CalibrateSpec) -> dict[str, dict[str, float]]:
    """For each hand size: searched decisions, simulations and evaluations per round, and the
    search-only rounds/min, from ``rounds`` complete rounds with the free evaluator."""
    out: dict[str, dict[str, float]] = {}
    for cards in spec.cards:
        engine = SelfPlayEngine(
            FreeEvaluator(),
            search=SearchConfig(dets=spec.dets, sims=spec.sims, leaves=spec.leaves),
            game=GameConfig(players=[spec.players], cards=[cards]),
            concurrency=spec.concurrency,
            seed=spec.seed,
        )
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


COMMANDS: dict[str, Callable[[str], Any]] = {
    "point": lambda payload: run_point(msgspec.json.decode(payload, type=PointSpec)),
    "calibrate": lambda payload: calibrate(msgspec.json.decode(payload, type=CalibrateSpec)),
    "raw": lambda payload: raw_rates(msgspec.json.decode(payload, type=RawSpec)),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 4 and args[0] == "worker":
        result = worker_main(msgspec.json.decode(args[1], type=PointSpec), int(args[2]))
        Path(args[3]).write_text(json.dumps(result))
        return 0
    if len(args) != 2 or args[0] not in COMMANDS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    print(json.dumps(COMMANDS[args[0]](args[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
