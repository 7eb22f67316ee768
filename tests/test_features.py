"""The compiled encoder (blobnet.features) against encode.py, its oracle: the same row bit for bit
from every seat, nothing hidden read, and a packed view encoded like the view itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobnet.cards import FULL_DECK, MAX_PLAYERS, MIN_PLAYERS, N_CARDS
from blobnet.encode import FIELDS, OFFSETS, WIDTH, encode, encode_rounds
from blobnet.features import encode_state
from blobnet.jit import KERNEL_MODULES, clear_stale_cache
from blobnet.position import HAND, pack, pack_view
from blobnet.rules import TRUMP_CYCLE, Game, Round, standard_schedule

STALE = 7.0  # rows start full of this: the kernel must zero what it does not write


def oracle(r: Round, seat: int) -> np.ndarray:
    out = np.full((1, WIDTH), STALE, np.float32)
    encode_rounds([r], out, seat=seat)
    return out[0]


def kernel(st_: np.ndarray, seat: int) -> np.ndarray:
    row = np.full(WIDTH, STALE, np.float32)
    encode_state(st_, seat, row)
    return row


def field_at(i: int) -> str:
    return max((name for name, _ in FIELDS if OFFSETS[name] <= i), key=OFFSETS.__getitem__)


def assert_same_row(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bit for bit (stricter than array_equal: -0.0 is not 0.0); a failure names the first field."""
    g, w = got.view(np.uint32), want.view(np.uint32)
    if not np.array_equal(g, w):
        i = int(np.flatnonzero(g != w)[0])
        name = field_at(i)
        raise AssertionError(
            f"{what}: first difference in field {name!r}, entry {i - OFFSETS[name]} (row index {i}): "
            f"kernel {got[i]!r}, encode.py {want[i]!r}"
        )


def assert_every_seat(r: Round) -> None:
    st_ = pack(r)
    for seat in range(r.players):
        assert_same_row(kernel(st_, seat), oracle(r, seat), f"{r!r} seen by seat {seat}")


def play_random(r: Round, steps: int, rng: np.random.Generator) -> None:
    for _ in range(steps):
        if r.to_play is None:
            return
        legal = r.legal()
        r.apply(legal[int(rng.integers(len(legal)))])


@st.composite
def rounds(draw: st.DrawFn) -> Round:
    """A single round: any table, hand size, trump (no-trump included), dealer and deal, with any
    number of actions played, up to the end of the round."""
    players = draw(st.integers(MIN_PLAYERS, MAX_PLAYERS))
    cards = draw(st.integers(1, N_CARDS // players))
    trump = draw(st.sampled_from(TRUMP_CYCLE))
    dealer = draw(st.integers(0, players - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    r = Round.deal(players=players, cards=cards, trump=trump, dealer=dealer, rng=rng)
    play_random(r, draw(st.integers(0, players * (cards + 1))), rng)
    return r


@st.composite
def game_rounds(draw: st.DrawFn) -> list[Round]:
    """Inside a full game after any number of actions: the round in play (the last one, over, once
    the game is) and, once a round has ended, the finished one before it, with their contexts."""
    players = draw(st.integers(MIN_PLAYERS, MAX_PLAYERS))
    start = draw(st.integers(1, min(7, N_CARDS // players)))
    seed = draw(st.integers(0, 2**32 - 1))
    total = players * sum(c + 1 for c in standard_schedule(players, start))
    steps = draw(st.integers(0, total))
    g = Game.new(players=players, start_cards=start, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        if g.is_over:
            break
        legal = g.legal_actions()
        g.apply(legal[int(rng.integers(len(legal)))])
    return [g.round] + g.history[-1:]


@pytest.mark.parametrize("players", range(MIN_PLAYERS, MAX_PLAYERS + 1))
def test_every_hand_size_matches_encode_py_at_every_step_from_every_seat(players):
    """Whole rounds, bids to the finished round, for each hand size the table allows."""
    rng = np.random.default_rng(players)
    for cards in range(1, N_CARDS // players + 1):
        r = Round.deal(players=players, cards=cards, trump=TRUMP_CYCLE[cards % 5], dealer=cards % players, rng=rng)
        while True:
            assert_every_seat(r)
            if r.to_play is None:
                break
            play_random(r, 1, rng)


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_random_rounds_match_encode_py_from_every_seat(r):
    assert_every_seat(r)


@settings(max_examples=60, deadline=None)
@given(game_rounds())
def test_rounds_inside_a_game_match_encode_py_from_every_seat(rs):
    for r in rs:
        assert r.context is not None
        assert_every_seat(r)


@settings(max_examples=100, deadline=None)
@given(rounds(), st.integers(0, 2**32 - 1))
def test_other_seats_hands_are_never_read(r, seed):
    rng = np.random.default_rng(seed)
    st_ = pack(r)
    for seat in range(r.players):
        want = kernel(st_, seat)
        for others in (0, FULL_DECK, None):  # unknown, every card, a random mask
            changed = st_.copy()
            for s in range(MAX_PLAYERS):  # the padding slots past the table too
                if s != seat:
                    changed[HAND + s] = int(rng.integers(0, FULL_DECK + 1)) if others is None else others
            assert_same_row(kernel(changed, seat), want, f"{r!r}, seat {seat}, other hands changed")


@settings(max_examples=100, deadline=None)
@given(st.one_of(rounds().map(lambda r: [r]), game_rounds()))
def test_a_packed_view_gives_the_row_encode_gives_the_view(rs):
    row = np.full(WIDTH, STALE, np.float32)
    for r in rs:
        for seat in range(r.players):
            view = r.view(seat)
            encode(view, row)
            assert_same_row(kernel(pack_view(view), seat), row, f"pack_view of {r!r} by seat {seat}")


def test_a_seat_off_the_table_or_a_short_row_is_refused():
    st_ = pack(Round.deal(players=4, cards=5, trump=None, dealer=0, seed=1))
    with pytest.raises(ValueError):
        encode_state(st_, 4, np.zeros(WIDTH, np.float32))
    with pytest.raises(ValueError):
        encode_state(st_, -1, np.zeros(WIDTH, np.float32))
    with pytest.raises(ValueError):
        encode_state(st_, 0, np.zeros(WIDTH - 1, np.float32))


def test_cached_kernels_go_when_any_kernel_source_changes(tmp_path):
    """numba's own cache checks only the file defining a kernel; blobnet.jit checks them all."""
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    cache.mkdir()
    for name in KERNEL_MODULES:
        (src / f"{name}.py").write_text(f"# {name}\n")
    kept = cache / "other.f-1.py311.nbi"
    kept.write_text("not ours")
    assert clear_stale_cache(src, cache)  # no record yet
    stale = [cache / "tree.select-9.py311.nbi", cache / "tree.select-9.py311.1.nbc"]
    for f in stale:
        f.write_text("compiled")
    assert not clear_stale_cache(src, cache) and all(f.exists() for f in stale)
    (src / "position.py").write_text("# the layout changed\n")
    assert clear_stale_cache(src, cache)
    assert not any(f.exists() for f in stale) and kept.exists()
