"""Self-play on more than one core: the engine on this event loop plus engines in helper processes.

One asyncio process keeps one core busy: the search is Python and holds the GIL, and a forward
pass on a worker thread loses more to GIL hand-offs than it overlaps (bench/ measures both). So a
second core is used the way DESIGN.md's scale-out says: another process with its own engine and
its own batcher. ``SelfPlayPool(workers=N)`` splits a run's rounds and live games into
N shares: share 0 plays on the caller's event loop with the caller's evaluator, shares 1..N-1 in
helper processes started once (spawned, so no forked torch state) and reused for every run.

Every share plays the game ids ``w, w + N, w + 2N, ...`` with the engine's seeding (game ``i``
draws from ``default_rng([seed, i])``), so the split is deterministic and any game can be replayed
alone. A helper gets the weights as numpy arrays with each run, plays its share, and sends back
its examples (in the order it produced them), its stats and its batcher's batch counts; the
caller's sink receives this process's rounds as they finish, then each helper's in order.

The helpers also play arena matches (``match``), so a trainer's evaluation matches run side by
side on both cores: a match is described by ``SeatSpec``s (a bot by name, or a network's weights
with its search), played by ``blobnet.arena.play_match`` in the helper, and its ``MatchResult``
comes back.

Faults: a helper whose game raises sends back what it produced and the error, which is raised here
as ``EngineError`` after the examples reach the sink; when a game here raises, the helpers are told
to stop, finish the rounds they are playing and send back theirs, then the error is raised; a
helper that dies is reported; when the run is cancelled, the helpers are terminated at once (the
run's unfinished work is lost) and the next run starts fresh ones. Helpers ignore SIGINT: Ctrl-C
reaches the whole process group, and the caller decides what stops.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from blobnet.config import GameConfig, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.replay import Examples
from clients.selfplay import EngineError, EngineStats, FreeEvaluator, SelfPlayEngine, run_loop

__all__ = ["EvaluatorSpec", "SeatSpec", "SelfPlayPool", "arrays_of", "build_seat", "split"]

_PROGRESS_EVERY = 10  # a helper reports its rounds done this often


@dataclass(frozen=True, slots=True)
class EvaluatorSpec:
    """How a helper builds its own evaluator: ``kind`` "local" (a Batcher over ``preset`` with the
    run's weights), "remote" (``RemoteEvaluator`` to ``address``) or "free" (``FreeEvaluator``)."""

    kind: str = "local"
    preset: str = "small"
    dtype: str | None = None  # inference precision of a local batcher (None: float32)
    max_batch: int = 4096
    mode: str = "inline"
    device: str = "cpu"
    address: str = ""  # the server of a "remote" evaluator


@dataclass(frozen=True, slots=True)
class SeatSpec:
    """A player another process can build (``build_seat``): "heuristic" or "random" (a bot seeded
    with ``seed``), or "network": ``preset`` with ``weights`` searching with ``search`` at
    temperature 0 (``blobnet.player.NetworkPlayer`` seeded with ``seed``)."""

    kind: str
    seed: int = 0
    preset: str = "small"
    weights: dict[str, np.ndarray] | None = None
    search: SearchConfig | None = None
    device: str = "cpu"  # where a network's batcher runs


def _model(preset: str, weights: dict[str, np.ndarray] | None) -> Any:
    """A fresh ``preset`` network holding ``weights`` (sent as arrays by ``arrays_of``)."""
    import torch

    from blobnet.net import make_net

    model = make_net(preset)
    if weights is not None:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return model


def build_seat(spec: SeatSpec) -> Any:
    """The player ``spec`` describes."""
    from blobnet.bots import HeuristicBot, RandomBot

    if spec.kind == "heuristic":
        return HeuristicBot(seed=spec.seed)
    if spec.kind == "random":
        return RandomBot(seed=spec.seed)
    if spec.kind != "network":
        raise ValueError(f"seat kind {spec.kind!r}: use heuristic, random or network")
    from blobnet.player import NetworkPlayer

    return NetworkPlayer(_model(spec.preset, spec.weights), spec.search, seed=spec.seed, device=spec.device)


@dataclass(frozen=True, slots=True)
class _MatchJob:
    a: SeatSpec
    b: SeatSpec
    players: int
    cards: int
    rounds: int
    seed: int
    concurrency: int

    async def play(self, conn: Connection) -> tuple[Any, ...]:
        from blobnet.arena import play_match
        from blobnet.player import aclose_player

        seats = []
        try:
            seats = [build_seat(self.a), build_seat(self.b)]
            result = await play_match(*seats, players=self.players, cards=self.cards, rounds=self.rounds,
                                      seed=self.seed, concurrency=self.concurrency)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - reported to the caller
            return "done", None, f"{type(e).__name__}: {e}"
        finally:
            for seat in seats:
                await aclose_player(seat)
        return "done", result, None


@dataclass(frozen=True, slots=True)
class _Job:
    spec: EvaluatorSpec
    weights: dict[str, np.ndarray] | None
    search: SearchConfig
    game: GameConfig
    rounds: int
    concurrency: int
    seed: int
    first_game: int
    game_stride: int

    async def play(self, conn: Connection) -> tuple[Any, ...]:
        return await _play_share(self, conn)


def arrays_of(weights: dict[str, Any]) -> dict[str, np.ndarray]:
    """A state dict (tensors or arrays) as numpy arrays, to send to another process."""
    return {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in weights.items()}


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one, the larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


class SelfPlayPool:
    """``workers`` self-play engines: one on the caller's event loop, the rest in helper processes."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: at least 1 (this process)")
        self.workers = workers
        self._helpers: list[tuple[Any, Connection]] = []
        self.batches = 0  # batches and rows of the last run's batchers, every process together
        self.rows = 0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    async def run(
        self,
        evaluator: Evaluator,
        spec: EvaluatorSpec,
        weights: dict[str, Any] | None,
        *,
        search: SearchConfig,
        game: GameConfig,
        rounds: int,
        concurrency: int,
        seed: int,
        sink: Callable[[Examples], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> EngineStats:
        """Play ``rounds`` rounds with ``concurrency`` games live in all, this process taking the
        first share with ``evaluator``; helpers build theirs from ``spec`` and ``weights``
        (a state dict, tensors or arrays). Returns the stats of all shares, ``seconds`` being
        the wall time of the whole run."""
        if rounds < 1:
            raise ValueError(f"rounds={rounds}: play at least 1 round")
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency}: at least 1 game must be live")
        n = min(self.workers, concurrency, rounds)
        shares = list(zip(split(rounds, n), split(concurrency, n), strict=True))
        arrays = None if weights is None else arrays_of(weights)
        await self._start(n - 1)
        jobs = [
            _Job(spec, arrays, search, game, r, c, seed, first_game=w, game_stride=n) for w, (r, c) in enumerate(shares)
        ]
        for (_, conn), job in zip(self._helpers, jobs[1:]):
            conn.send(job)
        done = [0] * n
        loop = asyncio.get_running_loop()

        def progress(w: int, rounds_done: int) -> None:
            done[w] = rounds_done
            if on_progress is not None:
                on_progress(sum(done))

        engine = SelfPlayEngine(
            evaluator,
            search=search,
            game=game,
            concurrency=shares[0][1],
            seed=seed,
            first_game=0,
            game_stride=n,
            sink=sink,
            on_progress=lambda st: progress(0, st.rounds),
        )
        batches0, rows0 = _batch_counts(evaluator)
        t0 = time.perf_counter()

        def relay(w: int) -> Callable[[int], None]:
            def on_thread(k: int) -> None:
                loop.call_soon_threadsafe(progress, w, k)

            return on_thread

        waits = [
            loop.run_in_executor(None, _receive, conn, relay(w))
            for w, (_, conn) in enumerate(self._helpers[: n - 1], start=1)
        ]
        try:
            stats = await engine.run(shares[0][0])
        except EngineError:
            # A game here failed: the helpers finish the rounds they are playing and send back what
            # they produced, so no example already made is lost; then the error goes on.
            for _, conn in self._helpers[: n - 1]:
                conn.send("stop")
            for examples, *_ in await self._replies(waits):
                if examples is not None and len(examples) and sink is not None:
                    sink(examples)
            raise
        except BaseException:
            self.close(now=True)  # cancelled: end the helpers at once; the next run starts new ones
            raise
        replies = await self._replies(waits)
        batches, rows = _batch_counts(evaluator)
        self.batches, self.rows = batches - batches0, rows - rows0
        errors = []
        for w, (examples, helper_stats, helper_batches, helper_rows, error) in enumerate(replies, start=1):
            if examples is not None and len(examples) and sink is not None:
                sink(examples)
            if helper_stats is not None:
                stats = _merged(stats, helper_stats)
            self.batches += helper_batches
            self.rows += helper_rows
            if error is not None:
                errors.append(f"helper {w}: {error}")
        stats.seconds = time.perf_counter() - t0
        if errors:
            raise EngineError("; ".join(errors))
        return stats

    async def match(
        self, a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int
    ) -> Any:
        """``blobnet.arena.play_match`` of ``a`` against ``b`` in a helper process (in this one when
        the pool has a single worker); returns its ``MatchResult``."""
        job = _MatchJob(a, b, players, cards, rounds, seed, concurrency)
        if self.workers < 2:
            _, result, error = await job.play(None)  # type: ignore[arg-type]
        else:
            await self._start(1)
            conn = self._helpers[0][1]
            conn.send(job)
            loop = asyncio.get_running_loop()
            ((result, error),) = await self._replies([loop.run_in_executor(None, _receive, conn, _ignore)])
        if error is not None:
            raise RuntimeError(f"the arena match in a helper process failed: {error}")
        return result

    async def _replies(self, waits: list[asyncio.Future[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        try:
            return await asyncio.gather(*waits)
        except BaseException:
            self.close(now=True)
            raise

    async def _start(self, count: int) -> None:
        """Have ``count`` helpers running and ready (their imports done, so a run's clock starts
        with every process able to play)."""
        self._helpers = [(p, c) for p, c in self._helpers if p.is_alive()]
        ctx = mp.get_context("spawn")
        new = []
        while len(self._helpers) < count:
            parent, child = ctx.Pipe()
            name = f"selfplay-helper-{len(self._helpers) + 1}"
            proc = ctx.Process(target=_helper_main, args=(child,), daemon=True, name=name)
            proc.start()
            child.close()
            self._helpers.append((proc, parent))
            new.append((proc, parent))
        loop = asyncio.get_running_loop()
        for proc, conn in new:
            try:
                await loop.run_in_executor(None, conn.recv)
            except (EOFError, OSError):
                self.close(now=True)
                raise EngineError(f"{proc.name} did not start (exit code {proc.exitcode})") from None

    def close(self, *, now: bool = False) -> None:
        """End the helper processes: idle ones are asked to stop, busy ones (or all, ``now``) are
        terminated, and a share in progress on them is lost."""
        for proc, conn in self._helpers:
            if not now:
                try:
                    conn.send(None)
                except OSError:
                    pass
                proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
            proc.join()
            conn.close()
        self._helpers = []


def _batch_counts(evaluator: Any) -> tuple[int, int]:
    """Batches and rows of an in-process batcher so far; (0, 0) for other evaluators."""
    from servers import Batcher

    if not isinstance(evaluator, Batcher):
        return 0, 0
    st = evaluator.stats()
    return int(st["batches"]), int(st["rows"])


def _merged(a: EngineStats, b: EngineStats) -> EngineStats:
    out = EngineStats()
    for f in fields(EngineStats):
        if f.name in ("seconds", "stage_seconds"):
            continue
        setattr(out, f.name, getattr(a, f.name) + getattr(b, f.name))
    out.seconds = max(a.seconds, b.seconds)
    return out


def _ignore(_: int) -> None:
    pass


def _receive(conn: Connection, on_progress: Callable[[int], None]) -> tuple[Any, ...]:
    """On an executor thread: a helper's progress messages, then its reply."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            raise EngineError("a helper process died during its job") from None
        if msg[0] == "progress":
            on_progress(msg[1])
        else:
            return tuple(msg[1:])


def _helper_main(conn: Connection) -> None:
    """A helper process: play each job it is sent, reply with what it produced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import servers  # noqa: F401 - torch and the batcher imported before "ready"

    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        if job == "stop":  # meant for a share that had already finished
            continue
        conn.send(run_loop(job.play(conn)))


async def _play_share(job: _Job, conn: Connection) -> tuple[Any, ...]:
    parent = os.getppid()
    parts: list[Examples] = []
    try:
        evaluator = await _evaluator(job)
    except Exception as e:  # noqa: BLE001 - a server that cannot be reached, weights that do not fit
        return "done", None, None, 0, 0, f"no evaluator: {type(e).__name__}: {e}"

    def progress(stats: EngineStats) -> None:
        if os.getppid() != parent:  # the caller was killed: nobody is left to play for
            raise SystemExit(1)
        if conn.poll():  # "stop": the caller's own share failed
            conn.recv()
            engine.stop()
        if stats.rounds % _PROGRESS_EVERY == 0:
            conn.send(("progress", stats.rounds))

    engine = SelfPlayEngine(
        evaluator,
        search=job.search,
        game=job.game,
        concurrency=job.concurrency,
        seed=job.seed,
        first_game=job.first_game,
        game_stride=job.game_stride,
        sink=parts.append,
        on_progress=progress,
    )
    error = None
    try:
        await engine.run(job.rounds)
    except Exception as e:  # noqa: BLE001 - reported to the caller with what was produced
        error = f"{type(e).__name__}: {e}"
    finally:
        batches, rows = _batch_counts(evaluator)
        await evaluator.aclose()
    examples = Examples.concat(parts) if parts else None
    return "done", examples, engine.stats, batches, rows, error


async def _evaluator(job: _Job) -> Evaluator:
    spec = job.spec
    if spec.kind == "free":
        return FreeEvaluator()
    if spec.kind == "remote":
        from clients.remote import RemoteEvaluator

        return await RemoteEvaluator.connect(spec.address)
    from servers import Batcher

    model = _model(spec.preset, job.weights)
    return Batcher(model, max_batch=spec.max_batch, mode=spec.mode, dtype=spec.dtype, device=spec.device)
