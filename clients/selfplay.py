"""The self-play engine: C games live as coroutines on one event loop, all asking one evaluator.

Each game coroutine plays independent rounds or full games on the standard schedule, searching
every decision that has more than one legal action, and hands the finished round's training
examples to a sink. A new game starts as one ends until N rounds are done. Every evaluation goes
through the evaluator, so the batch is as large as the number of waiting games.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from blobnet.config import GameConfig, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.replay import Examples, RoundRecord
from blobnet.rules import TRUMP_CYCLE, Game, Round, standard_schedule
from blobnet.search import Search, choose_action
from blobnet.status import Status

__all__ = [
    "EngineStats", "EngineError", "SelfPlayEngine", "FreeEvaluator", "default_workers", "run_loop", "selfplay_command",
]  # fmt: skip


@dataclass(slots=True)
class EngineStats:
    rounds: int = 0
    games: int = 0
    decisions: int = 0  # every move made, forced ones included
    searched_decisions: int = 0
    uniform_targets: int = 0  # searched decisions whose root visits came out all equal
    simulations: int = 0
    evaluations: int = 0
    examples: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int]:
        s = max(self.seconds, 1e-9)
        return {
            "rounds": self.rounds,
            "rounds_per_min": 60.0 * self.rounds / s,
            "sims_per_s": self.simulations / s,
            "evals_per_s": self.evaluations / s,
            "examples": self.examples,
            "searched_decisions": self.searched_decisions,
            "uniform_target_fraction": self.uniform_targets / max(self.searched_decisions, 1),
            "seconds": self.seconds,
        }


class EngineError(RuntimeError):
    """A game raised; the message names its seed so the deal can be replayed."""


class FreeEvaluator:
    """An evaluator that costs nothing: uniform priors over the legal actions, equal values.
    It measures the search-only ceiling and serves tests. It gives the event loop one turn per
    request, as a batcher does, so the games interleave instead of playing one after another."""

    def __init__(self, value: float = 0.5) -> None:
        self.values = [value] * 8

    async def evaluate_many(
        self, features: np.ndarray, legal: Sequence[Sequence[int]]
    ) -> tuple[list[float], list[list[float]]]:
        priors: list[float] = []
        for ids in legal:
            priors += [1.0 / len(ids)] * len(ids)
        await asyncio.sleep(0)
        return priors, [self.values] * len(legal)

    async def aclose(self) -> None:
        return None


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Python's cyclic collector would walk every live tree node again and again; the trees make
    no reference cycles, so collect rarely while games run (DESIGN.md: its largest cost)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


class SelfPlayEngine:
    """Plays ``rounds`` rounds with ``concurrency`` games live at once.

    ``sink`` receives each finished round's Examples (on the event loop, so keep it cheap).
    ``on_progress`` is called with the stats after every round. Seeds: game ``i`` draws from
    ``numpy.random.default_rng([seed, i])``, so any game can be replayed alone; this engine plays
    the game ids ``first_game, first_game + game_stride, ...`` (``clients.pool`` splits a run so)."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        search: SearchConfig,
        game: GameConfig,
        concurrency: int,
        seed: int = 0,
        first_game: int = 0,
        game_stride: int = 1,
        sink: Callable[[Examples], None] | None = None,
        on_progress: Callable[[EngineStats], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency}: at least 1 game must be live")
        self.search = Search(evaluator, search)
        self.config = search
        self.game = game
        self.concurrency = concurrency
        self.seed = seed
        self.sink = sink
        self.on_progress = on_progress
        self.stats = EngineStats()
        self._target = 0
        self._next_game = first_game
        self._game_stride = game_stride
        self._started = 0  # rounds begun, finished or not: the engine begins no more than asked

    async def run(self, rounds: int) -> EngineStats:
        """Play until ``rounds`` more rounds are done; returns the (cumulative) stats."""
        if rounds < 1:
            raise ValueError(f"rounds={rounds}: play at least 1 round")
        self._target = self.stats.rounds + rounds
        self._started = self.stats.rounds
        t0 = time.perf_counter()
        sims0, evals0 = self.search.simulations, self.search.evaluations
        try:
            with quiet_gc():
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(self.concurrency, rounds)):
                        tg.create_task(self._worker())
        except* EngineError as group:
            raise group.exceptions[0] from None
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.simulations += self.search.simulations - sims0
            self.stats.evaluations += self.search.evaluations - evals0
        return self.stats

    def stop(self) -> None:
        """Begin no more rounds; ``run`` returns once the rounds in progress are done."""
        self._target = min(self._target, self._started)

    async def _worker(self) -> None:
        while self._started < self._target:
            i = self._next_game
            self._next_game += self._game_stride
            try:
                await self._play(np.random.default_rng([self.seed, i]))
            except Exception as e:
                raise EngineError(f"game {i} (seed [{self.seed}, {i}]) failed: {type(e).__name__}: {e}") from e

    async def _play(self, rng: np.random.Generator) -> None:
        cfg = self.game
        players = int(rng.choice(cfg.players))
        if cfg.mode == "rounds":
            cards = int(rng.choice([c for c in cfg.cards if c * players <= 52]))
            trump = TRUMP_CYCLE[int(rng.integers(5))]
            r = Round.deal(players=players, cards=cards, trump=trump, dealer=int(rng.integers(players)), rng=rng)
            self._started += 1
            await self._play_round(r, rng)
            return
        g = Game(players=players, schedule=standard_schedule(players, cfg.start_cards), rng=rng)
        self.stats.games += 1
        while not g.is_over and self._started < self._target:
            self._started += 1
            await self._play_round(g.round, rng)
            g.advance()

    async def _play_round(self, r: Round, rng: np.random.Generator) -> None:
        stats = self.stats
        temperature = self.config.temperature
        record = RoundRecord()
        while r.to_play is not None:
            stats.decisions += 1
            legal = r.legal()
            if len(legal) == 1:
                r.apply(legal[0])
                continue
            seat = r.to_play
            result = await self.search.run(r.view(seat), rng, noise=True)
            stats.searched_decisions += 1
            stats.uniform_targets += result.is_uniform()
            assert result.features is not None  # a searched decision carries its root features
            record.add(r, result.features, result.actions, result.policy())
            r.apply(choose_action(result, temperature, rng))
        ex = record.examples(r)
        k = len(ex)
        stats.rounds += 1
        stats.examples += k
        if self.sink is not None and k:
            self.sink(ex)
        if self.on_progress is not None:
            self.on_progress(stats)


