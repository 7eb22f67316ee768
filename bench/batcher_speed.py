"""How much of the raw forward pass's speed survives the batcher, in-process and in a server process.

    python -m bench.batcher_speed [--json] [--threads N] [--requesters 1,16,256,4096] [--modes auto,inline,thread]
                                  [--remote shm,unix,tcp]

For each number of concurrent requester coroutines, the rows evaluated per second through the
batcher, and the raw forward pass (``model(x, legal)`` on a ready batch, same model and dtype) at
the batcher's mean batch size, measured right after it so both see the same machine load;
ratio = batcher rate / raw rate. Two kinds of requester: one row per request (each loops: write
into its row, ``await evaluate_many`` of that one row), and waves of ``--wave`` rows per ``await
evaluate_many`` (how blobnet.search asks: a wave of leaves across a decision's trees). Then the
same requesters side by side, their runs interleaved (``side_by_side``): an in-process batcher
(the first of ``--modes``, on the server's default engine, sparse first layer) against
``python -m servers`` in a subprocess reached by ``clients.remote.RemoteEvaluator`` each way of
``--remote``: "shm" (a Unix socket carrying notices, the rows packed in a shared-memory ring),
"shm-late" (the same without eager frames: a frame leaves only at the end of the loop iteration
that staged its rows, ``clients.remote``), "unix" (the rows inside the socket's frames), "tcp";
each remote way's rate over the in-process one in the same repeat (``vs_first``: median, min,
max); the mean batch size is the server's.
``--futures`` also times the ways to wake a batch's waiters.

Every measurement warms up first; each figure is the median of ``--repeats`` runs. ``--json``
prints one JSON object on the last line. The requesters' process sets the garbage collector the way
DESIGN.md tells self-play to (thresholds 50000, 50, 100 and ``gc.freeze()`` after setup; ``--gc
default`` keeps Python's): with thousands of live coroutines a full collection walks all of them.

What it found on the 2-core development machine (default "small" network, fp32, ``--threads 1``, the
machine otherwise idle; 2026-11-29; one-row requesters then awaited a per-row ``evaluate`` that also
built a 70-float priors list, since removed):
- One row per request costs about 4.5 us of Python at 4096 requesters whatever the batcher does
  around it (copying a cache-cold 2.6 kB row 1.2 us, the 70-float priors list 1.1 us, resuming the
  coroutine and the requester's own loop the rest), against a forward pass of about 11 us a row on
  one thread: in-line, 4096 one-row requesters reach 0.66 of the raw rate. Mode "auto" hands the
  batches that fill while requesters still run to a worker thread, so their forward passes overlap
  with the requesters filling the next: 0.75 at 4096 (0.64, 0.68, 0.70 at 1, 16, 256, where no batch
  fills up and it is in-line). Mode "thread" reaches 0.87 at 4096 but loses at 1 to 256 (0.42 to
  0.64): every batch pays the hand-off to the thread. So "auto" is the default. Over the socket
  (server in "auto"): 0.95 at 4096 one-row requesters, 0.26 to 0.49 at 1 to 256.
- Waves of 12 rows per request pay the per-request part once per wave: in-line 0.70 to 0.91,
  "auto" 0.77 to 1.06 (above 1: the forward passes of full batches run on the second core).
- The protocol as arrays (legal masks in, (k, N_ACTIONS) priors out; 2026-12-01, waves of 24 rows,
  a machine shared with other work at load 2.5 to 4.5, so ratios rather than rates): "auto" in-process
  0.76 to 0.88 against 0.68 to 0.81 with legal lists and flat Python priors ("small"), 0.40 to 0.79
  against 0.25 to 0.51 ("tiny"); over the socket 0.54 to 0.73 against 0.51 to 0.67 ("small"). With a
  model that costs nothing, the batcher's own cost fell from 48 to 105 us a request of 24 rows to 24
  to 64 us (medians of 7 interleaved runs, 1 to 256 requesters, in-line).
- In self-play (``blobnet selfplay``) the worker thread does not pay: the search's Python holds the
  GIL, and the thread waits for it at every torch call (thread mode with batches of 128 to 512:
  790 to 855 rounds/min against 1,100 in-line). The second core is used by a second engine process
  instead (``clients.pool``).
- Waking the waiters (--futures): one shared future per batch 0.8 to 1.1 us a request, a future per
  request 1.1 to 1.4 us, ``asyncio.shield`` around a shared one 2.5 to 3 us. Awaiting the shared
  future through ``servers.waiting.wait`` ("shared_helper") rather than the idiom written in line
  ("shared") adds 0.2 to 0.36 us a request (1 to 4096 waiters, medians of 7 and 9, uvloop,
  measured while another process kept the machine busy: "shared" itself took 1.9 to 2.7 us, 6.1
  with one waiter; 2026-12-01).
- The transports side by side (2026-12-01, ``--modes "" --repeats 5 --threads 1``, five runs on a
  machine that other jobs kept at load 2 to 7, so ratios only; each figure the median over the
  runs of each run's median, the range of those medians in brackets), rows a second through a
  server process over in-process, waves of 24: at 16 requesters the ring 0.88 (0.80 to 1.02), the
  socket 0.73 (0.71 to 0.84); at 256 the ring 0.89 (0.81 to 0.94), the socket 0.76 (0.73 to 0.79);
  at 1,024 the ring 0.89 (0.76 to 0.95), the socket 0.76 (0.68 to 0.80). One requester is bound by
  the round trip either way (0.5 to 0.65: the server's forward pass cannot overlap anything), and
  one row per request pays the notice per row (0.6 to 0.95 at 256 to 4,096 requesters, ring and
  socket alike). Where the rest goes: packing costs the client 0.5 to 0.8 us a row, the server
  reads the bits without unpacking (``blobnet.stem.stem_packed``); a second process to schedule
  on a loaded machine costs what no transport saves. The same command once more on the machine
  otherwise idle (load 0.6, one run of 5 repeats, median [range]): at 16 requesters the ring 0.76
  [0.63 to 0.83], the socket 0.71; at 256 the ring 1.38 [1.03 to 1.57], the socket 1.11; at 1,024
  the ring 1.01 [0.99 to 1.22], the socket 0.85. Above 1: the server's process computes on the
  other core while the client encodes, so on two cores the ratio measures the cores as much as
  the transport.
- Eager frames (2026-12-01, ``--modes "" --repeats 9 --threads 1 --requesters 16 --wave-requesters
  1,16,64,256 --remote shm,shm-late``, the machine otherwise idle; one run, medians [range]): with
  few requesters the ring's client and server took turns, each waiting while the other worked; a
  frame that leaves at 128 rows while the server has none of the client's rows lets them work at
  once. Waves of 24, ring over in-process: 16 requesters 0.94 [0.57 to 1.11] against 0.71 [0.47 to
  0.85] without eager frames; 64: 0.74 against 0.78 (the in-process batcher there runs full
  batches on its worker thread, so it uses both cores too); 256: 1.18 against 1.12; one requester
  0.32 against 0.31 (a frame smaller than 128 rows leaves at the iteration's end either way). Other
  runs with eager frames the same evening: 16 requesters 0.99, 0.98, 0.76, 0.68 and 0.65 (the
  machine's own speed varied: the in-process rate at 64 from 72,000 to 108,000 rows/s); 64 0.79
  to 0.81; 1,024 1.02. In ``blobnet selfplay --server`` with two engines and the server on the two
  cores (nothing idle to overlap with), eight alternating pairs of runs at 16 games: medians 1,084
  rounds/min without eager frames and 957 with, each spread over 535 to 1,353: no difference this
  machine resolves, perhaps a small loss where no core is idle.
- torch's OpenMP threads busy-wait: while another process keeps a core busy, a two-thread forward
  pass becomes tens to hundreds of times slower (each parallel region waits for a descheduled thread); one
  thread is unaffected. On a shared machine pass ``--threads 1`` (here and to ``python -m servers``);
  OMP_WAIT_POLICY=PASSIVE avoids the collapse but costs 40% on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import torch

from blobnet.cards import N_ACTIONS
from blobnet.config import CPU_ENGINE, CPU_SPARSE, DEFAULT_PRESET
from blobnet.encode import WIDTH
from blobnet.evaluator import Evaluator
from blobnet.net import make_net, resolve_dtype
from clients.remote import EAGER_ROWS, RemoteEvaluator
from servers.batcher import Batcher
from servers.waiting import Shared, collateral, rewait, wait

APP_GC = (50000, 50, 100)  # DESIGN.md's setting for self-play


def legal_pool(rng: np.random.Generator, n: int = 512) -> np.ndarray:
    """(n, N_ACTIONS) bool legal masks shaped like Blob's: bids 0..cards (minus a hooked one) or 1 to
    13 cards of a hand."""
    out = np.zeros((n, N_ACTIONS), dtype=np.bool_)
    for i in range(n):
        if rng.random() < 0.25:
            cards = int(rng.integers(1, 11))
            out[i, 52 : 52 + cards + 1] = True
        else:
            out[i, rng.choice(52, size=int(rng.integers(1, 14)), replace=False)] = True
    return out


def feature_rows(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """(n, width) float32 rows about as sparse as blobnet.encode's: mostly zeros, a few dozen ones."""
    return (rng.random((n, width)) < 0.05).astype(np.float32)


