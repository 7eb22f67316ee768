"""What the hidden cards cost the IS-MCTS baseline: its score among RandomBots, blind and seeing.

    python -m bench.ismcts_bound [--rounds 1000] [--sims 1000] [--c 10] [--players 4] [--cards 5]
                                 [--seed 1] [--player SPEC ...] [--json]

One ``ismcts`` seat among RandomBots on the same fixed deals (``blobnet.ismcts.among_random``),
four ways: as it plays (every simulation on a deal of the hidden cards sampled from what it
knows), seeing every hand at its bids alone, at its plays alone, and at both (each simulation on
the true deal). ``--sims`` and ``--c`` take comma lists: every pair is measured. The gap between
the blind seat and the seeing one is what not knowing the other hands costs this search; what a
fair player can score lies below the seeing one's. ``--player SPEC`` (any player spec: a checkpoint
with its search settings, ``heuristic``, ``ismcts:sims=4000``; repeatable) puts that player in the
seat instead, blind, on the same deals: how far a score among RandomBots follows a player's strength.

Issue #14 asks the blind seat for 8.5 points a round at 4 x 5 with 1,000 simulations. With
``--json`` the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

import numpy as np

from bench.common import parse_floats, parse_ints
from blobnet.aio import run_loop
from blobnet.bots import RandomBot
from blobnet.ismcts import SEES, among_random, calibration_round
from blobnet.player import aclose_player
from clients.match import play_round
from clients.players import parse_player

# name -> the decisions at which the seat sees every hand
WAYS: dict[str, tuple[str, ...]] = {"blind": (), "sees bids": ("bids",), "sees plays": ("plays",), "sees all": SEES}


def _summary(scores: np.ndarray) -> dict[str, object]:
    n = len(scores)
    return {
        "mean": round(float(scores.mean()), 3),
        "stderr": round(float(scores.std(ddof=1) / math.sqrt(n)), 3) if n > 1 else None,
    }


def measure(*, rounds: int, sims: int, c: float, players: int, cards: int, seed: int) -> list[dict[str, object]]:
    """Per way: mean points a round, its standard error, seconds taken."""
    rows = []
    for way, sees in WAYS.items():
        t0 = time.perf_counter()
        scores = among_random(rounds, sims=sims, c=c, players=players, cards=cards, sees=sees, seed=seed)
        rows.append({"way": way, "sims": sims, "c": c, **_summary(scores),
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    return rows


async def player_among_random(spec: str, *, rounds: int, players: int, cards: int, seed: int,
                              tables: int = 64) -> np.ndarray:  # fmt: skip
    """The round scores of ``spec``'s player in ``among_random``'s seat on its deals
    (``calibration_round``), ``tables`` at once (a network player's rows batched together); each
    round's RandomBots seeded by the round. ValueError for a bad spec."""
    player = parse_player(spec, seed=seed)
    out = np.zeros(rounds)
    free = asyncio.Semaphore(tables)

    async def one(i: int) -> None:
        async with free:
            r, me = calibration_round(i, players, cards)
            other = RandomBot(seed + 1 + i)  # the round's RandomBots, one generator
            seats = [player if s == me else other for s in range(players)]
            await play_round(r, seats, [spec if s == me else "random" for s in range(players)])
            out[i] = r.scores()[me]

    try:
        await asyncio.gather(*(one(i) for i in range(rounds)))
    finally:
        await aclose_player(player)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ismcts_bound", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1000, help="rounds per way (default 1000)")
    ap.add_argument("--sims", type=parse_ints, default=(1000,), help="simulations a decision, a comma list")
    ap.add_argument("--c", type=parse_floats, default=(10.0,), help="UCB1 constants, a comma list (default 10)")
    ap.add_argument("--players", type=int, default=4)
    ap.add_argument("--cards", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--player",
        action="append",
        default=[],
        metavar="SPEC",
        help="also measure this player blind in the seat (a checkpoint, heuristic, ismcts:...)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    print(f"one ismcts seat among RandomBots, {args.players} players x {args.cards} cards, {args.rounds} rounds a way")
    rows = []
    try:
        for n in args.sims:
            for c in args.c:
                for row in measure(rounds=args.rounds, sims=n, c=c, players=args.players, cards=args.cards,
                                   seed=args.seed):  # fmt: skip
                    rows.append(row)
                    print(f"  sims {n:6d}  c {c:5g}  {row['way']:11s} {row['mean']:6.2f} points a round "
                          f"(standard error {row['stderr']}, {row['seconds']} s)")  # fmt: skip
        for spec in args.player:
            t0 = time.perf_counter()
            scores = run_loop(player_among_random(spec, rounds=args.rounds, players=args.players, cards=args.cards,
                                                  seed=args.seed))  # fmt: skip
            row = {"way": "player", "player": spec, **_summary(scores),
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            rows.append(row)
            print(f"  {spec}: {row['mean']:.2f} points a round (standard error {row['stderr']}, {row['seconds']} s)")
    except ValueError as e:
        ap.error(str(e))
    if args.json:
        print(json.dumps({"players": args.players, "cards": args.cards, "rounds": args.rounds, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
