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

The helpers also play arena matches: ``match`` plays one in a helper, so a trainer's evaluation
matches run side by side on both cores; ``split_match`` splits one match's deals over every
worker (deal ``w, w + N, ...`` on worker ``w``) and merges the shares' tallies, so its interval and
Elo are those of the whole match (``MatchTally.merge`` is exact). A match is described by seat
specs (``clients.players``: a bot by name, or a network's weights with its search), played by
``clients.match.play_deals``, and its tally comes back.

``EnginePool`` is what the trainer asks of its engines; ``clients.raypool.RayPool`` offers the
same over Ray actors, and reuses this module's jobs and replies.

What crosses the pipe is typed: the jobs and replies below are tagged msgspec structs, matched
by type on arrival.

Faults: a helper whose game raises sends back what it produced and the error, which is raised here
as ``EngineError`` after the examples reach the sink; when a game here raises, the helpers are told
to stop, finish the rounds they are playing and send back theirs, then the error is raised; a
helper that dies is reported; when the run is cancelled, the helpers are terminated at once (the
run's unfinished work is lost) and the next run starts fresh ones. Helpers ignore SIGINT (Ctrl-C
reaches the whole process group, and the caller decides what stops) and end as soon as their
parent does, however it ended.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import msgspec
import numpy as np

from blobnet.aio import run_loop
from blobnet.config import CPU_ENGINE, CPU_SPARSE, GameConfig, SearchConfig
from blobnet.evaluator import Evaluator, FreeEvaluator
from blobnet.player import aclose_player
from blobnet.ratings import MatchResult, MatchTally
from blobnet.replay import Examples
from clients.match import play_deals
from clients.players import SeatSpec, arrays_of, build_seat, model_with
from clients.remote import RING_ROWS, RemoteEvaluator
from clients.selfplay import EngineError, EngineStats, SelfPlayEngine, check_opponents
from servers import Batcher

__all__ = [
    "BatcherSpec", "RemoteSpec", "FreeSpec", "EvaluatorSpec", "Counts", "EnginePool", "SelfPlayPool", "ShareJob",
    "ShareDone", "MatchJob", "MatchDone", "batch_counts", "build_evaluator", "merge_match", "play_match_job",
    "play_share", "split", "check_run", "match_shares",
]  # fmt: skip

_REPORT_SECONDS = 0.1  # a helper reports its counts this often while it plays


# -- how a helper builds its evaluator ------------------------------------------------------------
class BatcherSpec(msgspec.Struct, tag="batcher", frozen=True, kw_only=True):
    """A ``servers.Batcher`` over network ``preset`` holding the run's weights."""

    preset: str = "small"
    dtype: str | None = None  # inference precision (None: float32)
    max_batch: int = 4096
    mode: str = "inline"
    device: str = "cpu"
    engine: str = CPU_ENGINE  # the CPU forward engine (blobnet.net.ENGINES)
    sparse: bool = CPU_SPARSE  # its first layer over the rows' nonzero entries


class RemoteSpec(msgspec.Struct, tag="remote", frozen=True):
    """A ``clients.remote.RemoteEvaluator`` connected to the server at ``address``; over a unix:PATH
    address its rows travel through a shared-memory ring of ``ring_rows`` slots."""

    address: str
    ring_rows: int = RING_ROWS


class FreeSpec(msgspec.Struct, tag="free", frozen=True):
    """A ``FreeEvaluator``: the search alone."""


EvaluatorSpec = BatcherSpec | RemoteSpec | FreeSpec


# -- what crosses the pipe --------------------------------------------------------------------------
class ShareJob(msgspec.Struct, tag="share", frozen=True, kw_only=True):
    """Play a share of a self-play run: ``rounds`` rounds of the game ids ``first_game, first_game +
    game_stride, ...``."""

    spec: EvaluatorSpec
    weights: dict[str, np.ndarray] | None
    search: SearchConfig
    game: GameConfig
    rounds: int
    concurrency: int
    seed: int
    first_game: int
    game_stride: int
    opponents: tuple[str, ...] = ()  # bot specs, a seat each at every table (clients.selfplay)
    # whether the reply carries the share's examples: a run without a sink wants none, and
    # shipping them (3 KB a row) back to a process still playing slows it
    examples: bool = True


class MatchJob(msgspec.Struct, tag="match", frozen=True, kw_only=True):
    """Play an arena match, or the share of it made of deals ``first_deal, first_deal + deal_stride, ...``."""

    a: SeatSpec
    b: SeatSpec
    players: int
    cards: int
    rounds: int
    seed: int
    concurrency: int
    first_deal: int = 0
    deal_stride: int = 1


class _Stop(msgspec.Struct, tag="stop", frozen=True):
    """Finish the rounds in progress and reply (the caller's own share failed)."""


class _Quit(msgspec.Struct, tag="quit", frozen=True):
    """End the helper process."""


class _Ready(msgspec.Struct, tag="ready", frozen=True):
    """The helper's imports are done."""


class Counts(msgspec.Struct, frozen=True):
    """What engines have done in a run so far: live counters, for progress and measurement."""

    rounds: int = 0
    searched_decisions: int = 0
    simulations: int = 0
    evaluations: int = 0
    batches: int = 0  # of the engines' own batchers (0 for other evaluators)
    rows: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(msgspec.structs.astuple(self), msgspec.structs.astuple(other))))