async def drive(ev: Evaluator, width: int, n: int, seconds: float, rng: np.random.Generator, wave: int = 1) -> float:
    """Run ``n`` requester coroutines against ``ev`` for ``seconds``; rows evaluated per second. Each
    loops on ``evaluate_many`` of ``wave`` rows of ``width`` features (wave 1: one row per request;
    more: as the search sends a wave of leaves)."""
    pool = legal_pool(rng)
    rows = feature_rows(rng, n * wave, width).reshape(n, wave, width)
    stop = False
    done = 0

    async def requester(j: int) -> None:
        nonlocal done
        block = rows[j]
        evaluate_many = ev.evaluate_many
        k = 0
        while not stop:
            block[0, k % 64] = k & 1  # the requester writes into its rows, as the search's encoder would
            s = (j + k) % (len(pool) - wave)
            await evaluate_many(block, pool[s : s + wave])
            k += 1
        done += k * wave

    loop = asyncio.get_running_loop()

    def finish() -> None:
        nonlocal stop
        stop = True

    t0 = time.perf_counter()
    loop.call_later(seconds, finish)
    async with asyncio.TaskGroup() as tg:
        for j in range(n):
            tg.create_task(requester(j))
    return done / (time.perf_counter() - t0)


def raw_rate(
    model: torch.nn.Module, batch: int, seconds: float, dtype: torch.dtype | None, threads: int, seed: int = 0
) -> float:
    """Evaluations per second of ``model(x, legal)`` alone on ready (batch, width) inputs, on ``threads``
    torch threads (whatever a batcher mode set meanwhile)."""
    rng = np.random.default_rng(seed)
    pool = legal_pool(rng)
    x = torch.from_numpy(feature_rows(rng, batch, model.width))  # type: ignore[arg-type]
    if dtype is not None:
        x = x.to(dtype)
    mask = torch.from_numpy(pool[np.arange(batch) % len(pool)])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x, mask)
            reps = 0
            t0 = time.perf_counter()
            while True:
                model(x, mask)
                reps += 1
                dt = time.perf_counter() - t0
                if dt >= seconds and reps >= 3:
                    return reps * batch / dt
    finally:
        torch.set_num_threads(before)


