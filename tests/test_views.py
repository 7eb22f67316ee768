"""Determinization (blobnet.views.determinize): it respects counts and voids, agrees with the view
in everything public, and deals uniformly among the allowed deals, on both of its paths.

The uniformity tests need positions whose allowed deals can be listed by brute force and where
the voids bind. Early in a small round (3 players, 2 or 3 cards) 40-odd cards stay undealt: the
deals number in the millions and a void changes each one's chance by a few percent, beyond the
reach of a test that runs in seconds. So the positions come from late in full-deck rounds
(4 players x 13 cards, 3 players x 17 cards with one card undealt), two or three cards left per
seat, where a handful of unseen cards and two or three known voids leave 10 to 60 deals, and a
sampler that fills seat by seat is off by a wide margin.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import combinations
from math import comb, factorial, sqrt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blobnet.views as views
from blobnet.rules import Game, Round, View
from blobnet.views import determinize

Deal = tuple[tuple[int, ...], ...]  # the other seats' hands, in seat order, each sorted


# -- helpers: an independent reading of what a view allows ------------------------------------------


def unseen_of(v: View) -> list[int]:
    known = set(v.hand) | {c for _, c in v.played}
    return [c for c in range(52) if c not in known]


def needs_of(v: View) -> dict[int, int]:
    """Cards each other seat still holds: the cards dealt less the ones it has played."""
    played = Counter(s for s, _ in v.played)
    return {s: v.cards - played[s] for s in range(v.players) if s != v.seat}


def allowed_deals(v: View) -> list[Deal]:
    """Every deal of the unseen cards that gives each other seat its count and none of its void suits."""
    needs = needs_of(v)
    others = sorted(needs)
    out: list[Deal] = []

    def rec(i: int, remaining: list[int], acc: list[tuple[int, ...]]) -> None:
        if i == len(others):
            out.append(tuple(acc))
            return
        s = others[i]
        pool = [c for c in remaining if c // 13 not in v.voids[s]]
        for hand in combinations(pool, needs[s]):
            taken = set(hand)
            rec(i + 1, [c for c in remaining if c not in taken], acc + [hand])

    rec(0, unseen_of(v), [])
    return out


def all_deals_count(v: View) -> int:
    """Deals of the unseen cards with the right counts, voids ignored (what a plain shuffle draws)."""
    n = len(unseen_of(v))
    total = factorial(n)
    for k in needs_of(v).values():
        total //= factorial(k)
        n -= k
    return total // factorial(n)


def deal_of(w: Round, seat: int) -> Deal:
    return tuple(tuple(h) for s, h in enumerate(w.hands) if s != seat)


def greedy_probabilities(v: View, deals: list[Deal]) -> list[float]:
    """The chance a seat-by-seat fill (each seat in turn draws uniformly from what it may hold,
    starting over on a dead end) gives each deal."""
    needs = needs_of(v)
    others = sorted(needs)
    probs = []
    for d in deals:
        remaining = set(unseen_of(v))
        p = 1.0
        for s, hand in zip(others, d, strict=True):
            avail = sum(1 for c in remaining if c // 13 not in v.voids[s])
            p /= comb(avail, needs[s])
            remaining -= set(hand)
        probs.append(p)
    z = sum(probs)
    return [p / z for p in probs]


def greedy_fill(v: View, rng: np.random.Generator) -> Deal:
    """The tempting sampler that is not uniform: fill the other seats one after another."""
    needs = needs_of(v)
    while True:
        remaining = unseen_of(v)
        hands = []
        for s in sorted(needs):
            pool = [c for c in remaining if c // 13 not in v.voids[s]]
            if len(pool) < needs[s]:
                break
            hand = sorted(int(c) for c in rng.choice(pool, size=needs[s], replace=False))
            hands.append(tuple(hand))
            remaining = [c for c in remaining if c not in hand]
        else:
            return tuple(hands)


def chi_square(counts: Counter[Deal], deals: list[Deal], n: int) -> float:
    """Pearson's statistic of ``counts`` against the uniform distribution over ``deals``."""
    e = n / len(deals)
    return sum((counts.get(d, 0) - e) ** 2 / e for d in deals)


