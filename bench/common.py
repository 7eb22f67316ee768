"""What every benchmark here shares: evaluators that are not the batcher, the adapter to the search's
protocol, rates from counter samples, and the monitor of CPU, memory and GPU.

- ``forward_rows``: one forward pass over k rows, answered as the search's ``Evaluator`` protocol asks
  (priors flat over each row's legal ids, values k lists of 8); the unbatched strategies and the
  predecessor's thread batcher all run the network through it, as ``servers.batcher`` does.
- ``Adapted``: any evaluator (``Batcher``, ``RemoteEvaluator``, ``FreeEvaluator``, the ones here)
  timing every request while ``latency.active``.
- ``rate``: a counter's rate by least squares over timestamped samples. Under thousands of games the
  counters move in bursts (every game backs up after the same batch), so the difference of the two ends
  of a window would swing by a whole burst; the slope over every sample does not.
- ``ThreadBatcher`` and ``SyncPlayer``: the predecessor's thread mode, games played synchronously in
  OS threads around a lock-guarded batcher with a timeout (bench/strategies.py: "threads").
- ``Monitor``: a thread sampling the resident memory of this process and its children (and the GPU
  through pynvml when there is one); CPU seconds of the same tree between two marks.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

from blobnet.rules import TRUMP_CYCLE, Round
from blobnet.search import Search, choose_action

__all__ = [
    "RESULTS",
    "TORCH_ENV",
    "child_env",
    "Adapted",
    "SyncPlayer",
    "ThreadBatcher",
    "DirectEvaluator",
    "Gpu",
    "LatencyLog",
    "Monitor",
    "batch_spread",
    "drive",
    "forward_rows",
    "git_commit",
    "percentiles_ms",
    "rate",
    "raw_forward_rate",
    "stamp",
]

RESULTS = Path(__file__).resolve().parent / "results"
# The torch settings of every process the benchmarks start, as ``blobnet`` sets them for itself
# (blobnet/cli.py): one torch thread, and OpenMP threads that sleep rather than spin while waiting.
# Two spinning threads turn a 7 ms forward pass into 200 ms as soon as anything else wants the second
# core. What the caller's environment already says wins.
TORCH_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def child_env() -> dict[str, str]:
    """The environment for a benchmark's child process: TORCH_ENV unless the caller's says otherwise."""
    return {**TORCH_ENV, **os.environ}
Priors = tuple[list[float], list[list[float]]]


def stamp() -> str:
    """Local date and time for a results folder name: 2025-01-31_14-05-09."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def git_commit() -> str:
    """Short commit of the working tree ("+dirty" when it has changes), or "unknown" outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ---- the network without the batcher -----------------------------------------------------------


def forward_rows(model: nn.Module, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
    """One forward pass of ``model`` over the k = len(legal) first rows of ``features`` (k, width)
    float32. Returns the protocol's answer: priors over each row's legal ids, flat in row order, and
    k lists of n_values floats. The same steps as ``servers.batcher``'s CPU path: a legal mask,
    the model, a softmax, the legal ids picked out, one ``tolist`` each."""
    k = len(legal)
    lens = [len(ids) for ids in legal]
    rows = np.repeat(np.arange(k), lens)
    cols = np.fromiter(itertools.chain.from_iterable(legal), np.intp, sum(lens))
    mask = np.zeros((k, int(getattr(model, "n_actions", 70))), dtype=np.bool_)
    mask[rows, cols] = True
    x = torch.from_numpy(np.ascontiguousarray(features[:k], dtype=np.float32))
    with torch.inference_mode():
        logits, values = model(x, torch.from_numpy(mask))
        probs = torch.softmax(logits.float(), dim=1).numpy()
        vals = values.float().numpy()
    return probs[rows, cols].tolist(), vals.tolist()


def raw_forward_rate(model: nn.Module, batch: int, seconds: float, *, seed: int = 0) -> float:
    """Evaluations per second of the forward pass alone (``model(x, legal)`` and the softmax) on a
    ready batch of ``batch`` rows: the inference-only ceiling at that batch size. Rows are about as
    sparse as ``blobnet.encode``'s; legal masks hold 2 to 13 ids."""
    rng = np.random.default_rng(seed)
    width = int(model.width)  # type: ignore[arg-type]
    n_actions = int(getattr(model, "n_actions", 70))
    x = torch.from_numpy((rng.random((batch, width)) < 0.05).astype(np.float32))
    mask = torch.zeros((batch, n_actions), dtype=torch.bool)
    for i in range(batch):
        mask[i, rng.choice(52, size=int(rng.integers(2, 14)), replace=False)] = True
    with torch.inference_mode():
        for _ in range(2):
            torch.softmax(model(x, mask)[0], dim=1)
        reps = 0
        t0 = time.perf_counter()
        while True:
            torch.softmax(model(x, mask)[0], dim=1)
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and reps >= 3:
                return reps * batch / dt