async def measure(
    make: Callable[[], Awaitable[Evaluator]],
    stats: Callable[[Evaluator, bool], Awaitable[dict[str, Any]]],
    model: torch.nn.Module,
    *,
    requesters: list[int],
    seconds: float,
    repeats: int,
    dtype: torch.dtype | None,
    freeze: bool,
    raw_threads: int,
    wave: int = 1,
) -> list[dict[str, Any]]:
    """For each requester count: batcher rate, mean batch, raw rate at that batch, their ratio (medians)."""
    width = int(model.width)  # type: ignore[arg-type]
    out = []
    for n in requesters:
        ev = await make()
        rng = np.random.default_rng(n)
        gc.collect()
        if freeze:
            gc.freeze()  # the requesters' long-lived setup, as self-play would do after building its games
        await drive(ev, width, n, min(0.5, seconds), rng, wave)  # warm-up
        rates, batches, raws, ratios = [], [], [], []
        for _ in range(repeats):
            await stats(ev, True)
            rate = await drive(ev, width, n, seconds, rng, wave)
            mean_batch = (await stats(ev, False))["mean_batch"]
            raw = raw_rate(model, max(1, round(mean_batch)), seconds / 2, dtype, raw_threads)
            rates.append(rate)
            batches.append(mean_batch)
            raws.append(raw)
            ratios.append(rate / raw)
        await ev.aclose()
        gc.unfreeze()
        row = {
            "requesters": n,
            "wave": wave,
            "evals_per_s": statistics.median(rates),
            "mean_batch": statistics.median(batches),
            "raw_evals_per_s": statistics.median(raws),
            "ratio": statistics.median(ratios),
        }
        out.append(row)
        print(
            f"  {n:5d} requesters x {wave:2d} rows: {row['evals_per_s']:>9,.0f} evals/s, "
            f"mean batch {row['mean_batch']:6.1f}, raw {row['raw_evals_per_s']:>9,.0f}/s, ratio {row['ratio']:.2f}",
            flush=True,
        )
    return out