class _Progress(msgspec.Struct, tag="progress", frozen=True):
    counts: Counts  # this helper's share so far


class ShareDone(msgspec.Struct, tag="share_done", frozen=True, kw_only=True):
    examples: Examples | None  # in the order produced; None when none were
    stats: EngineStats | None  # None when no evaluator could be made
    batches: int  # of the helper's batcher (0 for other evaluators)
    rows: int
    error: str | None  # set when the share failed (what it produced is still here)


class MatchDone(msgspec.Struct, tag="match_done", frozen=True):
    tally: MatchTally | None  # of the whole match's deals, holding the job's share
    error: str | None


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one, the larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def check_run(rounds: int, concurrency: int) -> None:
    """ValueError unless a self-play run has a round to play and a game to keep live."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: play at least 1 round")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: at least 1 game must be live")


def match_shares(
    a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int, workers: int
) -> list[MatchJob]:
    """A match split over at most ``workers``: share ``w`` of ``N`` plays deals ``w, w + N, ...``
    with its part of the ``concurrency`` tables."""
    if rounds < 1 or concurrency < 1:
        raise ValueError(f"rounds={rounds}, concurrency={concurrency}: at least 1 round and 1 table")
    n = min(workers, (rounds + 1) // 2, concurrency)
    return [
        MatchJob(a=a, b=b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=c, first_deal=w,
                 deal_stride=n)
        for w, c in enumerate(split(concurrency, n))
    ]  # fmt: skip


class EnginePool(Protocol):
    """The engines a trainer plays with, whichever backend runs them: ``SelfPlayPool`` (this
    process and helpers) or ``clients.raypool.RayPool`` (Ray actors). The arguments are the
    ``SelfPlayPool`` methods'."""

    workers: int

    @property
    def mean_batch(self) -> float: ...

    async def run(
        self, evaluator: Evaluator, spec: EvaluatorSpec, weights: dict[str, Any] | None, *, search: SearchConfig,
        game: GameConfig, rounds: int, concurrency: int, seed: int, sink: Callable[[Examples], None] | None = None,
        on_progress: Callable[[int], None] | None = None, opponents: tuple[str, ...] = (),
    ) -> EngineStats: ...  # fmt: skip

    async def match(
        self, a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int
    ) -> MatchResult: ...

    async def split_match(
        self, a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int,
        on_round: Callable[[int, int], None] | None = None,
    ) -> MatchResult: ...  # fmt: skip

    def close(self, *, now: bool = False) -> None: ...


