"""The self-play engine: examples, counters, full games, faults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from blobnet.aio import run_now
from blobnet.config import GameConfig, SearchConfig
from blobnet.encode import OFFSETS, WIDTH
from blobnet.evaluator import FreeEvaluator
from blobnet.replay import Examples
from clients.cli import main
from clients.selfplay import EngineError, SelfPlayEngine

FAST = SearchConfig(dets=2, sims=8, leaves=2)


def play(rounds: int, *, concurrency: int = 4, game: GameConfig | None = None, evaluator=None, seed: int = 0,  # type: ignore[no-untyped-def]
         opponents: tuple[str, ...] = (), search: SearchConfig = FAST):  # fmt: skip
    parts: list[Examples] = []
    engine = SelfPlayEngine(
        evaluator or FreeEvaluator(),
        search=search,
        game=game or GameConfig(players=[4], cards=[3]),
        concurrency=concurrency,
        seed=seed,
        sink=parts.append,
        opponents=opponents,
    )
    stats = asyncio.run(engine.run(rounds))
    return stats, Examples.concat(parts)


def test_engine_plays_the_rounds_asked_and_streams_well_formed_examples():
    stats, ex = play(12)
    assert stats.rounds == 12
    # each searched decision: the acting seat's row, then the same position seen by another seat
    assert len(ex) == stats.examples == 2 * stats.searched_decisions > 0
    assert ex.features.shape == (len(ex), WIDTH) and ex.legal.shape == (len(ex), 70)
    to_play = ex.features[:, OFFSETS["to_play"] : OFFSETS["to_play"] + 8]
    assert (to_play[0::2, 0] == 1).all() and (to_play[1::2, 1:4].sum(axis=1) == 1).all()
    np.testing.assert_allclose(ex.policy[0::2].sum(axis=1), 1.0, rtol=1e-5)
    assert (ex.policy[1::2] == 0).all()  # the onlooker's row is value-only
    assert not (ex.policy[~ex.legal] > 0).any()  # targets only on legal actions
    assert (ex.legal.sum(axis=1) >= 2).all()  # forced moves are not searched, so not examples
    assert stats.decisions == 12 * 4 * (3 + 1)  # 4 bids and 3 cards per seat


def test_making_an_engine_loads_the_kernels_without_its_evaluator_or_its_counts():
    class Counting(FreeEvaluator):
        requests = 0

        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            self.requests += 1
            return await super().evaluate_many(features, legal)

    ev = Counting()
    engine = SelfPlayEngine(ev, search=FAST, game=GameConfig(players=[4], cards=[3]), concurrency=2)
    assert ev.requests == 0 and engine.search.simulations == engine.search.evaluations == 0
    assert engine.search.cache.stats.sum() == 0
    asyncio.run(engine.run(2))
    assert ev.requests > 0 and engine.stats.rounds == 2


def test_run_now_runs_a_coroutine_that_never_waits_and_refuses_one_that_does():
    async def add(a: int, b: int) -> int:
        return a + b

    async def waits() -> None:
        await asyncio.sleep(0)

    assert run_now(add(2, 3)) == 5
    with pytest.raises(RuntimeError, match="waited"):
        run_now(waits())


def test_value_targets_are_the_round_scores_relative_to_the_viewing_seat():
    _, ex = play(6)
    scale = 10 + 3
    scores = ex.value[:, :4] * scale
    # every score is 0 or 10 + bid (bid 0..3), and seats past the table are padding
    assert set(np.round(scores).astype(int).ravel()) <= {0, 10, 11, 12, 13}
    assert (ex.value[:, 4:] == 0).all()
    # the onlooker's targets are the acting seat's, turned to its seat: the acting seat sits at
    # relative seat r of the onlooker (its to_play field), so onlooker[k] = acting[k - r]
    for acting, onlooker, feats in zip(ex.value[0::2], ex.value[1::2], ex.features[1::2]):
        r = int(np.argmax(feats[OFFSETS["to_play"] : OFFSETS["to_play"] + 8]))
        assert r in (1, 2, 3)
        np.testing.assert_array_equal(onlooker[:4], [acting[(k - r) % 4] for k in range(4)])


def test_the_completed_q_target_changes_the_policy_targets_and_nothing_else():
    _, plain = play(6, search=msgspec.structs.replace(FAST, policy_target="visits"))
    _, gumbel = play(6)  # the default target
    for name in ("features", "legal", "value"):  # the same moves, so the same rows and outcomes
        assert np.array_equal(getattr(gumbel, name), getattr(plain, name)), name
    acting = gumbel.policy[0::2]
    np.testing.assert_allclose(acting.sum(axis=1), 1.0, rtol=1e-5)
    assert not (gumbel.policy[~gumbel.legal] > 0).any() and (gumbel.policy[1::2] == 0).all()
    # uniform priors: every legal action keeps some of the target, visited or not
    assert (acting[gumbel.legal[0::2]] > 0).all() and not np.allclose(acting, plain.policy[0::2])


def test_the_selfplay_command_takes_the_policy_target_and_names_a_bad_one(tmp_path, capsys):
    base = ["selfplay", "--free", "--workers", "1", "--concurrency", "2", "--rounds", "2", "--dets", "1",
            "--sims", "4", "--json"]  # fmt: skip
    for target in ("visits", "completed_q"):
        assert main([*base, "--policy-target", target, "--out", str(tmp_path / f"{target}.npz")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rounds"] == 2
    shares = [np.load(tmp_path / f"{target}.npz")["policy"][0::2] * 4 for target in ("visits", "completed_q")]
    assert np.allclose(shares[0], np.round(shares[0]))  # quarters: 4 simulations' visit shares
    assert not np.allclose(shares[1], np.round(shares[1]))
    with pytest.raises(SystemExit) as bad:
        main([*base, "--policy-target", "gumbel"])
    assert bad.value.code == 2 and "--policy-target" in capsys.readouterr().err


def test_the_selfplay_command_in_bf16_takes_the_engine_that_runs_it(capsys):
    base = ["selfplay", "--preset", "tiny", "--workers", "1", "--concurrency", "2", "--rounds", "2", "--dets", "1",
            "--sims", "4", "--dtype", "bfloat16", "--json"]  # fmt: skip
    assert main(base) == 0  # eager, where the default engine (onnx) runs float32 only
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rounds"] == 2
    assert main([*base, "--engine", "onnx"]) == 2
    assert "engine onnx runs float32 only" in capsys.readouterr().err


def test_full_games_follow_the_schedule_and_carry_game_context():
    stats, ex = play(20, concurrency=2, game=GameConfig(mode="games", players=[3], start_cards=3))
    assert stats.rounds == 20 and stats.games >= 2
    assert (ex.features[:, OFFSETS["in_game"]] == 1).all()


def test_same_seed_same_examples():
    _, a = play(6, concurrency=1, seed=3)
    _, b = play(6, concurrency=1, seed=3)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.policy, b.policy)


class Exploding(FreeEvaluator):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.left = after

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        self.left -= len(legal)
        if self.left < 0:
            raise RuntimeError("the net fell over")
        out = await super().evaluate_many(features, legal)  # reads its arrays before its first await
        await asyncio.sleep(0)
        return out


def test_a_failing_game_stops_the_engine_with_its_seed_and_keeps_finished_examples():
    parts: list[Examples] = []
    engine = SelfPlayEngine(
        Exploding(after=1200), search=FAST, game=GameConfig(players=[4], cards=[3]), concurrency=3, seed=9,
        sink=parts.append,
    )  # fmt: skip
    with pytest.raises(EngineError, match=r"seed \[9, \d+\].*the net fell over"):
        asyncio.run(engine.run(1000))
    assert engine.stats.rounds >= 1 and sum(len(p) for p in parts) == engine.stats.examples


def test_opponents_take_their_seats_and_only_the_networks_decisions_are_examples():
    """Three bots at a table of four: one network seat a round, so at most one bid and three plays
    searched a round (forced moves are not), where four seats search without them."""
    mixed, ex = play(16, opponents=("heuristic", "ismcts:sims=50", "random"))
    alone, _ = play(16)
    assert mixed.rounds == 16 and len(ex) == 2 * mixed.searched_decisions
    assert 16 <= mixed.searched_decisions <= 16 * (1 + 3) < alone.searched_decisions
    assert mixed.decisions == alone.decisions == 16 * 4 * (3 + 1)  # every seat's moves are made
    again, ex2 = play(16, opponents=("heuristic", "ismcts:sims=50", "random"), concurrency=1)
    assert again.searched_decisions == mixed.searched_decisions  # seats and bots drawn from each game's seed
    rows = lambda e: np.sort(np.concatenate([e.features, e.value], axis=1), axis=0)  # noqa: E731
    np.testing.assert_array_equal(rows(ex), rows(ex2))


def test_in_games_mode_a_bot_keeps_its_seat_for_the_whole_game(monkeypatch: pytest.MonkeyPatch) -> None:
    seats: dict[np.random.Generator, set[tuple[int, ...]]] = {}  # a game's generator -> its rounds' bot seats
    play_round = SelfPlayEngine._play_round

    async def spy(self, r, rng, bots):  # type: ignore[no-untyped-def]
        seats.setdefault(rng, set()).add(tuple(sorted(bots)))
        await play_round(self, r, rng, bots)

    monkeypatch.setattr(SelfPlayEngine, "_play_round", spy)
    game = GameConfig(mode="games", players=[4], start_cards=2)
    stats, _ = play(60, concurrency=1, game=game, opponents=("random", "random"))
    assert stats.games >= 6 and len(seats) == stats.games
    assert all(len(s) == 1 for s in seats.values())  # one pair of seats a game, every round
    assert len(set().union(*seats.values())) > 1  # drawn for each game


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1, "opponents": ("heuristic", "chess engine")}, "bot 'chess engine'"),
        (
            {"concurrency": 1, "opponents": ("random",) * 4},
            "4 opponents at tables of 4 players: leave the network a seat",
        ),
    ],
)
def test_engine_settings_out_of_range_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelfPlayEngine(FreeEvaluator(), search=FAST, game=GameConfig(), **kwargs)


def test_rounds_below_one_is_refused():
    engine = SelfPlayEngine(FreeEvaluator(), search=FAST, game=GameConfig(), concurrency=1)
    with pytest.raises(ValueError, match="rounds"):
        asyncio.run(engine.run(0))


def test_a_self_play_smoke_run_passes_numba_bounds_checks(tmp_path):
    """The compiled kernels (rules, deals, encoding, trees) recompiled with bounds checking, in a
    fresh cache, through a full game of 5 players (every hand size from 7 down to 1 and back, the
    game context in every row), then the IS-MCTS baseline: an index bug fails here instead of
    corrupting memory."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    cmd = [sys.executable, "-m", "clients.cli", "selfplay", "--players", "5", "--games", "--dets", "2", "--sims", "12",
           "--leaves", "3", "--concurrency", "2", "--rounds", "19", "--workers", "1", "--free", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rounds"] == 19
    # the IS-MCTS baseline at the largest bid (3 x 17: actions up to 69) and the largest table
    for players, cards in ((3, 17), (8, 6)):
        cmd = [sys.executable, "-m", "clients.cli", "arena", "--a", "ismcts:sims=40", "--b", "random",
               "--players", str(players), "--cards", str(cards), "--rounds", "2", "--json"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["rounds"] == 2