class DirectEvaluator:
    """No batching: every row is its own forward pass of batch one, run the moment it is asked for.

    ``yield_each``: give the event loop one turn per request (``asyncio.sleep(0)``), so that the
    other games of an asyncio engine interleave; without it a request never suspends and one game
    would run to its end before any other starts. Keep it False when the search is driven without a
    loop (``drive``)."""

    def __init__(self, model: nn.Module, *, yield_each: bool = True) -> None:
        self.model = model
        self.yield_each = yield_each
        self.rows = 0

    def run_rows(self, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
        priors: list[float] = []
        values: list[list[float]] = []
        for i, ids in enumerate(legal):
            p, v = forward_rows(self.model, features[i : i + 1], [ids])
            priors += p
            values += v
        self.rows += len(legal)
        return priors, values

    async def evaluate_many(self, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
        out = self.run_rows(features, legal)
        if self.yield_each:
            await asyncio.sleep(0)
        return out

    def stats(self) -> dict[str, Any]:
        return {"mean_batch": 1.0, "p10_batch": 1, "p50_batch": 1, "p90_batch": 1}

    def reset_stats(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (a search over a blocking evaluator) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the coroutine suspended: an evaluator driven without a loop must not await anything")


# ---- the protocol, and request latency ------------------------------------------------------------


class LatencyLog:
    """Seconds per request, recorded only while ``active`` (the measurement window)."""

    def __init__(self) -> None:
        self.active = False
        self.seconds: list[float] = []

    def start(self) -> None:
        self.seconds = []
        self.active = True

    def stop(self) -> list[float]:
        self.active = False
        return self.seconds


class Adapted:
    """``inner`` (a ``blobnet.evaluator.Evaluator``), timing every request into ``latency`` while active."""

    def __init__(self, inner: Any, latency: LatencyLog | None = None) -> None:
        self.inner = inner
        self.latency = latency or LatencyLog()

    async def evaluate_many(self, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
        t0 = time.perf_counter()
        out: Priors = await self.inner.evaluate_many(features, legal)
        if self.latency.active:
            self.latency.seconds.append(time.perf_counter() - t0)
        return out

    def stats(self) -> dict[str, Any]:
        fn = getattr(self.inner, "stats", None)
        return dict(fn()) if callable(fn) and not asyncio.iscoroutinefunction(fn) else {}

    def reset_stats(self) -> None:
        fn = getattr(self.inner, "reset_stats", None)
        if callable(fn):
            fn()

    async def aclose(self) -> None:
        await self.inner.aclose()


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds; NaN for no samples."""
    if not seconds:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(seconds, dtype=np.float64), [50, 99])
    return 1e3 * float(p50), 1e3 * float(p99)


def batch_spread(stats: dict[str, Any]) -> tuple[float, float, float, float]:
    """(mean, p10, p50, p90) batch size from a ``Batcher.stats()`` dict. The batcher gives p50 and p90
    exactly; p10 comes exactly when it gives ``p10_batch``, else from its power-of-two histogram (the
    lower edge of the bucket holding the 10th percentile)."""
    mean = float(stats.get("mean_batch", math.nan))
    p50 = float(stats.get("p50_batch", math.nan))
    p90 = float(stats.get("p90_batch", math.nan))
    if "p10_batch" in stats:
        return mean, float(stats["p10_batch"]), p50, p90
    hist: dict[str, int] = stats.get("histogram") or {}
    total = sum(hist.values())
    p10 = math.nan
    seen = 0
    for bucket, count in hist.items():
        seen += count
        if count and seen >= 0.1 * total:
            p10 = float(bucket.split("-")[0])
            break
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


# ---- the predecessor's thread mode ----------------------------------------------------------------


class _TBatch:
    __slots__ = ("rows", "legal", "n", "requests", "flat_len", "running", "done", "priors", "values", "error")

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.legal: list[Sequence[int]] = []
        self.n = 0
        self.requests = 0
        self.flat_len = 0
        self.running = False
        self.done = False
        self.priors: list[float] = []
        self.values: list[list[float]] = []
        self.error: BaseException | None = None


class ThreadBatcher:
    """A lock-guarded batcher for games running synchronously in threads (the predecessor's design).

    A request adds its rows to the open batch under the lock. When ``fill`` requests are in, or when
    the first waiter's ``timeout`` (seconds) expires, one requester takes the batch, runs the forward
    pass outside the lock and wakes every waiter with ``notify_all``. ``evaluate_many`` is a coroutine
    only in name: it blocks and never suspends, so each thread drives its search with
    ``bench.common.drive``."""

    def __init__(self, model: nn.Module, *, fill: int, timeout: float) -> None:
        if fill < 1 or timeout <= 0:
            raise ValueError(f"fill={fill}, timeout={timeout}: fill >= 1 and timeout > 0")
        self.model = model
        self.fill = fill
        self.timeout = timeout
        self.latency = LatencyLog()
        self.sizes: list[int] = []  # batch sizes while latency.active
        self._cond = threading.Condition()
        self._open = _TBatch()

    async def evaluate_many(
        self, features: np.ndarray, legal: Sequence[Sequence[int]]
    ) -> tuple[list[float], list[list[float]]]:
        return self.evaluate_sync(features, legal)

    def evaluate_sync(
        self, features: np.ndarray, legal: Sequence[Sequence[int]]
    ) -> tuple[list[float], list[list[float]]]:
        t0 = time.perf_counter()
        k = len(legal)
        nl = sum(len(ids) for ids in legal)
        cond = self._cond
        with cond:
            b = self._open
            start, off = b.n, b.flat_len
            b.rows.append(np.array(features[:k], dtype=np.float32))
            b.legal.extend(legal)
            b.n += k
            b.flat_len += nl
            b.requests += 1
            run = b.requests >= self.fill
            if not run:
                deadline = t0 + self.timeout
                while not (b.done or b.running):
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        run = True  # timed out and nobody has taken the batch: take it
                        break
                    cond.wait(left)
            if run:
                b.running = True
                if self._open is b:
                    self._open = _TBatch()
        if run:
            try:
                priors, values = forward_rows(self.model, np.concatenate(b.rows), b.legal)
            except BaseException as e:  # noqa: BLE001 - every waiter of the batch sees it
                b.error = e
                priors, values = [], []
            with cond:
                b.priors, b.values, b.done = priors, values, True
                if self.latency.active:
                    self.sizes.append(b.n)
                cond.notify_all()
        else:
            with cond:
                while not b.done:
                    cond.wait()
        if b.error is not None:
            raise RuntimeError(f"the forward pass failed: {b.error!r}") from b.error
        out = b.priors[off : off + nl], b.values[start : start + k]
        if self.latency.active:
            self.latency.seconds.append(time.perf_counter() - t0)
        return out

    async def aclose(self) -> None:
        return None


class SyncPlayer:
    """Plays independent rounds one after another without an event loop, as the engine's
    ``_play_round`` does (searched decisions with root noise, visit-count moves at the search's
    temperature, the round's features stacked at its end). The evaluator must never suspend."""

    def __init__(self, search: Search, rng: np.random.Generator, *, players: int, cards: int) -> None:
        self.search = search
        self.rng = rng
        self.players = players
        self.cards = cards
        self.decisions = 0  # searched
        self.rounds = 0

    def play_round(self, stop: Callable[[], bool], on_decision: Callable[[], None] | None = None) -> None:
        rng = self.rng
        p = self.players
        r = Round.deal(
            players=p, cards=self.cards, trump=TRUMP_CYCLE[int(rng.integers(5))], dealer=int(rng.integers(p)), rng=rng
        )
        temperature = self.search.config.temperature
        feats = []
        while r.to_play is not None:
            if stop():
                return
            legal = r.legal()
            if len(legal) == 1:
                r.apply(legal[0])
                continue
            result = drive(self.search.run(r.view(r.to_play), rng, noise=True))
            feats.append(result.features)
            self.decisions += 1
            r.apply(choose_action(result, temperature, rng))
            if on_decision is not None:
                on_decision()
        r.scores()
        if feats:
            np.stack(feats)
        self.rounds += 1


# ---- CPU, memory, GPU ------------------------------------------------------------------------------


class Gpu:
    """The first GPU through pynvml (nvidia-ml-py). ``Gpu.probe()`` -> (Gpu or None, why not)."""

    def __init__(self, nvml: Any, handle: Any, name: str) -> None:
        self.nvml = nvml
        self.handle = handle
        self.name = name

    @staticmethod
    def probe() -> tuple[Gpu | None, str]:
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() < 1:
                return None, "no GPU (NVML sees no device)"
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or 0)
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            return Gpu(pynvml, handle, name.decode() if isinstance(name, bytes) else str(name)), ""
        except Exception as e:  # noqa: BLE001 - NVMLError and friends: no GPU here, say why
            return None, f"no GPU ({type(e).__name__}: {e})"

    def utilization(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def memory_mb(self) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) / 2**20


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its living descendants."""
    total = 0.0
    for p in _tree():
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (anyone's processes)."""
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0)


def tree_rss_mb() -> float:
    total = 0
    for p in _tree():
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class Monitor:
    """Samples the peak resident memory of this process tree (and GPU utilisation and memory) every
    ``interval`` seconds in a daemon thread; ``mark_start``/``mark_end`` bracket the window whose CPU
    use is reported. The thread wakes 10 times a second and holds the GIL for microseconds."""

    def __init__(self, gpu: Gpu | None = None, interval: float = 0.1) -> None:
        self.gpu = gpu
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.gpu_util: list[float] = []
        self.gpu_mem_peak_mb = math.nan
        self._in_window = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._cpu0 = self._t0 = self._busy0 = 0.0
        self.cpu_seconds = math.nan
        self.machine_seconds = math.nan
        self.wall = math.nan

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb())
            if self.gpu is not None and self._in_window:
                try:
                    self.gpu_util.append(self.gpu.utilization())
                    mem = self.gpu.memory_mb()
                    self.gpu_mem_peak_mb = mem if math.isnan(self.gpu_mem_peak_mb) else max(self.gpu_mem_peak_mb, mem)
                except Exception:  # noqa: BLE001 - a failed reading is a missing sample, not a failed run
                    pass
            self._stop.wait(self.interval)

    def mark_start(self) -> None:
        self._busy0 = machine_busy_seconds()
        self._cpu0 = tree_cpu_seconds()
        self._t0 = time.perf_counter()
        self._in_window = True

    def mark_end(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu_seconds = tree_cpu_seconds() - self._cpu0
        self.machine_seconds = machine_busy_seconds() - self._busy0
        self._in_window = False

    def report(self) -> dict[str, float]:
        """cpu_cores: cores this process tree kept busy on average over the window; cpu_percent: the
        same as a share of the machine; other_cores: cores kept busy meanwhile by anything else
        (other people's jobs on a shared machine make every rate here lower)."""
        ok = self.wall and self.wall > 0
        cores = self.cpu_seconds / self.wall if ok else math.nan
        machine = self.machine_seconds / self.wall if ok else math.nan
        return {
            "cpu_cores": cores,
            "other_cores": max(0.0, machine - cores),
            "cpu_percent": 100.0 * cores / (os.cpu_count() or 1),
            "peak_rss_mb": max(self.peak_rss_mb, tree_rss_mb()),
            "gpu_util": float(np.mean(self.gpu_util)) if self.gpu_util else math.nan,
            "gpu_mem_mb": self.gpu_mem_peak_mb,
        }