def chi_square_critical(df: int, z: float = 4.5) -> float:
    """The upper quantile of chi-square(df) at a normal z (Wilson-Hilferty); z = 4.5 is p ~ 3e-6,
    generous: with fixed seeds the tests are deterministic, and a biased sampler overshoots by far."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * sqrt(a)) ** 3


def random_position(players: int, cards: int, seed: int, steps: int) -> Round:
    """A round after ``steps`` random legal actions (bids included)."""
    trump = seed % 5 if seed % 5 < 4 else None
    r = Round.deal(players=players, cards=cards, trump=trump, dealer=seed % players, seed=seed)
    pick = random.Random(seed)
    for _ in range(steps):
        if r.to_play is None:
            break
        r.play(pick.choice(r.legal_actions()))
    return r


def binding_positions(players: int, cards: int, left: int, *, mid_trick: bool) -> Iterator[tuple[int, View]]:
    """Positions (seed, view of the seat to play) with ``left`` cards or so per seat where the voids
    bind: 12 to 60 allowed deals, at most 60% of what a plain shuffle draws, and a seat-by-seat
    fill at least 0.12 from uniform in total variation."""
    steps = players * (cards + 1) - players * left
    for seed in range(500):
        for back in range(1, players) if mid_trick else (0,):
            r = random_position(players, cards, seed, steps + back)
            if r.to_play is None:
                continue
            v = r.view(r.to_play)
            deals = allowed_deals(v)
            k = len(deals)
            if not 12 <= k <= 60 or k > 0.6 * all_deals_count(v):
                continue
            tv = 0.5 * sum(abs(p - 1 / k) for p in greedy_probabilities(v, deals))
            if tv >= 0.12:
                yield seed, v


# 4 x 13: every card dealt, a seat plays mid-trick (unequal counts), or leads with 3 cards each;
# 3 x 17: one card is never dealt, so the unseen cards outnumber the places for them.
CASES = {
    "4p13c-mid-trick": (4, 13, 2, True),
    "3p17c-undealt-card": (3, 17, 2, False),
    "4p13c-three-left": (4, 13, 3, False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def binding(request: pytest.FixtureRequest) -> tuple[View, list[Deal]]:
    players, cards, left, mid = CASES[request.param]
    _, v = next(binding_positions(players, cards, left, mid_trick=mid))
    return v, allowed_deals(v)


def sample_counts(v: View, draw: Callable[[], Round], n: int) -> Counter[Deal]:
    counts: Counter[Deal] = Counter()
    for _ in range(n):
        counts[deal_of(draw(), v.seat)] += 1
    return counts


SAMPLES_PER_DEAL = 150


# -- uniformity -----------------------------------------------------------------------------------


def test_binding_positions_exist_and_bind(binding: tuple[View, list[Deal]]) -> None:
    v, deals = binding
    assert any(v.voids[s] for s in range(v.players) if s != v.seat)
    assert 12 <= len(deals) <= 60
    assert len(deals) <= 0.6 * all_deals_count(v)


def test_rejection_path_is_uniform(binding: tuple[View, list[Deal]], monkeypatch: pytest.MonkeyPatch) -> None:
    v, deals = binding

    def no_exact(*args: object, **kwargs: object) -> list[int]:
        raise AssertionError("the exact sampler ran: this test is for the rejection path")

    monkeypatch.setattr(views, "_exact_masks", no_exact)
    rng = np.random.default_rng(1)
    n = SAMPLES_PER_DEAL * len(deals)
    counts = sample_counts(v, lambda: determinize(v, rng, tries=100_000), n)
    assert set(counts) <= set(deals), "a deal that breaks a void or a count"
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_exact_path_is_uniform(binding: tuple[View, list[Deal]], monkeypatch: pytest.MonkeyPatch) -> None:
    v, deals = binding
    calls = 0
    exact = views._exact_masks

    def counting(*args: object, **kwargs: object) -> list[int]:
        nonlocal calls
        calls += 1
        return exact(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(views, "_exact_masks", counting)
    rng = np.random.default_rng(2)
    n = SAMPLES_PER_DEAL * len(deals)
    counts = sample_counts(v, lambda: determinize(v, rng, tries=0), n)
    assert calls == n
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_default_path_is_uniform(binding: tuple[View, list[Deal]]) -> None:
    v, deals = binding
    rng = np.random.default_rng(3)
    n = SAMPLES_PER_DEAL * len(deals)
    counts = sample_counts(v, lambda: determinize(v, rng), n)
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_seat_by_seat_fill_fails_the_same_test(binding: tuple[View, list[Deal]]) -> None:
    """The test has the power to see a plausible mistake: a greedy fill is rejected by far."""
    v, deals = binding
    rng = np.random.default_rng(4)
    n = SAMPLES_PER_DEAL * len(deals)
    counts: Counter[Deal] = Counter(greedy_fill(v, rng) for _ in range(n))
    assert set(counts) <= set(deals)  # every deal it makes is allowed: only the weights are wrong
    assert chi_square(counts, deals, n) > 3 * chi_square_critical(len(deals) - 1)


def no_void_view() -> View:
    """A view after bids and 11 tricks of 4 x 13 (2 cards each) with its voids forgotten: every one
    of the 90 deals with the right counts is allowed."""
    r = random_position(4, 13, seed=7, steps=4 + 4 * 11)
    v = r.view(r.to_play)  # type: ignore[arg-type]
    return dataclasses.replace(v, voids=(frozenset(),) * 4)


def test_plain_shuffle_without_voids_is_uniform() -> None:
    """No void known: every deal with the right counts is allowed and equally likely."""
    v = no_void_view()
    deals = allowed_deals(v)
    assert len(deals) == all_deals_count(v) == 90
    rng = np.random.default_rng(5)
    n = SAMPLES_PER_DEAL * len(deals)
    counts = sample_counts(v, lambda: determinize(v, rng), n)
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


# -- counts, voids and what is public -------------------------------------------------------------


def check_determinization(r: Round, seat: int, w: Round) -> None:
    v = r.view(seat)
    assert w.view(seat) == v, "the determinized round must look the same from the seat"
    for s in range(r.players):
        assert w.view(s).played == v.played and w.view(s).bids == v.bids and w.view(s).voids == v.voids
    needs = needs_of(v)
    unseen = set(unseen_of(v))
    given_out: set[int] = set()
    for s, hand in enumerate(w.hands):
        if s == seat:
            assert hand == list(v.hand)
            continue
        assert len(hand) == needs[s] == len(r.hands[s])
        assert not {c // 13 for c in hand} & v.voids[s], f"seat {s} got a suit it is known to lack"
        assert set(hand) <= unseen
        assert not given_out & set(hand)
        given_out |= set(hand)
    # what the engine keeps about the trick and the bidding is the same as the truth's
    for name in ("to_play", "n_bids", "bid_total", "win_seat", "win_card", "void_masks", "tricks_won", "trick"):
        assert getattr(w, name) == getattr(r, name), name
    assert w.phase == r.phase
    if r.to_play == seat:
        assert w.legal_actions() == r.legal_actions()
    elif r.to_play is not None:
        assert w.legal_actions(), "the seat to play must have a legal action in every determinization"


@st.composite
def positions(draw: st.DrawFn) -> tuple[Round, int]:
    players = draw(st.integers(3, 8))
    cards = draw(st.integers(1, 52 // players))
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(0, players * (cards + 1)))
    r = random_position(players, cards, seed, steps)
    seat = draw(st.integers(0, players - 1))
    return r, seat


@settings(max_examples=250, deadline=None)
@given(positions(), st.integers(0, 2**32 - 1), st.sampled_from([views.REJECTION_TRIES, 0, 1]))
def test_determinization_respects_counts_voids_and_public_state(
    pos: tuple[Round, int], rng_seed: int, tries: int
) -> None:
    r, seat = pos
    w = determinize(r.view(seat), np.random.default_rng(rng_seed), tries=tries)
    check_determinization(r, seat, w)
    # the determinized round plays on to the end under the checked path
    pick = random.Random(rng_seed)
    while w.to_play is not None:
        w.play(pick.choice(w.legal_actions()))
    assert sum(w.tricks_won) == w.cards


def test_late_positions_with_many_voids_respect_them() -> None:
    """Where voids are many and deals few, the exact path is what runs; check it across seeds."""
    checked = 0
    for seed in range(60):
        r = random_position(4, 13, seed, 4 + 4 * 10 + seed % 4)
        for seat in range(4):
            v = r.view(seat)
            if not any(v.voids[s] for s in range(4) if s != seat):
                continue
            for tries in (0, views.REJECTION_TRIES):
                check_determinization(r, seat, determinize(v, np.random.default_rng(seed), tries=tries))
            checked += 1
    assert checked > 100


def test_same_generator_state_same_determinization() -> None:
    r = random_position(4, 13, seed=3, steps=30)
    v = r.view(1)
    a = determinize(v, np.random.default_rng(9))
    b = determinize(v, np.random.default_rng(9))
    c = determinize(v, np.random.default_rng(10))
    assert a.hands == b.hands
    assert a.hands != c.hands


def test_determinization_does_not_touch_the_round() -> None:
    r = random_position(5, 8, seed=4, steps=25)
    before = [list(h) for h in r.hands], list(r.played), list(r.void_masks)
    for seat in range(5):
        determinize(r.view(seat), np.random.default_rng(seat))
    assert ([list(h) for h in r.hands], list(r.played), list(r.void_masks)) == before


def test_game_view_determinizes_with_its_context() -> None:
    g = Game.new(players=4, start_cards=5, seed=1)
    pick = random.Random(1)
    for _ in range(12):
        g.play(pick.choice(g.legal_actions()))
    v = g.view(g.to_play)  # type: ignore[arg-type]
    w = determinize(v, np.random.default_rng(0))
    assert w.context == g.round.context and w.context is not None
    assert w.view(v.seat) == v


def test_impossible_view_raises() -> None:
    r = random_position(4, 13, seed=2, steps=4 + 4 * 11)
    v = r.view(r.to_play)  # type: ignore[arg-type]
    other = (v.seat + 1) % 4
    voids = list(v.voids)
    voids[other] = frozenset(range(4))  # a seat that holds cards yet lacks every suit
    bad = dataclasses.replace(v, voids=tuple(voids))
    with pytest.raises(ValueError, match="no deal"):
        determinize(bad, np.random.default_rng(0))
