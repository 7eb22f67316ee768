"""How long a player thinks: milliseconds a searched decision, each player alone at one table.

    python -m bench.think_time SPEC [SPEC ...] [--players 4] [--cards 5] [--rounds 75] [--warmup 5]
                                               [--repeats 3] [--seed 0] [--json]

A SPEC is any player spec (``clients.players.parse_player``: ``ismcts:sims=1000,c=10``,
``runs/x/best.pt:dets=3,sims=20,leaves=5``). The player sits in every seat of ``--rounds`` random
rounds in turn (``blobnet.rules.random_round``), its ``act_async`` timed on each decision with more
than one legal action (a forced move is not searched by any player here), after ``--warmup`` rounds
that compile its kernels and warm its caches. The players take turns, ``--repeats`` times, each
turn a player made afresh (one at a time: no other player's memory in its way), each repeat on
fresh deals that every player meets; the figure of a player is the median of its repeats' means,
so a machine slower for a while slows every player alike. A network player asks its own
batcher on this process's threads, exactly as it does when it plays in the arena or the web app.

What issue #14 asks of a long recipe's model: to beat ``ismcts:sims=1000`` at no more thinking time
a decision than the baseline takes. With ``--json`` the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np

from blobnet.player import Player, aclose_player, act_async
from blobnet.rules import random_round
from clients.players import parse_player


async def decision_times(player: Player, *, players: int, cards: int, rounds: int, seed: int) -> list[float]:
    """Seconds of each searched decision of ``player`` over ``rounds`` deals of ``seed``."""
    out = []
    for i in range(rounds):
        r = random_round(players, cards, np.random.default_rng([seed, i]))
        while r.to_play is not None:
            view = r.view(r.to_play)
            searched = len(view.legal_or_raise()) > 1
            t0 = time.perf_counter()
            action = await act_async(player, view)
            if searched:
                out.append(time.perf_counter() - t0)
            r.play(action)
    return out


async def measure(
    specs: list[str], *, players: int, cards: int, rounds: int, warmup: int, repeats: int, seed: int
) -> list[dict[str, object]]:
    """Per spec: the mean milliseconds a searched decision of each repeat, their median, decisions timed."""
    for spec in specs:  # a bad spec fails before anything runs
        await aclose_player(parse_player(spec, seed))
    means: list[list[float]] = [[] for _ in specs]
    counts = [0] * len(specs)
    for rep in range(repeats):
        for k, spec in enumerate(specs):
            # a player of its own each turn: nothing of another player's stays in its way
            player = parse_player(spec, seed)
            try:
                await decision_times(player, players=players, cards=cards, rounds=warmup, seed=seed + 1_000_003)
                times = await decision_times(player, players=players, cards=cards, rounds=rounds, seed=seed + rep)
            finally:
                await aclose_player(player)
            means[k].append(1e3 * statistics.fmean(times))
            counts[k] += len(times)
    return [
        {"spec": spec, "ms": round(statistics.median(m), 3), "runs_ms": [round(x, 3) for x in m], "decisions": n}
        for spec, m, n in zip(specs, means, counts, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.think_time", description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+", metavar="SPEC", help="player specs, as blobnet arena takes them")
    ap.add_argument("--players", type=int, default=4)
    ap.add_argument("--cards", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=75, help="rounds per repeat and player (default 75)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds per player first (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="turns of every player (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--rounds and --repeats must be at least 1, --warmup at least 0")
    try:
        rows = asyncio.run(measure(args.specs, players=args.players, cards=args.cards, rounds=args.rounds,
                                   warmup=args.warmup, repeats=args.repeats, seed=args.seed))  # fmt: skip
    except ValueError as e:
        ap.error(str(e))
    print(
        f"thinking time a searched decision, {args.players} players x {args.cards} cards, one table, "
        f"median of {args.repeats} repeats of {args.rounds} rounds"
    )
    for row in rows:
        runs = ", ".join(f"{x:.2f}" for x in row["runs_ms"])  # type: ignore[attr-defined]
        print(f"  {row['ms']:7.2f} ms  ({runs}; {row['decisions']} decisions)  {row['spec']}")
    if args.json:
        print(json.dumps({"players": args.players, "cards": args.cards, "rounds": args.rounds, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
