"""Matches between two players on mirrored deals, the promotion gate, and the ``blobnet arena`` command.

Luck is cancelled by mirroring: every deal (random trump, no-trump included, and random dealer) is
played twice. The first time seats alternate a, b, a, b, ... around the table; the second time
every seat changes side, so both sides hold every hand of the deal. The two plays of a deal are
one independent unit: the confidence interval comes from the per-deal paired differences.

Scores are round scores in points (``10 + bid`` for an exact bid, else 0). ``mean_score_a`` is the
mean round score of one seat held by side a. Tables run as coroutines on one event loop, up to
``concurrency`` at once, so network players share one batcher and their searches batch together.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from blobnet.elo import EloLadder, elo_from_score
from blobnet.player import Player, aclose_player, act_async, describe_player, parse_player
from blobnet.rules import TRUMP_CYCLE, IllegalMove, Round

__all__ = [
    "MatchResult",
    "play_match",
    "gate",
    "lower_bound",
    "t_quantile",
    "t_cdf",
    "format_report",
    "arena_command",
    "EloLadder",
    "JSON_KEYS",
]

JSON_KEYS = ("rounds", "mean_score_a", "mean_score_b", "diff", "ci95", "made_rate_a", "made_rate_b", "elo_diff")


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of a mirrored match of side a against side b. Scores in points per round."""

    rounds: int  # rounds played: twice the number of deals
    mean_score_a: float  # mean round score of one seat held by a
    mean_score_b: float
    diff: float  # mean_score_a - mean_score_b
    ci95: tuple[float, float]  # 95% confidence interval of diff (t over per-deal paired differences)
    made_rate_a: float  # fraction of a's bids made exactly
    made_rate_b: float
    elo_diff: float  # Elo of a over b from seat-against-seat comparisons within each round
    deals: int  # mirrored deals: the independent units
    se: float  # standard error of diff (points per round); inf with a single deal
    pair_score: float  # a's expected score against b seat against seat (win 1, tie 0.5)
    comparisons: int  # seat pairs (an a seat, a b seat) compared in all
    seconds: float = 0.0  # wall time of the match

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object: exactly the keys of ``JSON_KEYS``; an infinite bound is null."""
        lo, hi = self.ci95
        return {
            "rounds": self.rounds,
            "mean_score_a": self.mean_score_a,
            "mean_score_b": self.mean_score_b,
            "diff": self.diff,
            "ci95": [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None],
            "made_rate_a": self.made_rate_a,
            "made_rate_b": self.made_rate_b,
            "elo_diff": self.elo_diff,
        }


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom, by the finite series for whole
    ``df`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2:
        total, term = 0.0, math.cos(theta)
        for k in range(3, df, 2):  # cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ...
            total += term
            term *= c2 * (k - 1) / k
        if df > 1:
            total += term
        a = (2 / math.pi) * (theta + (s * total if df > 1 else 0.0))
    else:
        total, term = 0.0, 1.0
        for k in range(2, df + 1, 2):  # 1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...
            total += term
            term *= c2 * (k - 1) / k
        a = s * total
    return 0.5 * (1.0 + a)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``p`` in 0.5..1, ``df`` >= 1).

    Bisection on ``t_cdf`` up to 1000 degrees of freedom; past that the Cornish-Fisher expansion
    around the normal quantile (A&S 26.7.5), which is then exact to 1e-9."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p={p}: give a probability in 0.5..1 (exclusive of 1)")
    if df < 1:
        raise ValueError(f"df={df}: at least 1 degree of freedom")
    if df > 1000:
        z = NormalDist().inv_cdf(p)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def lower_bound(result: MatchResult, confidence: float) -> float:
    """One-sided lower confidence bound of ``result.diff`` at ``confidence`` (points per round)."""
    if result.deals < 2:
        return -math.inf
    return result.diff - t_quantile(confidence, result.deals - 1) * result.se


def gate(result: MatchResult, margin: float = 0.0, confidence: float = 0.95) -> bool:
    """Promote side a only when the one-sided lower ``confidence`` bound of its lead over b
    exceeds ``margin`` (points per round)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence={confidence}: give a probability in 0.5..1 (exclusive of 1)")
    return lower_bound(result, confidence) > margin


def _deal(seed: int, index: int, players: int, cards: int) -> tuple[int | None, int, list[list[int]]]:
    """Deal ``index`` of a match: trump (None = no trump), dealer and hands, from ``[seed, index]``."""
    rng = np.random.default_rng([seed, index])
    trump = TRUMP_CYCLE[int(rng.integers(5))]
    dealer = int(rng.integers(players))
    r = Round.deal(players=players, cards=cards, trump=trump, dealer=dealer, rng=rng)
    return trump, dealer, r.hands


async def _play_round(r: Round, seat_players: list[Player], names: list[str]) -> None:
    """Play ``r`` out; a forced move (one legal action) is made without asking the player."""
    while r.to_play is not None:
        seat = r.to_play
        legal = r.legal()
        if len(legal) == 1:
            r.apply(legal[0])
            continue
        action = await act_async(seat_players[seat], r.view(seat))
        try:
            r.play(action)
        except IllegalMove as e:
            raise ValueError(f"player {names[seat]} at seat {seat} chose an illegal action: {e}") from None


