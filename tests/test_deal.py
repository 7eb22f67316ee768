"""The compiled determinization (blobnet.deal): its generator, agreement with the view on every
path, uniformity over the allowed deals (the chi-square tests of test_views.py, whose helpers are
reused), reproducibility from a seed, and a clear refusal of an impossible view."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_views import (
    CASES,
    SAMPLES_PER_DEAL,
    Deal,
    all_deals_count,
    allowed_deals,
    binding_positions,
    chi_square,
    chi_square_critical,
    needs_of,
    no_void_view,
    random_position,
    unseen_of,
)

from blobnet.cards import cards_of
from blobnet.deal import EXACT, PLAIN, REJECTION, REJECTION_TRIES, below, deal, next_u32, rng_state, uniform
from blobnet.position import HAND, STATE, pack, pack_view
from blobnet.rules import Game, Round, View

ROOT = Path(__file__).resolve().parents[1]


def dealt(v: View, tries: int, rs: np.ndarray) -> tuple[np.ndarray, int]:
    """``deal`` of a view into a fresh array: (the state, the path taken)."""
    out = np.zeros(STATE, dtype=np.int64)
    path = deal(pack_view(v), v.seat, rs, out, tries)
    return out, path


def deal_tuple(out: np.ndarray, v: View) -> Deal:
    return tuple(tuple(cards_of(int(out[HAND + s]))) for s in range(v.players) if s != v.seat)


def constrained(v: View) -> bool:
    needs = needs_of(v)
    return any(v.voids[s] and needs[s] for s in needs)


# -- the generator --------------------------------------------------------------------------------


def test_generator_matches_the_xoshiro128starstar_reference() -> None:
    """The reference implementation's first outputs from the state {1, 2, 3, 4} (v1.1)."""
    rs = np.array([1, 2, 3, 4], dtype=np.int64)
    expected = [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]
    assert [int(next_u32(rs)) for _ in expected] == expected


def test_seeded_states_are_reproducible_and_distinct() -> None:
    assert np.array_equal(rng_state(5), rng_state(5))
    assert np.array_equal(rng_state(2**64 + 5), rng_state(5))  # seeds are taken mod 2**64
    states = {tuple(rng_state(seed)) for seed in range(1000)} | {tuple(rng_state(-1)), tuple(rng_state(2**63))}
    assert len(states) == 1002
    assert all(0 <= w < 2**32 for s in states for w in s)


def test_below_is_in_range_and_unbiased() -> None:
    rs = rng_state(11)
    for n in (1, 2, 7, 52, 2**31):
        assert all(0 <= below(rs, n) < n for _ in range(200))
    n, draws = 13, 26_000
    counts = Counter(int(below(rs, n)) for _ in range(draws))
    e = draws / n
    assert sum((counts[i] - e) ** 2 / e for i in range(n)) < chi_square_critical(n - 1)


def test_uniform_spreads_over_its_range() -> None:
    rs = rng_state(12)
    xs = np.array([uniform(rs) for _ in range(20_000)])
    assert xs.min() >= 0.0 and xs.max() < 1.0
    assert abs(xs.mean() - 0.5) < 0.01
    counts = np.bincount((xs * 10).astype(np.int64), minlength=10)
    assert chi_square_critical(9) > sum((c - 2000) ** 2 / 2000 for c in counts)


# -- agreement with the view ----------------------------------------------------------------------


