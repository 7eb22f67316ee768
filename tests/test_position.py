"""The compiled rules (blobnet.position) against the checked ones (blobnet.rules), move by move."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.position import STATE, apply, legal, pack, pack_view, scores, unpack
from blobnet.rules import Game, Round, standard_schedule

ROUNDS_PER_EXAMPLE = 5  # 2,000 examples: 10,000 random rounds and 10,000 rounds of games


def agree_move_by_move(r: Round, pick: random.Random, *, hook: list[int]) -> None:
    """Plays ``r`` out with random legal moves through both paths, comparing every position."""
    st_ = pack(r)
    ids = np.zeros(N_ACTIONS, np.int64)
    while True:
        k = legal(st_, ids)
        assert ids[:k].tolist() == r.legal(), unpack(st_)
        if r.to_play is None:
            break
        if r.phase == "bid" and r.to_play == r.dealer and len(r.legal()) == r.cards:
            hook[0] += 1  # the dealer's bid was hooked
        a = pick.choice(r.legal())
        r.play(a)
        apply(st_, a)
        assert np.array_equal(st_, pack(r)), (unpack(st_), r)
    pts = np.zeros(N_VALUES, np.int64)
    scores(st_, pts)
    assert pts[: r.players].tolist() == r.scores()


@settings(max_examples=2_000, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), players=st.integers(3, 8), trump=st.sampled_from([None, 0, 1, 2, 3]))
def test_compiled_rules_agree_with_round_on_random_rounds_and_games(seed: int, players: int, trump: int | None):
    pick = random.Random(seed)
    hook = [0]
    for i in range(ROUNDS_PER_EXAMPLE):
        cards = pick.randint(1, 52 // players)  # every hand size
        r = Round.deal(players=players, cards=cards, trump=trump, dealer=pick.randrange(players), seed=seed + i)
        agree_move_by_move(r, pick, hook=hook)
    g = Game(players=players, schedule=standard_schedule(players), rng=np.random.default_rng(seed))
    for _ in range(ROUNDS_PER_EXAMPLE):  # the game context travels in the state
        agree_move_by_move(g.round, pick, hook=hook)
        g.advance()


def test_the_hook_is_exercised_by_random_play():
    pick = random.Random(3)
    hook = [0]
    for i in range(200):
        agree_move_by_move(Round.deal(players=4, cards=2, trump=None, dealer=i % 4, seed=i), pick, hook=hook)
    assert hook[0] > 10


def test_a_view_packs_only_what_its_seat_knows():
    r = Round.deal(players=5, cards=4, trump=2, dealer=1, seed=8)
    pick = random.Random(0)
    for _ in range(9):
        r.play(pick.choice(r.legal()))
    seat = (r.to_play + 1) % 5  # type: ignore[operator]
    known, full = pack_view(r.view(seat)), pack(r)
    assert known.shape == (STATE,)
    view = unpack(known)
    assert view["hands"] == [h if s == seat else [] for s, h in enumerate(r.hands)]
    for key in ("bids", "tricks_won", "trick", "voids", "to_play", "trump", "dealer"):
        assert view[key] == unpack(full)[key]


@pytest.mark.parametrize("over", [False, True])
def test_no_legal_action_once_the_round_is_over(over: bool):
    r = Round.deal(players=3, cards=1, trump=None, dealer=0, seed=1)
    if over:
        while r.to_play is not None:
            r.play(r.legal()[0])
    ids = np.zeros(N_ACTIONS, np.int64)
    assert legal(pack(r), ids) == len(r.legal())