async def play_match(
    a: Player,
    b: Player,
    *,
    players: int = 4,
    cards: int = 5,
    rounds: int = 400,
    seed: int = 0,
    concurrency: int = 64,
    on_round: Callable[[int, int], None] | None = None,
) -> MatchResult:
    """Play ``a`` against ``b`` on mirrored deals (module docstring) and measure the difference.

    ``rounds`` is the number of rounds played, rounded up to an even number (two per deal); deal
    ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so a seed fixes the deals.
    ``concurrency`` tables run at once. ``on_round(done, total)`` is called after each round.
    The players stay the caller's: a network player's batcher is closed by its owner (``aclose``).
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: play at least 1 round (2 with the mirror)")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: at least 1 table must be live")
    Round.deal(players=players, cards=cards, trump=None, dealer=0, seed=0)  # refuses impossible tables
    deals = (rounds + 1) // 2
    jobs = [(i, swapped) for i in range(deals) for swapped in (False, True)]
    score_a = [0.0] * deals  # per deal, summed over both plays: a's seats' scores
    score_b = [0.0] * deals
    made = [0, 0]  # exact bids of a, of b
    pair_points = 0.0
    comparisons = 0
    done = 0
    next_job = 0
    label = [f"a ({describe_player(a)})", f"b ({describe_player(b)})"]

    async def table() -> None:
        nonlocal next_job, pair_points, comparisons, done
        while next_job < len(jobs):
            i, swapped = jobs[next_job]
            next_job += 1
            trump, dealer, hands = _deal(seed, i, players, cards)
            r = Round.deal(players=players, cards=cards, trump=trump, dealer=dealer, hands=hands)
            side = [(s % 2 == 1) != swapped for s in range(players)]  # False: a holds the seat, True: b
            seat_players = [b if side[s] else a for s in range(players)]
            await _play_round(r, seat_players, [label[side[s]] for s in range(players)])
            scores = r.scores()
            for s in range(players):
                if side[s]:
                    score_b[i] += scores[s]
                else:
                    score_a[i] += scores[s]
                made[side[s]] += r.bids[s] == r.tricks_won[s]
            for s in range(players):
                if side[s]:
                    continue
                for t in range(players):
                    if side[t]:
                        pair_points += 1.0 if scores[s] > scores[t] else 0.5 if scores[s] == scores[t] else 0.0
                        comparisons += 1
            done += 1
            if on_round is not None:
                on_round(done, len(jobs))

    from clients.selfplay import quiet_gc

    t0 = time.perf_counter()
    try:
        # The cyclic collector would walk every live search tree again and again: with network
        # players it took about half of a match's time (measured: 16.5 s -> 8.8 s for 400 rounds).
        with quiet_gc():
            async with asyncio.TaskGroup() as tg:  # one failing table cancels the others
                for _ in range(min(concurrency, len(jobs))):
                    tg.create_task(table())
    except* Exception as group:
        raise group.exceptions[0] from None  # the first failure, with its own traceback
    seconds = time.perf_counter() - t0

    seats_per_side = deals * players  # over a deal's two plays each side holds every seat once
    diffs = [(x - y) / players for x, y in zip(score_a, score_b)]
    diff = sum(diffs) / deals
    if deals > 1:
        var = sum((d - diff) ** 2 for d in diffs) / (deals - 1)
        se = math.sqrt(var / deals)
        half = t_quantile(0.975, deals - 1) * se
        ci95 = (diff - half, diff + half)
    else:
        se = math.inf
        ci95 = (-math.inf, math.inf)
    pair_score = pair_points / comparisons
    return MatchResult(
        rounds=2 * deals,
        mean_score_a=sum(score_a) / seats_per_side,
        mean_score_b=sum(score_b) / seats_per_side,
        diff=diff,
        ci95=ci95,
        made_rate_a=made[0] / seats_per_side,
        made_rate_b=made[1] / seats_per_side,
        elo_diff=elo_from_score(pair_score, comparisons),
        deals=deals,
        se=se,
        pair_score=pair_score,
        comparisons=comparisons,
        seconds=seconds,
    )


def format_report(result: MatchResult, *, a: str, b: str, players: int, cards: int) -> str:
    """A few readable lines about ``result``; ``a`` and ``b`` name the sides."""
    lo, hi = result.ci95
    verdict = "a is better" if lo > 0 else "b is better" if hi < 0 else "no significant difference"
    return "\n".join(
        [
            f"arena: a = {a}, b = {b}; {players} players, {cards} cards; {result.rounds} rounds "
            f"({result.deals} mirrored deals) in {result.seconds:.1f} s",
            f"  mean round score per seat: a {result.mean_score_a:.3f}, b {result.mean_score_b:.3f} points",
            f"  difference a - b: {result.diff:+.3f} points per round, 95% CI [{lo:+.3f}, {hi:+.3f}]: {verdict}",
            f"  exact bids: a {result.made_rate_a:.1%}, b {result.made_rate_b:.1%}",
            f"  Elo of a over b (seat against seat, ties half): {result.elo_diff:+.0f} "
            f"(expected score {result.pair_score:.3f} over {result.comparisons} comparisons)",
        ]
    )


def arena_command(args: argparse.Namespace) -> int:
    """``blobnet arena``: parse both players, play the match, print the report (and ``--json``)."""
    from clients.selfplay import run_loop

    a = parse_player(args.a, seed=2 * args.seed)
    b = parse_player(args.b, seed=2 * args.seed + 1)
    step = max(1, args.rounds // 20)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() and (done % step == 0 or done == total):
            print(f"\r{done}/{total} rounds", end="" if done < total else "\n", file=sys.stderr, flush=True)

    async def main() -> MatchResult:
        try:
            return await play_match(
                a,
                b,
                players=args.players,
                cards=args.cards,
                rounds=args.rounds,
                seed=args.seed,
                concurrency=args.concurrency,
                on_round=progress,
            )
        finally:
            await aclose_player(a)
            await aclose_player(b)

    result = run_loop(main())
    print(format_report(result, a=args.a, b=args.b, players=args.players, cards=args.cards), flush=True)
    if args.json:
        from blobnet.cli import print_json

        print_json(result.to_dict())
    return 0
