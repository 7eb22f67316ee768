"""The arena (mirrored matches, confidence intervals, the promotion gate, the CLI) and Elo ratings."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from blobnet.bots import HeuristicBot, RandomBot
from blobnet.config import SearchConfig
from blobnet.net import make_net
from blobnet.player import NetworkPlayer
from blobnet.ratings import (
    JSON_KEYS,
    MAX_ELO,
    EloLadder,
    MatchResult,
    MatchTally,
    elo_from_score,
    gate,
    lower_bound,
    score_from_elo,
    t_quantile,
)  # fmt: skip
from blobnet.rules import View
from clients.match import play_deals, play_match
from clients.players import BotSeat, batched
from clients.pool import SelfPlayPool

ROOT = Path(__file__).resolve().parent.parent


def match(a: object, b: object, **kw: object) -> MatchResult:
    kw = {"players": 4, "cards": 5, "rounds": 400, "seed": 1, "concurrency": 8} | kw
    return asyncio.run(play_match(a, b, **kw))  # type: ignore[arg-type]


def result(diff: float, se: float, deals: int = 200) -> MatchResult:
    half = t_quantile(0.975, deals - 1) * se
    return MatchResult(
        rounds=2 * deals, mean_score_a=5 + diff, mean_score_b=5.0, diff=diff, ci95=(diff - half, diff + half),
        made_rate_a=0.5, made_rate_b=0.5, elo_diff=0.0, deals=deals, se=se, pair_score=0.5, comparisons=4 * deals,
    )  # fmt: skip


class HandRecorder:
    """Wraps a bot and records the hand it holds at its first bid of each round."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.hands: Counter[frozenset[int]] = Counter()

    def act(self, view: View) -> int:
        if view.phase == "bid":
            self.hands[frozenset(view.hand)] += 1
        return self.inner.act(view)  # type: ignore[attr-defined,no-any-return]


# -- the mirror ----------------------------------------------------------------------------------


def test_random_bot_against_itself_comes_out_even() -> None:
    res = match(RandomBot(seed=5), RandomBot(seed=5))
    lo, hi = res.ci95
    assert lo <= 0.0 <= hi
    assert res.rounds == 400 and res.deals == 200
    assert abs(res.mean_score_a - res.mean_score_b - res.diff) < 1e-12


def test_heuristic_bot_against_itself_comes_out_even() -> None:
    res = match(HeuristicBot(seed=3), HeuristicBot(seed=3))
    lo, hi = res.ci95
    assert lo <= 0.0 <= hi
    assert not gate(res, 0.0, 0.95)


def test_heuristic_beats_random_with_the_interval_above_zero() -> None:
    res = match(HeuristicBot(seed=1), RandomBot(seed=2))
    assert res.ci95[0] > 0
    assert res.mean_score_a > res.mean_score_b
    assert res.made_rate_a > res.made_rate_b
    assert res.elo_diff > 0 and res.pair_score > 0.5
    assert gate(res, 0.0, 0.95)
    # seen from the other side everything flips
    rev = match(RandomBot(seed=2), HeuristicBot(seed=1))
    assert rev.ci95[1] < 0 and rev.elo_diff < 0


@pytest.mark.parametrize("players", [3, 4, 5])
def test_both_sides_hold_every_hand_of_every_deal(players: int) -> None:
    a, b = HandRecorder(RandomBot(seed=1)), HandRecorder(RandomBot(seed=2))
    res = match(a, b, players=players, cards=5, rounds=30)
    assert a.hands == b.hands
    assert sum(a.hands.values()) == res.deals * players  # each hand once per side
    assert len(a.hands) == res.deals * players  # and every hand is a different one


def test_odd_rounds_round_up_to_whole_mirrored_deals() -> None:
    res = match(RandomBot(seed=1), RandomBot(seed=2), rounds=7)
    assert res.rounds == 8 and res.deals == 4


def test_the_seed_fixes_the_match() -> None:
    one = match(HeuristicBot(seed=1), RandomBot(seed=2), rounds=60, concurrency=4)
    two = match(HeuristicBot(seed=1), RandomBot(seed=2), rounds=60, concurrency=4)
    assert one.to_dict() == two.to_dict()


def test_a_single_deal_has_an_unbounded_interval_and_never_passes_the_gate() -> None:
    res = match(HeuristicBot(seed=1), RandomBot(seed=2), rounds=2)
    assert res.ci95 == (-math.inf, math.inf)
    assert res.to_dict()["ci95"] == [None, None]
    assert not gate(res, -100.0, 0.95)