class SelfPlayPool:
    """``workers`` self-play engines: one on the caller's event loop, the rest in helper processes."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: at least 1 (this process)")
        self.workers = workers
        self._helpers: list[tuple[Any, Connection]] = []
        self.batches = 0  # batches and rows of the last run's batchers, every process together
        self.rows = 0
        self._helper_counts: list[Counts] = []  # the run in progress: each helper's last report
        self._local: Callable[[], Counts] = Counts  # the run in progress: this process's share, live

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
        opponents: tuple[str, ...] = (),
    ) -> EngineStats:
        """Play ``rounds`` rounds with ``concurrency`` games live in all, this process taking the
        first share with ``evaluator``; helpers build theirs from ``spec`` and ``weights``
        (a state dict, tensors or arrays); ``opponents``: bot specs that take a seat each at every
        table (``clients.selfplay``). Returns the stats of all shares, ``seconds`` being the longest
        share's playing time (``SelfPlayEngine.run``'s: a process's set-up, its evaluator built,
        the collector's pass and the kernels' first load, is left out, and so is the return of the
        helpers' examples)."""
        check_run(rounds, concurrency)
        check_opponents(opponents, game)
        n = min(self.workers, concurrency, rounds)
        shares = list(zip(split(rounds, n), split(concurrency, n), strict=True))
        arrays = None if weights is None else arrays_of(weights)
        await self._start(n - 1)
        jobs = [
            ShareJob(spec=spec, weights=arrays, search=search, game=game, rounds=r, concurrency=c, seed=seed,
                   first_game=w, game_stride=n, opponents=opponents, examples=sink is not None)
            for w, (r, c) in enumerate(shares)
        ]  # fmt: skip
        for (_, conn), job in zip(self._helpers, jobs[1:]):
            conn.send(job)
        self._helper_counts = [Counts()] * (n - 1)
        loop = asyncio.get_running_loop()

        def progress() -> None:
            if on_progress is not None:
                on_progress(self.counts().rounds)

        def helper_progress(w: int, counts: Counts) -> None:
            rounds_before = self._helper_counts[w - 1].rounds
            self._helper_counts[w - 1] = counts
            if counts.rounds != rounds_before:
                progress()

        batches0, rows0 = batch_counts(evaluator)
        engine = SelfPlayEngine(
            evaluator,
            search=search,
            game=game,
            concurrency=shares[0][1],
            seed=seed,
            first_game=0,
            game_stride=n,
            sink=sink,
            on_progress=lambda _: progress(),
            opponents=opponents,
        )
        self._local = lambda: _counts(engine, evaluator, batches0, rows0)

        def relay(w: int) -> Callable[[Counts], None]:
            def on_thread(counts: Counts) -> None:
                loop.call_soon_threadsafe(helper_progress, w, counts)

            return on_thread

        def helper_done(reply: asyncio.Future[Any]) -> None:
            if _failed(reply):
                engine.stop()  # a helper failed: end this share with its rounds in progress, the run with the error

        waits = [
            loop.run_in_executor(None, _receive, conn, relay(w))
            for w, (_, conn) in enumerate(self._helpers[: n - 1], start=1)
        ]
        for wait_reply in waits:
            wait_reply.add_done_callback(helper_done)
        try:
            stats = await engine.run(shares[0][0])
        except EngineError:
            # A game here failed: the helpers finish the rounds they are playing and send back what
            # they produced, so no example already made is lost; then the error goes on.
            for _, conn in self._helpers[: n - 1]:
                conn.send(_Stop())
            for reply in await self._replies(waits):
                if isinstance(reply, ShareDone) and reply.examples is not None and sink is not None:
                    sink(reply.examples)
            raise
        except BaseException:
            for wait_reply in waits:  # nobody will read these replies: no "exception never retrieved"
                wait_reply.cancel()
            self.close(now=True)  # cancelled: end the helpers at once; the next run starts new ones
            raise
        replies = await self._replies(waits)
        batches, rows = batch_counts(evaluator)
        self.batches, self.rows = batches - batches0, rows - rows0
        errors = []
        for w, reply in enumerate(replies, start=1):
            assert isinstance(reply, ShareDone), reply
            if reply.examples is not None and sink is not None:
                sink(reply.examples)
            if reply.stats is not None:
                stats = stats.merged(reply.stats)
                st = reply.stats
                self._helper_counts[w - 1] = Counts(st.rounds, st.searched_decisions, st.simulations, st.evaluations,
                                                    reply.batches, reply.rows)  # fmt: skip
            self.batches += reply.batches
            self.rows += reply.rows
            if reply.error is not None:
                errors.append(f"helper {w}: {reply.error}")
        progress()  # the helpers' last rounds, reported with their replies
        if errors:
            raise EngineError("; ".join(errors))
        return stats

    def counts(self) -> Counts:
        """The counts of the run in progress (or the last run) so far, every process together; a
        helper's are as of its last report (every 0.1 s)."""
        return sum(self._helper_counts, self._local())

    async def match(
        self, a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int
    ) -> MatchResult:
        """``clients.match.play_match`` of ``a`` against ``b`` in a helper process (in this one when
        the pool has a single worker); returns its ``MatchResult``."""
        job = MatchJob(a=a, b=b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=concurrency)
        t0 = time.perf_counter()
        if self.workers < 2:
            reply = await play_match_job(job)
        else:
            await self._start(1)
            conn = self._helpers[0][1]
            conn.send(job)
            loop = asyncio.get_running_loop()
            (reply,) = await self._replies([loop.run_in_executor(None, _receive, conn, _ignore)])
        return merge_match([reply], time.perf_counter() - t0)

    async def split_match(
        self,
        a: SeatSpec,
        b: SeatSpec,
        *,
        players: int,
        cards: int,
        rounds: int,
        seed: int,
        concurrency: int,
        on_round: Callable[[int, int], None] | None = None,
    ) -> MatchResult:
        """The match ``match`` plays, its deals split over every worker (this process plays deals
        ``0, N, 2N, ...``, helper ``w`` deals ``w, w + N, ...``) and ``concurrency`` tables split
        with them; the shares' tallies merged, so the result is the whole match's.
        ``on_round(done, total)`` counts this process's share. A helper that fails or dies fails
        the match at once: this process's share stops, the other helpers are ended."""
        jobs = match_shares(a, b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=concurrency,
                            workers=self.workers)  # fmt: skip
        n = len(jobs)
        t0 = time.perf_counter()
        await self._start(n - 1)
        for (_, conn), job in zip(self._helpers, jobs[1:]):
            conn.send(job)
        loop = asyncio.get_running_loop()
        waits = [loop.run_in_executor(None, _receive, conn, _ignore) for _, conn in self._helpers[: n - 1]]
        here = asyncio.ensure_future(play_match_job(jobs[0], on_round))
        failed: asyncio.Future[asyncio.Future[Any]] = loop.create_future()  # the first helper's reply that failed

        def helper_done(reply: asyncio.Future[Any]) -> None:
            if _failed(reply) and not failed.done():
                failed.set_result(reply)

        for wait_reply in waits:
            wait_reply.add_done_callback(helper_done)
        try:
            first: list[asyncio.Future[Any]] = [here, failed]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():  # the helper's death raises here, its failure in merge_match
                merge_match([await failed.result()], 0.0)
            return merge_match([here.result(), *await self._replies(waits)], time.perf_counter() - t0)
        except BaseException:
            here.cancel()
            for wait_reply in waits:
                wait_reply.cancel()
            self.close(now=True)
            raise

    async def _replies(self, waits: list[asyncio.Future[Any]]) -> list[Any]:
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
                    conn.send(_Quit())
                except OSError:
                    pass
                proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
            proc.join()
            conn.close()
        self._helpers = []


