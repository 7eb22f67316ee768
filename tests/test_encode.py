"""The encoder: one row per position, relative seats, nothing hidden, both paths identical."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blobnet.cards import BID0
from blobnet.encode import FIELDS, OFFSETS, WIDTH, encode, encode_round, encode_rounds
from blobnet.rules import Game, Round
from blobnet.views import determinize


def row_of(r: Round) -> np.ndarray:
    row = np.full(WIDTH, 7.0, dtype=np.float32)  # stale values must be overwritten
    encode_round(r, row)
    return row


def test_fields_tile_the_row():
    assert sum(w for _, w in FIELDS) == WIDTH
    ends = [OFFSETS[name] + w for name, w in FIELDS]
    assert ends[:-1] == [OFFSETS[name] for name, _ in FIELDS[1:]]


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 8), st.integers(0, 10_000))
def test_view_and_round_paths_agree_over_a_whole_game(players, seed):
    """From the acting seat and from any other seat (the search's view of another seat's turn)."""
    g = Game.new(players=players, start_cards=min(3, 52 // players), seed=seed)
    rng = np.random.default_rng(seed)
    a = np.zeros(WIDTH, np.float32)
    b = np.zeros((1, WIDTH), np.float32)
    batch = []
    while not g.is_over:
        r = g.round
        encode(r.view(r.to_play), a)
        np.testing.assert_array_equal(a, row_of(r))
        assert a[OFFSETS["to_play"]] == 1  # the acting seat sees itself to act
        onlooker = int(rng.integers(players))
        encode(r.view(onlooker), a)
        encode_rounds([r], b, seat=onlooker)
        np.testing.assert_array_equal(a, b[0])
        assert a[OFFSETS["to_play"] + (r.to_play - onlooker) % players] == 1
        batch.append(r.clone())
        legal = g.legal_actions()
        g.play(legal[int(rng.integers(len(legal)))])
    out = np.zeros((len(batch), WIDTH), np.float32)
    encode_rounds(batch, out)
    for k, r in enumerate(batch):
        np.testing.assert_array_equal(out[k], row_of(r))


def test_hidden_cards_do_not_change_the_row():
    rng = np.random.default_rng(5)
    r = Round.deal(players=4, cards=5, trump=2, dealer=1, seed=3)
    for _ in range(9):
        r.apply(r.legal()[0])
    view = r.view(r.to_play)
    for _ in range(5):
        other = determinize(view, rng)  # same view, other hidden hands
        np.testing.assert_array_equal(row_of(other), row_of(r))


def test_seats_are_relative_to_the_acting_seat():
    r = Round.deal(players=4, cards=3, trump=None, dealer=3, seed=1)
    r.play(BID0 + 2)  # seat 0 bids 2; seat 1 acts next
    row = row_of(r)
    bid = OFFSETS["bid"]
    assert row[OFFSETS["has_bid"] + 3] == 1  # seat 0 is three seats after seat 1
    assert abs(row[bid + 3] - 2 / 3) < 1e-6
    assert row[OFFSETS["dealer"] + 2] == 1  # dealer 3 is two seats after seat 1
    hand = row[OFFSETS["hand"] : OFFSETS["hand"] + 52]
    assert sorted(np.nonzero(hand)[0].tolist()) == r.hands[1]
    assert row[OFFSETS["trump"] + 4] == 1 and row[OFFSETS["phase"]] == 1


def test_game_context_is_encoded_only_inside_a_game():
    single = Round.deal(players=3, cards=2, trump=0, dealer=0, seed=2)
    assert row_of(single)[OFFSETS["in_game"]] == 0
    g = Game.new(players=3, start_cards=2, seed=2)
    assert row_of(g.round)[OFFSETS["in_game"]] == 1
    assert row_of(g.round)[OFFSETS["rounds_left"]] > 0
