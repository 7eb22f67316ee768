"""Matches between two players on mirrored deals (``blobnet.ratings`` says how they are scored).

Luck is cancelled by mirroring: every deal (random trump, no-trump included, and random dealer) is
played twice. The first time seats alternate a, b, a, b, ... around the table; the second time
every seat changes side, so both sides hold every hand of the deal. Tables run as coroutines on
one event loop, up to ``concurrency`` at once, so network players share one batcher and their
searches batch together. A match may be split by deals over several processes (``play_deals``
plays one share; ``clients.pool`` and ``clients.raypool`` merge the shares' tallies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from blobnet.aio import quiet_gc
from blobnet.player import Player, act_async, describe_player
from blobnet.ratings import MatchResult, MatchTally
from blobnet.rules import IllegalMove, Round, check_table, choices, random_round

__all__ = ["play_deals", "play_match", "play_round"]


def _deal(seed: int, index: int, players: int, cards: int) -> Round:
    """Deal ``index`` of a match, from ``default_rng([seed, index])``: the same for both plays."""
    return random_round(players, cards, np.random.default_rng([seed, index]))


async def play_round(r: Round, seat_players: list[Player], names: list[str]) -> None:
    """Play ``r`` out; a forced move (one legal action) is made without asking the player."""
    for seat in choices(r):
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
    t0 = time.perf_counter()
    tally = await play_deals(a, b, players=players, cards=cards, rounds=rounds, seed=seed, concurrency=concurrency,
                             on_round=on_round)  # fmt: skip
    return tally.result(time.perf_counter() - t0)


async def play_deals(
    a: Player,
    b: Player,
    *,
    players: int,
    cards: int,
    rounds: int,
    seed: int,
    concurrency: int,
    first_deal: int = 0,
    deal_stride: int = 1,
    on_round: Callable[[int, int], None] | None = None,
) -> MatchTally:
    """A share of the match ``play_match`` plays with these settings: its deals ``first_deal,
    first_deal + deal_stride, ...``, both plays of each. Returns the tally of the whole match's
    deals holding this share's rounds; the tallies of the shares of a split match add up with
    ``MatchTally.merge`` to the tally of the whole match. ``on_round(done, total)`` counts this
    share's rounds."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: play at least 1 round (2 with the mirror)")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: at least 1 table must be live")
    if not 0 <= first_deal < deal_stride:
        raise ValueError(f"first_deal={first_deal}, deal_stride={deal_stride}: need 0 <= first_deal < deal_stride")
    check_table(players, cards)
    deals = (rounds + 1) // 2
    jobs = [(i, swapped) for i in range(first_deal, deals, deal_stride) for swapped in (False, True)]
    tally = MatchTally(deals, players)
    done = 0
    next_job = 0
    label = [f"a ({describe_player(a)})", f"b ({describe_player(b)})"]

    async def table() -> None:
        nonlocal next_job, done
        while next_job < len(jobs):
            i, swapped = jobs[next_job]
            next_job += 1
            r = _deal(seed, i, players, cards)
            b_seats = [(s % 2 == 1) != swapped for s in range(players)]
            seat_players = [b if b_seats[s] else a for s in range(players)]
            await play_round(r, seat_players, [label[b_seats[s]] for s in range(players)])
            made = [r.bids[s] == r.tricks_won[s] for s in range(players)]
            tally.add(i, b_seats, r.scores(), made)
            done += 1
            if on_round is not None:
                on_round(done, len(jobs))
            await asyncio.sleep(0)  # bots never suspend: let the loop run (a cancellation, a helper's failure)

    try:
        # The cyclic collector would walk every live search tree again and again: with network
        # players it took about half of a match's time (measured: 16.5 s -> 8.8 s for 400 rounds).
        with quiet_gc():
            async with asyncio.TaskGroup() as tg:  # one failing table cancels the others
                for _ in range(min(concurrency, len(jobs))):
                    tg.create_task(table())
    except* Exception as group:
        raise group.exceptions[0] from None  # the first failure, with its own traceback
    return tally
