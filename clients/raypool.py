"""Self-play and matches in Ray actors: the trainer's engines on every machine of a Ray cluster.

Why Ray: DESIGN.md's scale-out asks for Ray actors for self-play and matches, the learner in the
driver and the weights through the object store, rather than a cluster layer of the project's own;
Ray brings the scheduling over machines, the restarts and the object store.

``RayPool(workers)`` is the ``clients.pool.EnginePool`` of ``train.backend = "ray"``: ``workers``
actors, each one engine process with its own evaluator built from the run's spec and weights (a
batcher on its node's device), as the local pool's helpers build theirs. Every share plays in an
actor; the driver schedules, merges and learns.

The same examples as the local backend: a run is split into the local pool's shares (share ``w``
of ``N`` plays the game ids ``w, w + N, ...`` with its part of the rounds and of the live games,
``clients.pool.split``), and game ``i`` draws from ``[seed, i]``, so for the same seed the union of
the examples is the local backend's. Each share is cut into ``chunks`` runs of its consecutive
ids, each with the share's live games (in mode "games" a game spans rounds, and a share stays
whole). The examples reach the sink in the order of the chunks, so a run repeats exactly.

Faults: the chunks wait in one queue and an idle actor takes the next, so a slower machine takes
fewer. An actor that dies (its process or its machine) fails the chunk it held: that chunk goes
back to the queue, the chunks done are kept, Ray restarts the actor (``max_restarts=-1``, on any
machine with room) and it takes work again once it answers. Any other Ray error of a call (the
actors' methods report their own failures, so it is Ray's: a restart that failed, an argument
that could not be fetched) is treated the same way. A lost machine slows the iteration; a chunk
that fails so ``MAX_TRIES`` times, or a game that raises, ends it with ``EngineError``.

The weights go into the object store once per run (``ray.put``): every chunk call carries the
reference and each machine fetches them once. Matches go to actors the same way: ``match`` as one
job, ``split_match`` as one share of the deals per actor, the tallies merged.

Ray is imported when a ``RayPool`` is made, so the package works without it installed.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from blobnet.aio import run_loop
from blobnet.config import GameConfig, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.ratings import MatchResult
from blobnet.replay import Examples
from clients.players import NetworkSeat, SeatSpec, arrays_of
from clients.pool import (
    EvaluatorSpec,
    MatchDone,
    MatchJob,
    ShareDone,
    ShareJob,
    check_run,
    match_shares,
    merge_match,
    play_match_job,
    play_share,
    split,
)  # fmt: skip
from clients.selfplay import EngineError, EngineStats, check_opponents

__all__ = ["MAX_TRIES", "EngineActor", "RayPool"]

MAX_TRIES = 3  # a chunk or match share is played at most this often before its actors' deaths end the run
_PING_SECONDS = 0.2  # after an actor died: how long to wait before asking whether it is back


def import_ray() -> Any:
    """The ``ray`` module; ValueError saying how to install it when it is missing."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ValueError("train.backend = \"ray\" needs Ray, which is not installed: pip install -e '.[ray]'") from None


class EngineActor:
    """A Ray actor (``RayPool`` makes it one): an engine process that plays the self-play chunks
    and match shares it is sent, each on a fresh event loop with a fresh evaluator."""

    def pid(self) -> int:
        """This process's id: the actor is up (its imports done), and where to look at it."""
        return os.getpid()

    def play(self, job: ShareJob, weights: dict[str, np.ndarray] | None) -> ShareDone:
        """Play a self-play chunk with ``weights`` (arrays, read from the object store)."""
        return run_loop(play_share(msgspec.structs.replace(job, weights=_writable(weights))))

    def match(self, job: MatchJob) -> MatchDone:
        """Play a match, or a share of its deals."""
        a, b = (
            msgspec.structs.replace(seat, weights=_writable(seat.weights)) if isinstance(seat, NetworkSeat) else seat
            for seat in (job.a, job.b)
        )
        return run_loop(play_match_job(msgspec.structs.replace(job, a=a, b=b)))


