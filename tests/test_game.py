"""A whole game against RULES.md: the schedule, dealer and trump rotation, totals, the end; and the
round helpers the drivers play with (``choices``, ``random_round``)."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobnet.rules import TRUMP_CYCLE, Game, IllegalMove, Round, choices, random_round, standard_schedule

TRUMPS = [0, 1, 2, 3, None]  # S H C D none


def play_out(g: Game, seed: int) -> list[tuple[int, int | None, int, int, list[list[int]]]]:
    """Plays ``g`` to the end with random legal actions; per round (cards, trump, dealer, index, deal)."""
    pick = random.Random(seed)
    seen = []
    while not g.is_over:
        r = g.round
        if r.phase == "bid" and r.n_bids == 0:
            seen.append((r.cards, r.trump, r.dealer, g.round_index, r.hands))
        g.play(pick.choice(g.legal_actions()))
    return seen


def test_standard_schedule_5_players_from_7() -> None:
    assert standard_schedule(5, 7) == [7, 6, 5, 4, 3, 2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7]
    assert len(standard_schedule(5, 7)) == 17


@pytest.mark.parametrize("players", range(3, 9))
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_standard_schedule_is_down_ones_then_up(players: int, k: int) -> None:
    assert standard_schedule(players, k) == list(range(k, 1, -1)) + [1] * players + list(range(2, k + 1))


@pytest.mark.parametrize(("players", "k"), [(3, 7), (4, 7), (5, 7), (6, 7), (7, 7), (8, 6)])
def test_default_start_cards_is_min_7_and_52_div_players(players: int, k: int) -> None:
    assert k == min(7, 52 // players)
    assert standard_schedule(players)[0] == k
    assert Game.new(players=players, seed=0).schedule == tuple(standard_schedule(players, k))


@pytest.mark.parametrize(("players", "k"), [(8, 7), (4, 14), (3, 18), (5, 11)])
def test_start_cards_times_players_over_52_rejected(players: int, k: int) -> None:
    with pytest.raises(ValueError, match="may not exceed 52"):
        standard_schedule(players, k)
    with pytest.raises(ValueError, match="may not exceed 52"):
        Game.new(players=players, start_cards=k, seed=0)


def test_big_start_cards_allowed_when_they_fit() -> None:
    assert standard_schedule(3, 17)[0] == 17
    assert Game.new(players=4, start_cards=13, seed=0).round.cards == 13


@pytest.mark.parametrize("players", [2, 9])
def test_game_players_outside_3_to_8_rejected(players: int) -> None:
    with pytest.raises(ValueError, match="3 to 8 players"):
        Game.new(players=players, seed=0)


def test_game_start_cards_below_one_rejected() -> None:
    with pytest.raises(ValueError, match="cards=0"):
        Game.new(players=4, start_cards=0, seed=0)


def test_trump_rotates_s_h_c_d_none() -> None:
    rounds = play_out(Game.new(players=5, start_cards=7, seed=3), seed=3)
    assert [t for _, t, _, _, _ in rounds] == [TRUMPS[r % 5] for r in range(17)]
    assert [t for _, t, _, _, _ in rounds][:6] == [0, 1, 2, 3, None, 0]


@pytest.mark.parametrize("players", [3, 4, 5, 8])
def test_dealer_rotates_r_mod_n(players: int) -> None:
    rounds = play_out(Game.new(players=players, start_cards=3, seed=players), seed=players)
    assert [d for _, _, d, _, _ in rounds] == [r % players for r in range(len(rounds))]


def test_rounds_follow_schedule_from_fresh_decks() -> None:
    g = Game.new(players=4, start_cards=5, seed=11)
    rounds = play_out(g, seed=11)
    assert [c for c, _, _, _, _ in rounds] == list(g.schedule)
    assert [i for _, _, _, i, _ in rounds] == list(range(len(g.schedule)))
    for n_cards, _, _, _, hands in rounds:
        flat = [c for h in hands for c in h]
        assert [len(h) for h in hands] == [n_cards] * 4
        assert len(set(flat)) == len(flat)
    # fresh shuffles: the deals differ from round to round
    assert len({tuple(map(tuple, h)) for _, _, _, _, h in rounds}) == len(rounds)


def test_first_bid_of_each_round_is_left_of_its_dealer() -> None:
    g = Game.new(players=4, start_cards=3, seed=5)
    pick = random.Random(5)
    while not g.is_over:
        r = g.round
        if r.phase == "bid" and r.n_bids == 0:
            assert g.to_play == (g.round_index % 4 + 1) % 4
        g.play(pick.choice(g.legal_actions()))


def test_same_seed_same_game() -> None:
    a = play_out(Game.new(players=4, start_cards=4, seed=9), seed=1)
    b = play_out(Game.new(players=4, start_cards=4, seed=9), seed=1)
    c = play_out(Game.new(players=4, start_cards=4, seed=10), seed=1)
    assert a == b
    assert a != c


def test_refused_move_leaves_game_as_it_was() -> None:
    g = Game.new(players=4, start_cards=3, seed=2)
    g.play(g.legal_actions()[0])
    before = (copy.deepcopy(g.totals), g.round_index, [copy.deepcopy(getattr(g.round, k)) for k in Round.__slots__])
    for bad in (-1, 70, "AS", 2.0, 0 if 0 not in g.legal_actions() else 51):
        with pytest.raises(IllegalMove):
            g.play(bad)  # type: ignore[arg-type]
    after = (g.totals, g.round_index, [getattr(g.round, k) for k in Round.__slots__])
    assert after == before


def test_game_over_refuses_moves() -> None:
    g = Game.new(players=3, start_cards=2, seed=4)
    play_out(g, seed=4)
    assert g.is_over
    assert g.to_play is None
    assert g.legal_actions() == []
    with pytest.raises(IllegalMove, match="game is over"):
        g.play(52)


def test_winners_are_highest_totals_ties_shared() -> None:
    g = Game.new(players=4, start_cards=2, seed=6)
    with pytest.raises(ValueError, match="not over"):
        g.winners()
    play_out(g, seed=6)
    best = max(g.totals)
    assert g.winners() == [s for s in range(4) if g.totals[s] == best]
    g.totals = [30, 42, 42, 7]  # a tie at the top is shared
    assert g.winners() == [1, 2]


def test_game_view_carries_totals_round_index_and_schedule() -> None:
    g = Game.new(players=4, start_cards=3, seed=8)
    pick = random.Random(8)
    while not g.is_over:
        v = g.view(g.to_play)  # type: ignore[arg-type]
        assert v.totals == tuple(g.totals)
        assert v.round_index == g.round_index
        assert v.schedule == g.schedule
        assert v.cards == g.schedule[g.round_index]
        assert v.legal_actions() == g.legal_actions()
        g.play(pick.choice(g.legal_actions()))


def test_single_round_view_has_no_game_context() -> None:
    v = Round.deal(players=4, cards=3, trump=None, dealer=0, seed=0).view(1)
    assert v.context is None and v.totals is None and v.round_index is None and v.schedule is None


@settings(max_examples=25, deadline=None)
@given(players=st.integers(3, 8), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_game_totals_are_sums_of_round_scores(players: int, data: st.DataObject, seed: int) -> None:
    k = data.draw(st.integers(1, min(7, 52 // players)), label="start_cards")
    g = Game.new(players=players, start_cards=k, seed=seed)
    fast = Game.new(players=players, start_cards=k, seed=seed)  # the same game on the unchecked path
    pick = random.Random(seed)
    while not g.is_over:
        a = pick.choice(g.legal_actions())
        g.play(a)
        fast.apply(a)
        done = g.history
        assert g.totals == [sum(r.scores()[s] for r in done) for s in range(players)]
    assert len(g.history) == len(g.schedule) == 2 * (k - 1) + players
    for i, r in enumerate(g.history):
        assert (r.cards, r.trump, r.dealer) == (g.schedule[i], TRUMPS[i % 5], i % players)
        assert r.scores() == [10 + b if b == t else 0 for b, t in zip(r.bids, r.tricks_won, strict=True)]  # type: ignore[operator]
        assert r.context is not None and r.context.round_index == i
        assert list(r.context.totals) == [sum(q.scores()[s] for q in g.history[:i]) for s in range(players)]
    assert fast.totals == g.totals and fast.is_over


# -- what the drivers use to play rounds ----------------------------------------------------------


def test_choices_yields_only_real_choices_and_makes_the_forced_moves() -> None:
    r = Round.deal(players=3, cards=1, trump=None, dealer=2, seed=4)
    asked = []
    for seat in choices(r):
        legal = r.legal()
        assert seat == r.to_play and len(legal) > 1
        asked.append((r.phase, seat))
        r.play(legal[-1])
    assert r.phase == "over" and r.scores()
    assert [p for p, _ in asked] == ["bid"] * 3  # one card each: every play is forced, only the bids ask


def test_random_round_draws_trump_dealer_and_deal_from_the_generator() -> None:
    rounds = [random_round(5, 4, np.random.default_rng([7, i])) for i in range(60)]
    again = random_round(5, 4, np.random.default_rng([7, 0]))
    assert (again.trump, again.dealer, again.hands) == (rounds[0].trump, rounds[0].dealer, rounds[0].hands)
    assert {r.trump for r in rounds} == set(TRUMP_CYCLE) and {r.dealer for r in rounds} == set(range(5))
    assert all(len(h) == 4 for r in rounds for h in r.hands)