def check_deal(r: Round, seat: int, out: np.ndarray, path: int) -> None:
    """``out`` keeps everything ``seat`` knows and deals the rest as the view allows."""
    v = r.view(seat)
    vs = pack_view(v)
    n = v.players
    hand_slots = {HAND + s for s in range(n) if s != seat}
    for i in range(STATE):
        if i not in hand_slots:
            assert out[i] == vs[i], f"slot {i} changed"
    needs = needs_of(v)
    unseen = set(unseen_of(v))
    given_out: set[int] = set()
    for s in needs:
        hand = cards_of(int(out[HAND + s]))
        assert len(hand) == needs[s] == len(r.hands[s])
        assert not {c // 13 for c in hand} & v.voids[s], f"seat {s} got a suit it is known to lack"
        assert set(hand) <= unseen, "a card the seat has seen"
        assert not given_out & set(hand), "a card dealt twice"
        given_out |= set(hand)
    assert (path == PLAIN) == (not constrained(v))
    # the deal read back through the checked rules is the same position, and plays on to the end
    w = Round.from_view(v, [int(m) for m in out[HAND : HAND + n]])
    assert np.array_equal(pack(w), out)
    assert w.view(seat) == v
    pick = random.Random(int(out[HAND + (seat + 1) % n]))
    while w.to_play is not None:
        w.play(pick.choice(w.legal_actions()))
    assert sum(w.tricks_won) == w.cards


@st.composite
def rounds(draw: st.DrawFn) -> Round:
    """A round of any table and hand size, after any number of random actions (bids included)."""
    players = draw(st.integers(3, 8))
    cards = draw(st.integers(1, 52 // players))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_position(players, cards, seed, draw(st.integers(0, players * (cards + 1))))


@st.composite
def game_rounds(draw: st.DrawFn) -> Round:
    """The current round of a full game some random actions in (a view with its game context)."""
    players = draw(st.integers(3, 8))
    g = Game.new(players=players, start_cards=draw(st.integers(1, min(7, 52 // players))), seed=draw(st.integers(0)))
    pick = random.Random(draw(st.integers(0)))
    for _ in range(draw(st.integers(0, 120))):
        if g.is_over:
            break
        g.play(pick.choice(g.legal_actions()))
    return g.round


@settings(max_examples=400, deadline=None)
@given(st.one_of(rounds(), game_rounds()), st.integers(0, 2**32 - 1), st.sampled_from([REJECTION_TRIES, 0, 1]))
def test_deal_agrees_with_the_view_from_every_seat(r: Round, seed: int, tries: int) -> None:
    rs = rng_state(seed)
    for seat in range(r.players):
        out, path = dealt(r.view(seat), tries, rs)
        check_deal(r, seat, out, path)


def test_late_positions_with_many_voids_respect_them() -> None:
    """Where voids are many and deals few the exact path runs: check it and rejection across seeds."""
    rs = rng_state(0)
    paths: Counter[int] = Counter()
    for seed in range(60):
        r = random_position(4, 13, seed, 4 + 4 * 10 + seed % 4)
        for seat in range(4):
            v = r.view(seat)
            if not constrained(v):
                continue
            for tries in (0, REJECTION_TRIES):
                out, path = dealt(v, tries, rs)
                check_deal(r, seat, out, path)
                paths[path] += 1
    assert paths[EXACT] > 100 and paths[REJECTION] > 50


def test_deal_leaves_the_view_untouched_and_may_write_over_it() -> None:
    r = random_position(5, 8, seed=4, steps=25)
    v = r.view(2)
    vs = pack_view(v)
    before = vs.copy()
    out = np.zeros(STATE, dtype=np.int64)
    deal(vs, 2, rng_state(1), out)
    assert np.array_equal(vs, before)
    deal(vs, 2, rng_state(1), vs)  # in place: the same deal
    assert np.array_equal(vs, out)


# -- uniformity -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CASES))
def binding(request: pytest.FixtureRequest) -> tuple[View, list[Deal]]:
    players, cards, left, mid = CASES[request.param]
    _, v = next(binding_positions(players, cards, left, mid_trick=mid))
    return v, allowed_deals(v)


def sample(v: View, tries: int, seed: int) -> tuple[Counter[Deal], Counter[int], int]:
    """SAMPLES_PER_DEAL deals per allowed deal: (counts by deal, counts by path, samples)."""
    n = SAMPLES_PER_DEAL * len(allowed_deals(v))
    vs, out, rs = pack_view(v), np.zeros(STATE, dtype=np.int64), rng_state(seed)
    counts: Counter[Deal] = Counter()
    paths: Counter[int] = Counter()
    for _ in range(n):
        paths[deal(vs, v.seat, rs, out, tries)] += 1
        counts[deal_tuple(out, v)] += 1
    return counts, paths, n


def test_rejection_path_is_uniform(binding: tuple[View, list[Deal]]) -> None:
    v, deals = binding
    counts, paths, n = sample(v, 100_000, seed=1)
    assert set(paths) == {REJECTION}
    assert set(counts) <= set(deals), "a deal that breaks a void or a count"
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_exact_path_is_uniform(binding: tuple[View, list[Deal]]) -> None:
    v, deals = binding
    counts, paths, n = sample(v, 0, seed=2)
    assert set(paths) == {EXACT}
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_default_path_is_uniform(binding: tuple[View, list[Deal]]) -> None:
    v, deals = binding
    counts, paths, n = sample(v, REJECTION_TRIES, seed=3)
    assert set(paths) <= {REJECTION, EXACT}
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_plain_shuffle_without_voids_is_uniform() -> None:
    """No void known: every deal with the right counts is allowed and equally likely."""
    v = no_void_view()
    deals = allowed_deals(v)
    assert len(deals) == all_deals_count(v) == 90
    counts, paths, n = sample(v, REJECTION_TRIES, seed=5)
    assert set(paths) == {PLAIN}
    assert set(counts) <= set(deals)
    assert chi_square(counts, deals, n) < chi_square_critical(len(deals) - 1)


def test_exact_and_rejection_agree_where_deals_are_too_many_to_list() -> None:
    """Six cards left a seat, three seats with voids: the exact sampler's memo spans several seats
    and suits. Each unseen card's chance of going to each seat must be the same on both paths."""
    v = next(
        r.view(s)
        for seed in range(200)
        for r in [random_position(4, 13, seed, 4 + 4 * 7)]
        for s in range(4)
        if sum(bool(r.view(s).voids[o]) for o in range(4) if o != s) == 3
    )
    vs, out, n = pack_view(v), np.zeros(STATE, dtype=np.int64), 20_000
    shares = []
    for tries, seed in ((0, 21), (100_000, 22)):
        rs = rng_state(seed)
        masks = np.zeros((n, 4), dtype=np.int64)
        for i in range(n):
            deal(vs, v.seat, rs, out, tries)
            masks[i] = out[HAND : HAND + 4]
        shares.append((masks[:, :, None] >> np.arange(52) & 1).mean(axis=0))  # (seat, card)
    exact, rejection = shares
    assert np.array_equal(exact[:, unseen_of(v)].sum(axis=0), np.ones(len(unseen_of(v))))  # all dealt
    p = (exact + rejection) / 2
    se = np.sqrt(p * (1 - p) * 2 / n)
    z = np.abs(exact - rejection)[se > 0] / se[se > 0]
    assert z.max() < 5


# -- reproducibility and refusal -------------------------------------------------------------------


def some_views() -> list[View]:
    """A plain, a rejection-path and an exact-path view, from several tables."""
    views = [random_position(p, c, seed, steps).view(seat) for p, c, seed, steps, seat in
             [(4, 5, 1, 9, 2), (3, 17, 2, 30, 0), (6, 8, 3, 20, 5), (8, 6, 4, 40, 1)]]  # fmt: skip
    views += [v for players, cards, left, mid in CASES.values()
              for _, v in [next(binding_positions(players, cards, left, mid_trick=mid))]]  # fmt: skip
    return views


def deal_stream(views: list[View], seed: int) -> list[list[int]]:
    rs = rng_state(seed)
    return [dealt(v, tries, rs)[0].tolist() for v in views for tries in (REJECTION_TRIES, 0) for _ in range(5)]


def test_same_seed_same_deals_and_other_seeds_other_deals() -> None:
    views = some_views()
    a = deal_stream(views, 9)
    assert a == deal_stream(views, 9)
    assert a != deal_stream(views, 10)
    assert len({tuple(x) for x in a}) > len(a) // 2  # the state advances: one seed, many deals


def test_plain_python_mode_deals_the_same_as_the_compiled_kernels() -> None:
    """NUMBA_DISABLE_JIT=1 runs the module as plain Python, drawing the same numbers."""
    views = some_views()
    script = (
        "import json, sys, numpy as np\n"
        "from blobnet.deal import deal, rng_state\n"
        "rs = rng_state(9)\n"
        "out = []\n"
        "for st, seat in json.load(sys.stdin):\n"
        "    for tries in (16, 0):\n"
        "        for _ in range(5):\n"
        "            o = np.zeros(len(st), dtype=np.int64)\n"
        "            deal(np.array(st, dtype=np.int64), seat, rs, o, tries)\n"
        "            out.append([int(x) for x in o])\n"
        "print(json.dumps(out))\n"
    )
    stdin = json.dumps([[pack_view(v).tolist(), v.seat] for v in views])
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONWARNINGS": "error"}
    done = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == deal_stream(views, 9)


def test_impossible_view_raises() -> None:
    r = random_position(4, 13, seed=2, steps=4 + 4 * 11)
    v = r.view(r.to_play)  # type: ignore[arg-type]
    voids = list(v.voids)
    voids[(v.seat + 1) % 4] = frozenset(range(4))  # a seat that holds cards yet lacks every suit
    bad = dataclasses.replace(v, voids=tuple(voids))
    for tries in (REJECTION_TRIES, 0):
        with pytest.raises(ValueError, match="no deal"):
            dealt(bad, tries, rng_state(0))


def test_more_cards_needed_than_unseen_raises() -> None:
    r = random_position(4, 13, seed=2, steps=4 + 4 * 11)
    v = dataclasses.replace(r.view(0), cards=14)  # every other seat would hold one card more
    with pytest.raises(ValueError, match="no deal"):
        dealt(v, REJECTION_TRIES, rng_state(0))