def _writable(weights: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """Copies of arrays read from the object store, which are read-only: torch wants arrays it may write."""
    return None if weights is None else {k: np.array(v) for k, v in weights.items()}


class RayPool:
    """``workers`` engines in Ray actors (module docstring). ``address``: the cluster to join
    (``train.ray_address``; "" starts a Ray on this machine for the pool alone, "auto" joins the one
    ``ray start`` runs here); a process already connected to Ray keeps its connection. ``device``: where the
    actors' batchers run; on CUDA each actor takes an equal part of the cluster's GPUs."""

    def __init__(self, workers: int, *, address: str = "", chunks: int = 4, device: str = "cpu") -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: at least 1 actor")
        if chunks < 1:
            raise ValueError(f"chunks={chunks}: each share is played in at least 1 chunk")
        self._ray = import_ray()
        self.workers = workers
        self.address = address
        self.chunks = chunks
        self.device = device
        self.batches = 0  # batches and rows of the last run's batchers, every actor together
        self.rows = 0
        self.replayed = 0  # chunks and match shares played again because their actor died
        self.pids: list[int] = []  # each actor's process id as it last answered (to watch it, or kill it in tests)
        self._actors: list[Any] = []
        self._own_ray = False  # whether close() ends the Ray this pool started

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
        """``clients.pool.SelfPlayPool.run`` with every share in the actors: ``evaluator`` (the
        driver's) plays nothing. ``on_progress`` hears of the rounds as chunks finish; the
        examples reach ``sink`` at the end, in the order of the chunks."""
        check_run(rounds, concurrency)
        check_opponents(opponents, game)
        n = min(self.workers, concurrency, rounds)
        jobs = []
        for w, (share_rounds, live) in enumerate(zip(split(rounds, n), split(concurrency, n))):
            pieces = [share_rounds] if game.mode == "games" else [k for k in split(share_rounds, self.chunks) if k]
            done = 0
            for k in pieces:
                jobs.append(ShareJob(spec=spec, weights=None, search=search, game=game, rounds=k, concurrency=live,
                                     seed=seed, first_game=w + done * n, game_stride=n,
                                     opponents=opponents, examples=sink is not None))  # fmt: skip
                done += k
        await self._start()
        t0 = time.perf_counter()
        ref = self._ray.put(None if weights is None else arrays_of(weights))
        finished = 0

        def chunk_done(_: int, reply: ShareDone) -> None:
            nonlocal finished
            finished += reply.stats.rounds if reply.stats is not None else 0
            if on_progress is not None:
                on_progress(finished)

        replies = await self._drain(jobs, lambda actor, job: actor.play.remote(job, ref), chunk_done)
        stats = EngineStats()
        self.batches = self.rows = 0
        errors = []
        for i, reply in enumerate(replies):
            assert isinstance(reply, ShareDone), reply
            if reply.examples is not None and sink is not None:
                sink(reply.examples)
            if reply.stats is not None:
                stats = stats.merged(reply.stats)
            self.batches += reply.batches
            self.rows += reply.rows
            if reply.error is not None:
                errors.append(
                    f"chunk {i} (games from {jobs[i].first_game}, every {jobs[i].game_stride}): {reply.error}"
                )
        stats.seconds = time.perf_counter() - t0
        if errors:
            raise EngineError("; ".join(errors))
        return stats

    async def match(
        self, a: SeatSpec, b: SeatSpec, *, players: int, cards: int, rounds: int, seed: int, concurrency: int
    ) -> MatchResult:
        """``clients.match.play_match`` of ``a`` against ``b`` in one actor; its ``MatchResult``."""
        job = MatchJob(a=a, b=b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=concurrency)
        await self._start()
        t0 = time.perf_counter()
        replies = await self._drain([job], lambda actor, j: actor.match.remote(j), None)
        return merge_match(replies, time.perf_counter() - t0)

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
        """The match ``match`` plays, its deals split over every actor (share ``w`` of ``N``: deals
        ``w, w + N, ...``) and its tables with them; the shares' tallies merged, so the result is
        the whole match's. ``on_round(done, total)`` hears of each share's rounds as it ends."""
        jobs = match_shares(a, b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=concurrency,
                            workers=self.workers)  # fmt: skip
        n = len(jobs)
        await self._start()
        t0 = time.perf_counter()
        total = 2 * ((rounds + 1) // 2)
        played = 0

        def share_done(j: int, _: MatchDone) -> None:
            nonlocal played
            played += 2 * len(range(j, total // 2, n))
            if on_round is not None:
                on_round(min(played, total), total)

        replies = await self._drain(jobs, lambda actor, j: actor.match.remote(j), share_done)
        return merge_match(replies, time.perf_counter() - t0)

    def close(self, *, now: bool = False) -> None:
        """End the actors (whatever they were playing is lost), and the Ray this pool started.
        ``now`` is accepted for ``EnginePool``: actors are always ended at once."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        self.pids = []
        if self._own_ray:
            self._ray.shutdown()
            self._own_ray = False

    # -- scheduling ----------------------------------------------------------------------------------
    async def _start(self) -> None:
        """Connect to Ray and have ``workers`` actors up (their imports done, so a run's clock
        starts with every actor able to play)."""
        ray = self._ray
        if not ray.is_initialized():
            # "local": a Ray of the run's own, even where `ray start` runs one (that is "auto")
            try:
                ray.init(address=self.address or "local", include_dashboard=False, logging_level="WARNING")
            except (ConnectionError, ray.exceptions.RayError) as e:
                raise ValueError(f"train.ray_address = {self.address!r}: no Ray cluster to join there: {e}") from None
            self._own_ray = True
        if len(self._actors) == self.workers:
            return
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus < self.workers:  # the actors past the cluster's cores would wait for ever
            raise ValueError(f"train.workers = {self.workers} actors of one CPU each, but the Ray cluster has {cpus:g}")
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": -1, "max_task_retries": 0}
        if self.device != "cpu":
            gpus = float(ray.cluster_resources().get("GPU", 0))
            if not gpus:
                raise ValueError(f"server.device = {self.device!r}, but the Ray cluster has no GPU")
            options["num_gpus"] = min(1.0, gpus / self.workers)
        actor_class = ray.remote(**options)(EngineActor)
        while len(self._actors) < self.workers:
            self._actors.append(actor_class.remote())
        self.pids = list(await asyncio.gather(*(_get(actor.pid.remote()) for actor in self._actors)))

    async def _drain(
        self, jobs: Sequence[Any], call: Callable[[Any, Any], Any], on_reply: Callable[[int, Any], None] | None
    ) -> list[Any]:
        """Every job played by some actor (``call(actor, job)`` submits it), the replies in the
        jobs' order; a job whose actor died goes back to the queue (module docstring: faults).
        ``on_reply(j, reply)`` hears of each job as it ends."""
        # The actors' methods return their own failures, so a Ray error is the actor's process or
        # machine failing (a death, a restart that failed, an argument that could not be fetched).
        failed = self._ray.exceptions.RayError
        replies: list[Any] = [None] * len(jobs)
        todo = deque(range(len(jobs)))
        tries = [0] * len(jobs)
        idle = deque(range(len(self._actors)))
        running: dict[asyncio.Future[Any], tuple[int, int | None]] = {}  # -> (actor, job; None: a ping)
        left = len(jobs)
        try:
            while left:
                while todo and idle:
                    a, first = idle.popleft(), todo.popleft()
                    running[asyncio.ensure_future(_get(call(self._actors[a], jobs[first])))] = (a, first)
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in finished:
                    a, j = running.pop(future)
                    error = future.exception()
                    if error is None:
                        idle.append(a)
                        if j is None:
                            self.pids[a] = future.result()
                        else:
                            replies[j] = future.result()
                            left -= 1
                            if on_reply is not None:
                                on_reply(j, replies[j])
                        continue
                    if not isinstance(error, failed):
                        raise error
                    if j is not None:
                        tries[j] += 1
                        if tries[j] >= MAX_TRIES:
                            raise EngineError(f"job {j} failed on {tries[j]} actors; last: {error}") from error
                        todo.appendleft(j)
                        self.replayed += 1
                    # Ray restarts a dead actor; it takes work again once it answers.
                    running[asyncio.ensure_future(_ping(self._actors[a]))] = (a, None)
        finally:
            for future in running:
                future.cancel()
        return replies


async def _get(ref: Any) -> Any:
    """The value of a Ray object reference, awaited on this event loop."""
    return await ref


async def _ping(actor: Any) -> int:
    """``actor``'s pid once it answers again (after a short wait: it is being restarted)."""
    await asyncio.sleep(_PING_SECONDS)
    return int(await actor.pid.remote())
