"""How fast are the rules? Random 4-player 5-card rounds per second, checked and fast path.

    python -m bench.rules_speed [--json] [--rounds N] [--repeats 5] [--check]

Three numbers, each the median of ``--repeats`` timed runs after one warm-up run:

- checked: rounds per second through the public API a client uses: ``Round.deal(seed=...)``,
  ``legal_actions()`` and ``play()``, which checks every action;
- fast: rounds per second through the search's path: ``Round.deal(rng=...)`` with one shared
  numpy Generator, ``legal()`` and ``apply()``, no checks;
- clone+apply: microseconds for ``clone()`` and one ``apply()`` on positions taken from random
  rounds (bids and plays mixed as they come), the cost of one step of a tree search.

Actions are chosen uniformly with ``random.Random().random`` on both paths, so the two rates differ by
the rules' cost alone. The project's floors: 20,000 rounds/s fast, 5,000 checked.
With ``--json`` the last line of output is one JSON object; ``--check`` exits 1 below a floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from blobnet.rules import TRUMP_CYCLE, Round

PLAYERS, CARDS = 4, 5
FLOOR_FAST = 20_000.0  # rounds per second
FLOOR_CHECKED = 5_000.0  # rounds per second


def _deal(i: int, **source: Any) -> Round:
    """Round ``i`` of a run: trump and dealer in turn, the cards from ``source`` (``seed=`` or ``rng=``)."""
    return Round.deal(
        players=PLAYERS, cards=CARDS, trump=TRUMP_CYCLE[i % len(TRUMP_CYCLE)], dealer=i % PLAYERS, **source
    )


def checked_rounds(n: int, seed: int) -> None:
    """``n`` random rounds through ``Round.deal(seed=)``, ``legal_actions`` and ``play``."""
    rand = random.Random(seed).random
    for i in range(n):
        r = _deal(i, seed=seed + i)
        while r.to_play is not None:
            acts = r.legal_actions()
            r.play(acts[int(rand() * len(acts))])


def fast_rounds(n: int, seed: int) -> None:
    """``n`` random rounds through ``Round.deal(rng=)``, ``legal`` and ``apply``."""
    rand = random.Random(seed).random
    rng = np.random.default_rng(seed)
    for i in range(n):
        r = _deal(i, rng=rng)
        legal, apply = r.legal, r.apply
        while r.to_play is not None:
            acts = legal()
            apply(acts[int(rand() * len(acts))])  # a uniform pick, cheaper than Random.choice


def positions(n: int, seed: int) -> list[tuple[Round, int]]:
    """``n`` (round, legal action) pairs from random rounds, every step of each round."""
    pick = random.Random(seed)
    rng = np.random.default_rng(seed)
    out: list[tuple[Round, int]] = []
    i = 0
    while len(out) < n:
        r = _deal(i, rng=rng)
        while r.to_play is not None and len(out) < n:
            a = pick.choice(r.legal())
            out.append((r.clone(), a))
            r.apply(a)
        i += 1
    return out


def clone_apply(steps: list[tuple[Round, int]]) -> None:
    for r, a in steps:
        r.clone().apply(a)


def timed(fn: Callable[[], None], repeats: int) -> list[float]:
    """Seconds per call of ``fn``: one warm-up call, then ``repeats`` timed ones."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(*, rounds: int, repeats: int, seed: int = 0) -> dict[str, float | int | str | bool]:
    checked = timed(lambda: checked_rounds(rounds, seed), repeats)
    fast = timed(lambda: fast_rounds(rounds, seed), repeats)
    steps = positions(rounds * 4, seed)
    step = timed(lambda: clone_apply(steps), repeats)
    checked_rate = rounds / statistics.median(checked)
    fast_rate = rounds / statistics.median(fast)
    return {
        "players": PLAYERS,
        "cards": CARDS,
        "rounds": rounds,
        "repeats": repeats,
        "checked_rounds_per_s": round(checked_rate, 1),
        "fast_rounds_per_s": round(fast_rate, 1),
        "clone_apply_us": round(statistics.median(step) / len(steps) * 1e6, 3),
        "checked_floor": FLOOR_CHECKED,
        "fast_floor": FLOOR_FAST,
        "checked_ok": checked_rate >= FLOOR_CHECKED,
        "fast_ok": fast_rate >= FLOOR_FAST,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rules_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5000, help="rounds per timed run (default 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported (default 5)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--check", action="store_true", help="exit 1 when a rate is below its floor")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        ap.error("--rounds and --repeats must be at least 1")
    res = measure(rounds=args.rounds, repeats=args.repeats)
    print(f"rules speed, {PLAYERS} players x {CARDS} cards, median of {args.repeats} runs of {args.rounds} rounds")
    print(f"{'path':<14}{'rate':>16}{'floor':>14}  ok")
    print(f"{'checked':<14}{res['checked_rounds_per_s']:>12,.0f} r/s{FLOOR_CHECKED:>10,.0f} r/s  {res['checked_ok']}")
    print(f"{'fast':<14}{res['fast_rounds_per_s']:>12,.0f} r/s{FLOOR_FAST:>10,.0f} r/s  {res['fast_ok']}")
    print(f"{'clone+apply':<14}{res['clone_apply_us']:>13.2f} us")
    if args.json:
        print(json.dumps(res))
    if args.check and not (res["checked_ok"] and res["fast_ok"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