def test_a_player_answering_an_illegal_action_is_named() -> None:
    class Cheat:
        def act(self, view: View) -> int:
            return 69  # bid 17: never legal with 5 cards

    with pytest.raises(ValueError, match=r"player b \(Cheat\).*illegal"):
        match(RandomBot(seed=1), Cheat(), rounds=2)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"rounds": 0}, "rounds=0"),
        ({"concurrency": 0}, "concurrency=0"),
        ({"players": 9}, "players=9"),
        ({"cards": 14}, "cards=14"),
    ],
)
def test_impossible_matches_are_refused(kw: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match(RandomBot(), RandomBot(), **kw)


def test_json_dict_has_exactly_the_interface_keys() -> None:
    res = match(HeuristicBot(seed=1), RandomBot(seed=2), rounds=20)
    d = res.to_dict()
    assert tuple(d) == JSON_KEYS
    assert d["rounds"] == 20 and len(d["ci95"]) == 2
    json.dumps(d, allow_nan=False)


# -- statistics and the gate ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "table"), [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)]
)
def test_t_quantile_matches_the_table(df: int, table: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(table, abs=0.01)


def test_gate_promotes_only_when_the_lower_bound_clears_the_margin() -> None:
    assert gate(result(diff=1.0, se=0.3), 0.0, 0.95)  # lower bound about 0.5
    assert not gate(result(diff=1.0, se=0.3), 0.6, 0.95)
    assert gate(result(diff=1.0, se=0.3), 0.4, 0.95)
    assert not gate(result(diff=0.4, se=0.3), 0.0, 0.95)  # ahead, but not surely
    assert gate(result(diff=0.4, se=0.3), 0.0, 0.85)  # less confidence asked for
    assert not gate(result(diff=-1.0, se=0.1), 0.0, 0.95)
    assert lower_bound(result(diff=1.0, se=0.3), 0.95) == pytest.approx(1.0 - 1.6526 * 0.3, abs=1e-3)


def test_gate_refuses_a_confidence_outside_half_to_one() -> None:
    with pytest.raises(ValueError, match="confidence=1.5"):
        gate(result(diff=1.0, se=0.3), 0.0, 1.5)


# -- Elo -----------------------------------------------------------------------------------------


def test_elo_of_even_and_of_three_to_one() -> None:
    assert elo_from_score(0.5) == 0.0
    assert elo_from_score(0.76) == pytest.approx(200, abs=1)
    assert score_from_elo(200) == pytest.approx(0.76, abs=0.001)


@pytest.mark.parametrize("e", [0.1, 0.3, 0.55, 0.9])
def test_elo_is_antisymmetric_and_inverts(e: float) -> None:
    assert elo_from_score(e) == pytest.approx(-elo_from_score(1 - e))
    assert score_from_elo(elo_from_score(e)) == pytest.approx(e)


def test_elo_of_a_sweep_is_clamped() -> None:
    assert elo_from_score(1.0) == pytest.approx(MAX_ELO)
    assert elo_from_score(0.0) == pytest.approx(-MAX_ELO)
    # 100 comparisons all won: read as 99.5 of 100, about +920
    assert elo_from_score(1.0, 100) == pytest.approx(400 * math.log10(0.995 / 0.005))
    with pytest.raises(ValueError, match="score=1.5"):
        elo_from_score(1.5)


TRUE = {"random": 0.0, "heuristic": 300.0, "iter_1": 150.0, "iter_2": 450.0, "iter_3": 520.0}


def test_ladder_recovers_ratings_from_exact_results() -> None:
    ladder = EloLadder()
    names = list(TRUE)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ladder.record(a, b, score_from_elo(TRUE[a] - TRUE[b]), 400)
    got = ladder.ratings()
    assert got["random"] == 0.0
    for name, r in TRUE.items():
        assert got[name] == pytest.approx(r, abs=3)


def test_ladder_recovers_the_order_from_noisy_results_along_a_chain() -> None:
    import random

    rng = random.Random(0)
    ladder = EloLadder()
    names = sorted(TRUE, key=TRUE.get)  # type: ignore[arg-type]
    # each player meets its neighbours and random, as a run's checkpoints do
    for i, a in enumerate(names[1:], 1):
        for b in {names[i - 1], "random"}:
            n = 2000
            wins = sum(rng.random() < score_from_elo(TRUE[a] - TRUE[b]) for _ in range(n))
            ladder.record(a, b, wins / n, n)
    got = ladder.ratings()
    assert sorted(got, key=got.get) == names  # type: ignore[arg-type]
    assert got["iter_3"] == pytest.approx(520, abs=60)


def test_ladder_anchors_the_first_player_without_random_and_stays_finite_on_a_sweep() -> None:
    ladder = EloLadder()
    ladder.record("iter_1", "iter_0", 1.0, 50)
    got = ladder.ratings()
    assert got["iter_1"] == 0.0
    assert -MAX_ELO * 2 < got["iter_0"] < -200


def test_ladder_records_match_results_and_round_trips(tmp_path: Path) -> None:
    ladder = EloLadder()
    res = result(diff=1.0, se=0.3)
    ladder.record("iter_1", "heuristic", res)
    ladder.record("heuristic", "random", 0.8, 400)
    assert ladder.results[0].weight == res.rounds
    again = EloLadder.from_dict(json.loads(json.dumps(ladder.to_dict())))
    assert again.ratings() == ladder.ratings()
    ladder.save(tmp_path / "elo.json")
    assert EloLadder.load(tmp_path / "elo.json").ratings() == ladder.ratings()
    with pytest.raises(ValueError, match="results"):
        EloLadder.from_dict({"players": []})
    with pytest.raises(ValueError, match="against itself"):
        ladder.record("random", "random", 0.5)


# -- the command ---------------------------------------------------------------------------------


def test_arena_command_prints_one_json_object_on_the_last_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clients.cli", "arena", "--a", "random", "--b", "heuristic", "--rounds", "40", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    last = out.strip().splitlines()[-1]
    data = json.loads(last)
    assert list(data) == list(JSON_KEYS)
    assert data["rounds"] == 40
    assert data["diff"] < 0  # random is side a
    assert "mean round score" in out


def test_arena_command_names_a_bad_player() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "arena", "--a", "nonsense", "--b", "random", "--rounds", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr


def test_a_seeded_match_of_network_players_repeats_even_when_batches_fill_up() -> None:
    """Many tables and a small max_batch: batches fill while other tables still search. The
    player's batcher is in-line, so which rows share a batch (and which table draws next from the
    player's generator) never depends on timing."""

    def once() -> MatchResult:
        net = NetworkPlayer(make_net("tiny", seed=1), SearchConfig(dets=2, sims=6, leaves=2), seed=3, max_batch=8,
                            evaluator=batched())  # fmt: skip

        async def main() -> MatchResult:
            try:
                return await play_match(net, HeuristicBot(seed=2), players=4, cards=3, rounds=24, seed=5,
                                        concurrency=12)  # fmt: skip
            finally:
                await net.aclose()

        return asyncio.run(main())

    first, second = once(), once()
    assert (first.diff, first.ci95, first.made_rate_a) == (second.diff, second.ci95, second.made_rate_a)


# -- a match split over processes ----------------------------------------------------------------


def test_the_merged_shares_of_a_match_give_exactly_the_whole_matchs_result() -> None:
    rng = random.Random(4)
    deals, players = 30, 5
    rounds = []
    for deal in range(deals):
        for swapped in (False, True):
            b_seats = [(s % 2 == 1) != swapped for s in range(players)]
            made = [rng.random() < 0.4 for _ in range(players)]
            scores = [10 + rng.randrange(4) if m else 0 for m in made]
            rounds.append((deal, b_seats, scores, made))
    whole = MatchTally(deals, players)
    for r in rounds:
        whole.add(*r)
    shares = [MatchTally(deals, players) for _ in range(3)]
    for r in reversed(rounds):  # another order, each deal in the share of its number mod 3
        shares[r[0] % 3].add(*r)
    merged = shares[2]
    merged.merge(shares[0])
    merged.merge(shares[1])
    assert merged.result(1.0) == whole.result(1.0)
    assert whole.result().ci95[0] < whole.result().ci95[1]  # a real interval, not a degenerate one
    with pytest.raises(ValueError, match="not shares of one match"):
        merged.merge(MatchTally(deals + 1, players))


def test_a_match_split_over_helper_processes_equals_it_played_in_one() -> None:
    kw: dict[str, Any] = {"players": 4, "cards": 3, "rounds": 30, "seed": 2, "concurrency": 6}
    pool = SelfPlayPool(2)
    try:
        # Deterministic players: the split match is the one-process match, seconds apart.
        split = asyncio.run(pool.split_match(BotSeat("heuristic", 1), BotSeat("heuristic", 2), **kw))
        one = match(HeuristicBot(seed=1), HeuristicBot(seed=2), **kw)
        assert dataclasses.replace(split, seconds=0.0) == dataclasses.replace(one, seconds=0.0)
        # Seeded random players: each share is what play_deals plays with the same seeds here.
        split = asyncio.run(pool.split_match(BotSeat("random", 3), BotSeat("heuristic", 4), **kw))
    finally:
        pool.close()
    shares = [
        asyncio.run(play_deals(RandomBot(seed=3), HeuristicBot(seed=4), **(kw | {"concurrency": 3}), first_deal=w,
                               deal_stride=2))
        for w in range(2)
    ]  # fmt: skip
    shares[0].merge(shares[1])
    assert dataclasses.replace(split, seconds=0.0) == shares[0].result()
    assert split.rounds == 30 and split.deals == 15 and split.diff < 0


def test_arena_command_gives_the_same_result_on_one_worker_or_two() -> None:
    def arena(workers: int) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "clients.cli", "arena", "--a", "heuristic", "--b", "heuristic", "--rounds", "24",
             "--cards", "3", "--workers", str(workers), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    one, two = arena(1), arena(2)
    assert one == two and one["rounds"] == 24 and 0 < one["made_rate_a"] < 1