def batch_counts(evaluator: Evaluator) -> tuple[int, int]:
    """Batches and rows of an in-process batcher so far; (0, 0) for other evaluators."""
    return evaluator.counts() if isinstance(evaluator, Batcher) else (0, 0)


def _ignore(_: Counts) -> None:
    pass


def _counts(engine: SelfPlayEngine, evaluator: Evaluator, batches0: int = 0, rows0: int = 0) -> Counts:
    """``engine``'s counts so far, live (its stats add simulations and evaluations only at the end)."""
    batches, rows = batch_counts(evaluator)
    st = engine.stats
    return Counts(st.rounds, st.searched_decisions, engine.search.simulations, engine.search.evaluations,
                  batches - batches0, rows - rows0)  # fmt: skip


def _failed(reply: asyncio.Future[Any]) -> bool:
    """Whether a helper's reply (``_receive``'s future) says its job failed: the helper died, or
    its ``ShareDone`` or ``MatchDone`` carries an error."""
    return not reply.cancelled() and (reply.exception() is not None or reply.result().error is not None)


def _receive(conn: Connection, on_progress: Callable[[Counts], None]) -> Any:
    """On an executor thread: a helper's progress messages, then its reply."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            raise EngineError("a helper process died during its job") from None
        if not isinstance(msg, _Progress):
            return msg
        on_progress(msg.counts)


def _end_with_parent() -> None:
    """A daemon thread of a helper: exit the moment the parent process ends, however it ended
    (a helper in the middle of a share would otherwise play on until its next message)."""
    parent = mp.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(1)


def _helper_main(conn: Connection) -> None:
    """A helper process: play each job it is sent, reply with what it produced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, name="watch-parent", daemon=True).start()
    conn.send(_Ready())
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        match job:
            case _Quit():
                return
            case _Stop():  # meant for a share that had already finished
                continue
            case ShareJob():
                conn.send(run_loop(play_share(job, conn)))
            case MatchJob():
                conn.send(run_loop(play_match_job(job)))