def run_loop(coro):  # type: ignore[no-untyped-def]
    """Run ``coro`` on uvloop where it can be had, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def default_workers(args: argparse.Namespace) -> int:
    """One engine per CPU core when the evaluator is this machine's CPU (or free), else one: a
    GPU or a separate server does the forward passes, and one engine keeps them busy."""
    if args.server or args.device != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


async def _selfplay(args: argparse.Namespace) -> dict[str, float | int]:
    from clients.pool import EvaluatorSpec, SelfPlayPool

    search = SearchConfig(dets=args.dets, sims=args.sims, leaves=args.leaves, root_view=args.root_view)
    game = GameConfig(mode="games" if args.games else "rounds", players=[args.players], cards=[args.cards])
    pool = SelfPlayPool(args.workers or default_workers(args))
    weights = None
    if args.free:
        evaluator: Evaluator = FreeEvaluator()
        spec = EvaluatorSpec(kind="free")
    elif args.server:
        from clients.remote import RemoteEvaluator

        remote = await RemoteEvaluator.connect(args.server)
        await remote.stats(reset=True)
        evaluator, spec = remote, EvaluatorSpec(kind="remote", address=args.server)
    else:
        from blobnet.checkpoint import load_model
        from blobnet.net import make_net
        from servers import Batcher

        model = load_model(args.checkpoint) if args.checkpoint else make_net(args.preset, seed=args.seed)
        weights = model.state_dict()
        spec = EvaluatorSpec(preset=model.config.name, dtype=args.dtype, max_batch=args.max_batch, mode=args.mode,
                             device=args.device)  # fmt: skip
        evaluator = Batcher(model, max_batch=args.max_batch, device=args.device, mode=args.mode, dtype=args.dtype)
    parts: list[Examples] = []
    status = Status(enabled=not args.json)
    try:
        stats = await pool.run(
            evaluator,
            spec,
            weights,
            search=search,
            game=game,
            rounds=args.rounds,
            concurrency=args.concurrency,
            seed=args.seed,
            sink=parts.append if args.out else None,
            on_progress=lambda done: status.phase(1, 1, "self-play", done, args.rounds),
        )
        avg_batch = pool.mean_batch
        if args.server:
            avg_batch = float((await remote.stats())["mean_batch"])
    finally:
        pool.close()
        await evaluator.aclose()
    out = stats.summary()
    out["avg_batch"] = avg_batch
    keys = ["rounds", "rounds_per_min", "sims_per_s", "evals_per_s", "avg_batch", "examples", "searched_decisions"]
    ordered = {k: out[k] for k in keys} | {k: out[k] for k in ("uniform_target_fraction", "seconds")}
    status.done(
        f"{stats.rounds} rounds in {stats.seconds:.1f} s on {min(pool.workers, args.concurrency)} process(es): "
        f"{ordered['rounds_per_min']:.0f} rounds/min, {ordered['sims_per_s']:.0f} simulations/s, "
        f"{ordered['evals_per_s']:.0f} evaluations/s, mean batch {ordered['avg_batch']:.1f}, "
        f"{stats.examples} examples, uniform targets {ordered['uniform_target_fraction']:.2%}"
    )
    if args.out:
        ex = Examples.concat(parts)
        np.savez_compressed(args.out, features=ex.features, legal=ex.legal, policy=ex.policy, value=ex.value)
    return ordered


def selfplay_command(args: argparse.Namespace) -> int:
    """``blobnet selfplay`` (INTERFACES.md)."""
    result = run_loop(_selfplay(args))
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