async def future_strategies(n: int, rounds: int, repeats: int) -> dict[str, float]:
    """Microseconds per request of the ways to wake the waiters of a batch, with a free "forward
    pass": one shared future (cancellation handled by the idiom written in line, as the batcher once
    did: "shared"; or by the helper ``servers.waiting.wait``: "shared_helper"), one shared future
    behind ``asyncio.shield`` per waiter, and one future per request. The ways take turns within
    each repeat, so that a change of machine load touches them alike; medians of ``repeats``."""
    loop = asyncio.get_running_loop()
    rows = np.zeros((n, WIDTH), dtype=np.float32)

    class SharedWay:
        def __init__(self) -> None:
            self.s: Shared | None = None
            self.n = 0

        async def evaluate(self, i: int) -> int:
            # The submit is written out in each way: a method call would add to what is measured.
            s = self.s
            if s is None:
                s = self.s = Shared(loop.create_future())
                self.n = 0
                loop.call_soon(self.flush)
            j = self.n
            rows[j] = rows[i]
            self.n = j + 1
            fut = s.fut
            try:
                await fut
            except asyncio.CancelledError:
                if not collateral(fut):
                    raise
                await rewait(s)
            return j

        def flush(self) -> None:
            s, self.s = self.s, None
            assert s is not None
            s.finish()

    class HelperWay(SharedWay):
        async def evaluate(self, i: int) -> int:
            s = self.s
            if s is None:
                s = self.s = Shared(loop.create_future())
                self.n = 0
                loop.call_soon(self.flush)
            j = self.n
            rows[j] = rows[i]
            self.n = j + 1
            await wait(s)
            return j

    class ShieldWay(SharedWay):
        async def evaluate(self, i: int) -> int:
            s = self.s
            if s is None:
                s = self.s = Shared(loop.create_future())
                self.n = 0
                loop.call_soon(self.flush)
            j = self.n
            rows[j] = rows[i]
            self.n = j + 1
            await asyncio.shield(s.fut)
            return j

    class PerRequestWay:
        def __init__(self) -> None:
            self.futs: list[asyncio.Future[int]] = []

        async def evaluate(self, i: int) -> int:
            if not self.futs:
                loop.call_soon(self.flush)
            f: asyncio.Future[int] = loop.create_future()
            rows[len(self.futs)] = rows[i]
            self.futs.append(f)
            return await f

        def flush(self) -> None:
            futs, self.futs = self.futs, []
            for j, f in enumerate(futs):
                if not f.done():
                    f.set_result(j)

    ways: dict[str, Callable[[], Any]] = {
        "shared": SharedWay, "shared_helper": HelperWay, "shield": ShieldWay, "per_request": PerRequestWay,
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats + 1):  # the first round warms up
        for name, way in ways.items():
            ev = way()

            async def requester(i: int, ev: Any = ev) -> None:
                for _ in range(rounds):
                    await ev.evaluate(i)

            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for i in range(n):
                    tg.create_task(requester(i))
            times[name].append((time.perf_counter() - t0) / (n * rounds))
    return {name: 1e6 * statistics.median(t[1:]) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batcher_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--requesters", default="1,16,256,4096", help="requester counts, one row per request")
    p.add_argument(
        "--wave", type=int, default=24, help="rows per evaluate_many request (0: skip waves); 24: the search's "
        "wave at its default settings, 3 determinizations x 4 leaves x 2 views"
    )  # fmt: skip
    p.add_argument("--wave-requesters", default="1,16,256,1024", help="requester counts sending waves")
    p.add_argument("--modes", default="auto,inline,thread", help="in-process modes to measure, the default first")
    p.add_argument("--max-batch", type=int, default=1024)
    p.add_argument("--dtype", default=None, help="bf16 or fp16 (default float32)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gc", choices=("app", "default"), default="app", help="garbage collector settings")
    p.add_argument(
        "--remote", default="shm,unix", help="ways to reach a server process, measured side by side with the "
        "in-process batcher: some of shm (unix socket + shared-memory ring), shm-late (the ring without eager "
        "frames), unix, tcp; empty: none"
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads here and in the server (default: all)")
    p.add_argument("--server-threads", type=int, default=None, help="torch threads of the server process")
    p.add_argument("--max-rows", type=int, default=1024, help="rows per client frame")
    p.add_argument("--futures", action="store_true", help="also time the ways to wake a batch's waiters")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    a = p.parse_args(argv)
    if a.gc == "app":
        gc.set_threshold(*APP_GC)
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    try:
        import uvloop  # optional: an extra; without it the standard loop is measured

        run: Callable[[Any], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    requesters = [int(x) for x in a.requesters.split(",")]
    wave_requesters = [int(x) for x in a.wave_requesters.split(",")] if a.wave > 1 else []
    modes = [m for m in a.modes.split(",") if m]
    dtype = resolve_dtype(a.dtype)
    model = make_net(a.preset, seed=0)
    if dtype is not None:
        model = model.to(dtype)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before starting: other processes share the CPU", flush=True)
    result: dict[str, Any] = {
        "loadavg_before": load,
        "preset": a.preset,
        "dtype": a.dtype or "fp32",
        "max_batch": a.max_batch,
        "torch_threads": threads,
        "cpus": os.cpu_count(),
        "gc": a.gc,
        "seconds": a.seconds,
        "repeats": a.repeats,
        "in_process": {},
    }
    settings = {
        "seconds": a.seconds, "repeats": a.repeats, "dtype": dtype, "freeze": a.gc == "app", "raw_threads": threads,
    }  # fmt: skip

    async def batcher_stats(ev: Evaluator, reset: bool) -> dict[str, Any]:
        assert isinstance(ev, Batcher)
        s = ev.stats()
        if reset:
            ev.reset_stats()
        return s

    for mode in modes:

        async def make_batcher(mode: str = mode) -> Evaluator:
            return Batcher(model, max_batch=a.max_batch, mode=mode, dtype=dtype)

        print(f"in-process, mode {mode}:", flush=True)
        result["in_process"][mode] = run(measure(make_batcher, batcher_stats, model, requesters=requesters, **settings))
        if wave_requesters:
            result["in_process"][f"{mode}_waves"] = run(
                measure(make_batcher, batcher_stats, model, requesters=wave_requesters, wave=a.wave, **settings)
            )
        torch.set_num_threads(threads)  # thread mode lowers it for the process; undo that
    if a.futures:
        result["future_us_per_request"] = {}
        for n in requesters:
            times = run(future_strategies(n, max(5, 50_000 // n), a.repeats))
            result["future_us_per_request"][n] = times
            print(f"  waking {n:5d} waiters, us per request: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    if a.remote:
        result["remote"] = run_remote(a, model, requesters, wave_requesters, settings, run)
    if modes:
        result["ratio_in_process_max_requesters"] = result["in_process"][modes[0]][-1]["ratio"]
    if "remote" in result:
        part = result["remote"].get("waves") or result["remote"]["rows"]
        for k in result["remote"]["remote"]:
            result[f"{k}_vs_in_process_max_requesters"] = part[k][-1]["vs_first"]["median"]
    if a.json:
        print(json.dumps(result))
    return 0


async def side_by_side(
    ways: dict[str, tuple[Callable[[], Awaitable[Evaluator]], Callable[[Evaluator, bool], Awaitable[dict[str, Any]]]]],
    model: torch.nn.Module,
    *,
    requesters: list[int],
    seconds: float,
    repeats: int,
    dtype: torch.dtype | None,
    freeze: bool,
    raw_threads: int,
    wave: int = 1,
) -> dict[str, list[dict[str, Any]]]:
    """``measure`` for several evaluators at once, their runs interleaved (the order rotating each
    repeat), so that a change of machine load touches them alike. Besides each way's medians, every
    way but the first gets ``vs_first``: the median, min and max over the repeats of its rate over
    the first way's rate in the same repeat."""
    width = int(model.width)  # type: ignore[arg-type]
    names = list(ways)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for n in requesters:
        evs = {name: await make() for name, (make, _) in ways.items()}
        rng = np.random.default_rng(n)
        gc.collect()
        if freeze:
            gc.freeze()
        for name in names:
            await drive(evs[name], width, n, min(0.5, seconds), rng, wave)  # warm-up
        got: dict[str, dict[str, list[float]]] = {name: {"rate": [], "batch": [], "raw": []} for name in names}
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                stats = ways[name][1]
                await stats(evs[name], True)
                rate = await drive(evs[name], width, n, seconds, rng, wave)
                mean_batch = (await stats(evs[name], False))["mean_batch"]
                got[name]["rate"].append(rate)
                got[name]["batch"].append(mean_batch)
                got[name]["raw"].append(raw_rate(model, max(1, round(mean_batch)), seconds / 2, dtype, raw_threads))
        for ev in evs.values():
            await ev.aclose()
        gc.unfreeze()
        first = got[names[0]]["rate"]
        line = []
        for name in names:
            g = got[name]
            row: dict[str, Any] = {
                "requesters": n,
                "wave": wave,
                "evals_per_s": statistics.median(g["rate"]),
                "mean_batch": statistics.median(g["batch"]),
                "raw_evals_per_s": statistics.median(g["raw"]),
                "ratio": statistics.median(x / y for x, y in zip(g["rate"], g["raw"], strict=True)),
            }
            if name != names[0]:
                vs = [x / y for x, y in zip(g["rate"], first, strict=True)]
                row["vs_first"] = {"median": statistics.median(vs), "min": min(vs), "max": max(vs)}
            out[name].append(row)
            line.append(
                f"{name} {row['evals_per_s']:>9,.0f}/s (batch {row['mean_batch']:6.1f}"
                + (f", x{row['vs_first']['median']:.2f} [{min(vs):.2f}-{max(vs):.2f}])" if name != names[0] else ")")
            )
        print(f"  {n:5d} requesters x {wave:2d} rows: " + "; ".join(line), flush=True)
    return out


def run_remote(
    a: argparse.Namespace,
    model: torch.nn.Module,
    requesters: list[int],
    wave_requesters: list[int],
    settings: dict[str, Any],
    run: Any,
) -> dict[str, Any]:
    """The in-process batcher (mode ``a.modes``' first) against ``python -m servers`` in a
    subprocess reached each way of ``a.remote`` ("shm": a unix socket with the shared-memory ring;
    "shm-late": the ring without eager frames; "unix": the same socket, rows inside the frames;
    "tcp"), side by side."""
    kinds = [k for k in a.remote.split(",") if k]
    for k in kinds:
        if k not in REMOTES:
            raise SystemExit(f"--remote {k!r}: use some of {', '.join(REMOTES)}")
    mode = a.modes.split(",")[0] or "auto"
    out: dict[str, Any] = {"reference": f"in-process, mode {mode}", "remote": kinds}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        addresses = {}
        for listen in sorted({"tcp:127.0.0.1:0" if k == "tcp" else f"unix:{tmp}/bench.sock" for k in kinds}):
            addresses[listen.split(":")[0]] = stack.enter_context(_server(a, listen))

        async def in_process() -> Evaluator:  # the forward engine the server runs by default
            return Batcher(
                model, max_batch=a.max_batch, mode=mode, dtype=settings["dtype"], engine=CPU_ENGINE, sparse=CPU_SPARSE
            )

        async def batcher_stats(ev: Evaluator, reset: bool) -> dict[str, Any]:
            assert isinstance(ev, Batcher)
            s = ev.stats()
            if reset:
                ev.reset_stats()
            return s

        async def remote_stats(ev: Evaluator, reset: bool) -> dict[str, Any]:
            assert isinstance(ev, RemoteEvaluator)
            return await ev.stats(reset)

        ways: dict[str, Any] = {"in_process": (in_process, batcher_stats)}
        for k in kinds:

            async def connect(k: str = k) -> Evaluator:
                address = addresses["tcp" if k == "tcp" else "unix"]
                ring = k.startswith("shm")
                # a frame leaves at max_rows in any case: eager_rows = max_rows is no eager frame
                eager = a.max_rows if k == "shm-late" else EAGER_ROWS
                ev = await RemoteEvaluator.connect(address, max_rows=a.max_rows, shm=ring, eager_rows=eager)
                if ev.transport != ("shm" if ring else "socket"):
                    raise RuntimeError(f"asked for {k}, got {ev.transport}")
                return ev

            ways[k] = (connect, remote_stats)
        print(f"side by side: {', '.join(ways)} (server in a subprocess, {a.server_threads or a.threads} threads)")
        out["rows"] = run(side_by_side(ways, model, requesters=requesters, **settings))
        if wave_requesters:
            out["waves"] = run(side_by_side(ways, model, requesters=wave_requesters, wave=a.wave, **settings))
    return out


REMOTES = ("shm", "shm-late", "unix", "tcp")


@contextlib.contextmanager
def _server(a: argparse.Namespace, listen: str) -> Iterator[str]:
    """``python -m servers`` on ``listen`` in a subprocess (the same preset, seed and settings as
    the in-process batcher); yields its address."""
    cmd = [sys.executable, "-m", "servers", "--listen", listen, "--preset", a.preset, "--seed", "0"]
    cmd += ["--max-batch", str(a.max_batch)]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    if a.server_threads or a.threads:
        cmd += ["--threads", str(a.server_threads or a.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("serving on "):
            raise RuntimeError(f"the server did not start: {line!r}")
        yield line.split("serving on ", 1)[1].strip()
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
