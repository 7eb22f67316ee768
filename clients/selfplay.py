"""The self-play engine: C games live as coroutines on one event loop, all asking one evaluator.

Each game coroutine plays independent rounds or full games on the standard schedule, searching
every decision that has more than one legal action, and hands the finished round's training
examples to a sink. A new game starts as one ends until N rounds are done. Every evaluation goes
through the evaluator, so the batch is as large as the number of waiting games.

Opponents (bot specs, ``clients.players.bot_maker``: ``heuristic``, ``ismcts:sims=1000``) take one
seat each at every table, drawn anew each round (each game, in games mode); the network plays and
learns from the others, so a run can train against a fixed opponent as well as against itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from blobnet.aio import quiet_gc
from blobnet.config import GameConfig, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.player import Player, act_async
from blobnet.replay import Examples, RoundRecord
from blobnet.rules import Game, Round, choices, standard_schedule
from blobnet.search import Search, choose_action
from clients.players import bot_maker

__all__ = ["EngineStats", "EngineError", "SelfPlayEngine", "check_opponents"]


@dataclass(slots=True)
class EngineStats:
    rounds: int = 0
    games: int = 0
    decisions: int = 0  # every move made, forced ones included
    searched_decisions: int = 0
    uniform_targets: int = 0  # searched decisions whose root visits came out all equal
    simulations: int = 0
    evaluations: int = 0  # rows sent to the evaluator
    cache_hits: int = 0  # rows answered by the network cache (blobnet.netcache) instead of the evaluator
    cache_collisions: int = 0  # lookups whose 64-bit key matched another row's (answered by the network)
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
            # the share of the rows the search needed that the cache answered
            "cache_hit_rate": self.cache_hits / max(self.evaluations + self.cache_hits, 1),
            "cache_collisions": self.cache_collisions,
            "seconds": self.seconds,
        }

    def merged(self, other: EngineStats) -> EngineStats:
        """The counts of two engines that ran side by side: added up, wall time the longer one."""
        out = EngineStats()
        for f in fields(EngineStats):
            if f.name not in ("seconds", "stage_seconds"):
                setattr(out, f.name, getattr(self, f.name) + getattr(other, f.name))
        out.seconds = max(self.seconds, other.seconds)
        return out


class EngineError(RuntimeError):
    """A game raised; the message names its seed so the deal can be replayed."""


def check_opponents(opponents: Sequence[str], game: GameConfig) -> list[Callable[[int | None], Player]]:
    """Each opponent's ``bot_maker`` (one bot made of each, to try it); ValueError naming a bad bot
    spec, or too many opponents to leave the network a seat at the smallest table of ``game``."""
    makers = [bot_maker(spec) for spec in opponents]
    for make in makers:
        make(0)
    if len(opponents) >= min(game.players):
        raise ValueError(
            f"{len(opponents)} opponents at tables of {min(game.players)} players: leave the network a seat"
        )
    return makers


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
        opponents: Sequence[str] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency}: at least 1 game must be live")
        self._opponents = check_opponents(opponents, game)  # a bot maker per opponent
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
        self.search.load_kernels()  # set-up, which stats.seconds leaves out

    async def run(self, rounds: int) -> EngineStats:
        """Play until ``rounds`` more rounds are done; returns the (cumulative) stats."""
        if rounds < 1:
            raise ValueError(f"rounds={rounds}: play at least 1 round")
        self._target = self.stats.rounds + rounds
        self._started = self.stats.rounds
        sims0, evals0 = self.search.simulations, self.search.evaluations
        cache0 = self.search.cache.stats.copy()
        with quiet_gc():  # its collection happens before the clock starts: set-up, like the kernels' load
            t0 = time.perf_counter()
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(self.concurrency, rounds)):
                        tg.create_task(self._worker())
            except* EngineError as group:
                raise group.exceptions[0] from None
            finally:
                self.stats.seconds += time.perf_counter() - t0
                self.stats.simulations += self.search.simulations - sims0
                self.stats.evaluations += self.search.evaluations - evals0
                _, hits, collisions = (self.search.cache.stats - cache0).tolist()
                self.stats.cache_hits += hits
                self.stats.cache_collisions += collisions
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
        if cfg.mode == "rounds":
            r = cfg.deal_round(rng)
            self._started += 1
            await self._play_round(r, rng, self._seat_bots(r.players, rng))
            return
        players = int(rng.choice(cfg.players))
        g = Game(players=players, schedule=standard_schedule(players, cfg.start_cards), rng=rng)
        bots = self._seat_bots(players, rng)  # a bot keeps its seat for the whole game
        self.stats.games += 1
        while not g.is_over and self._started < self._target:
            self._started += 1
            await self._play_round(g.round, rng, bots)
            g.advance()

    def _seat_bots(self, players: int, rng: np.random.Generator) -> dict[int, Player]:
        """The opponents' seats at a table of ``players`` and a bot of each, drawn from the game's
        generator, so a game replays alone."""
        seats = rng.choice(players, size=len(self._opponents), replace=False).tolist() if self._opponents else []
        return {s: make(int(rng.integers(2**63))) for s, make in zip(seats, self._opponents)}

    async def _play_round(self, r: Round, rng: np.random.Generator, bots: dict[int, Player]) -> None:
        stats = self.stats
        temperature = self.config.temperature
        completed_q = self.config.policy_target == "completed_q"
        record = RoundRecord()
        for seat in choices(r):
            if seat in bots:
                r.play(await act_async(bots[seat], r.view(seat)))  # checked: a bot errs by name
                continue
            result = await self.search.run(r.view(seat), rng, noise=True)
            stats.searched_decisions += 1
            stats.uniform_targets += result.is_uniform()
            assert result.features is not None  # a searched decision carries its root features
            target = result.completed_q_policy() if completed_q else result.policy()
            record.add(r, result.features, result.actions, target)
            r.apply(choose_action(result, temperature, rng))
        ex = record.examples(r)
        k = len(ex)
        stats.decisions += r.players * (r.cards + 1)  # every bid and every card, forced ones included
        stats.rounds += 1
        stats.examples += k
        if self.sink is not None and k:
            self.sink(ex)
        if self.on_progress is not None:
            self.on_progress(stats)