def merge_match(replies: Sequence[Any], seconds: float) -> MatchResult:
    """The ``MatchResult`` of a match from the replies of its shares (``MatchDone``, in any order);
    RuntimeError naming a share's failure."""
    tally = None
    for reply in replies:
        assert isinstance(reply, MatchDone), reply
        if reply.error is not None or reply.tally is None:
            raise RuntimeError(f"the arena match failed in a worker: {reply.error}")
        if tally is None:
            tally = reply.tally
        else:
            tally.merge(reply.tally)
    assert tally is not None, "a match has at least one share"
    return tally.result(seconds)


async def play_match_job(job: MatchJob, on_round: Callable[[int, int], None] | None = None) -> MatchDone:
    """Play ``job`` (``clients.match.play_deals``); a failure comes back in the reply, not raised."""
    seats = []
    try:
        seats = [build_seat(job.a), build_seat(job.b)]
        tally = await play_deals(*seats, players=job.players, cards=job.cards, rounds=job.rounds, seed=job.seed,
                                 concurrency=job.concurrency, first_deal=job.first_deal, deal_stride=job.deal_stride,
                                 on_round=on_round)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - reported to the caller
        return MatchDone(None, f"{type(e).__name__}: {e}")
    finally:
        for seat in seats:
            await aclose_player(seat)
    return MatchDone(tally, None)


async def play_share(job: ShareJob, conn: Connection | None = None) -> ShareDone:
    """Play ``job``; a failure comes back in the reply with what was produced. With ``conn`` (a
    helper's pipe) progress is reported on it every 0.1 s and a ``_Stop`` on it ends the share early."""
    parts: list[Examples] = []
    try:
        evaluator = await build_evaluator(job.spec, job.weights)
    except Exception as e:  # noqa: BLE001 - a server that cannot be reached, weights that do not fit
        return ShareDone(examples=None, stats=None, batches=0, rows=0, error=f"no evaluator: {type(e).__name__}: {e}")

    def stop_asked(stats: EngineStats) -> None:
        if conn is not None and conn.poll() and isinstance(conn.recv(), _Stop):  # the caller's own share failed
            engine.stop()

    async def report() -> None:
        while conn is not None:
            await asyncio.sleep(_REPORT_SECONDS)
            conn.send(_Progress(_counts(engine, evaluator)))

    engine = SelfPlayEngine(
        evaluator,
        search=job.search,
        game=job.game,
        concurrency=job.concurrency,
        seed=job.seed,
        first_game=job.first_game,
        game_stride=job.game_stride,
        sink=parts.append if job.examples else None,
        on_progress=stop_asked,
        opponents=job.opponents,
    )
    error = None
    reporter = asyncio.create_task(report())
    try:
        await engine.run(job.rounds)
    except Exception as e:  # noqa: BLE001 - reported to the caller with what was produced
        error = f"{type(e).__name__}: {e}"
    finally:
        reporter.cancel()
        batches, rows = batch_counts(evaluator)
        await evaluator.aclose()
    examples = Examples.concat(parts) if parts else None
    return ShareDone(examples=examples, stats=engine.stats, batches=batches, rows=rows, error=error)


async def build_evaluator(spec: EvaluatorSpec, weights: dict[str, np.ndarray] | None) -> Evaluator:
    """The evaluator ``spec`` describes, holding ``weights`` where it is a batcher."""
    match spec:
        case FreeSpec():
            return FreeEvaluator()
        case RemoteSpec(address=address, ring_rows=ring_rows):
            return await RemoteEvaluator.connect(address, ring_rows=ring_rows)
        case BatcherSpec():
            model = model_with(spec.preset, weights)
            return Batcher(model, max_batch=spec.max_batch, mode=spec.mode, dtype=spec.dtype, device=spec.device,
                           engine=spec.engine, sparse=spec.sparse)  # fmt: skip
    raise TypeError(f"not an evaluator spec: {spec!r}")
