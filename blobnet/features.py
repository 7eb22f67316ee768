"""The network's input row written from a state array (``blobnet.position``) by a numba kernel.

``encode_state(st, seat, row)`` writes the position ``st`` as ``seat`` sees it into ``row``, the
same float32 row of ``WIDTH`` that ``blobnet.encode`` writes for the same position and seat, bit
for bit, field by field (docs/ENCODING.md). ``blobnet.encode`` stays the oracle the kernel is
tested against; the search's hot path uses the kernel. Values are computed in float64 in the
order encode.py computes them and rounded once on the store into float32, so rows are identical.

Nothing hidden is read: the kernel reads ``seat``'s own ``HAND`` slot and the public slots (bids,
tricks won, cards played, voids, the current trick, the game context), never another seat's
``HAND``, so a determinized deal and the position it came from give the same row.

The layout's offsets are read from ``blobnet.encode.OFFSETS`` into module-level ints, which numba
freezes into the compiled code as constants. Numba's on-disk cache is keyed on this file's source,
not on the modules it imports: after a change to ``encode.FIELDS`` or to the state's slots, clear
``__pycache__`` (or touch this file) so the kernels are compiled again (the tests fail on a stale
cache). ``NUMBA_DISABLE_JIT=1`` runs them as plain Python.
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from blobnet.cards import MAX_BID, MIN_PLAYERS, N_CARDS, N_SUITS
from blobnet.encode import OFFSETS, WIDTH
from blobnet.jit import njit
from blobnet.position import (
    BID_TOTAL,
    BIDS,
    CARDS,
    CARDS_LATER,
    DEALER,
    HAND,
    IN_GAME,
    LEADER,
    N_BIDS,
    NO_TRUMP,
    PLAYED,
    PLAYERS,
    ROUND_INDEX,
    SCHED_LEN,
    TO_PLAY,
    TOTALS,
    TRICK,
    TRICK_LEN,
    TRICKS_DONE,
    TRUMP,
    VOIDS,
    WIN_SEAT,
    WON,
)

__all__ = ["encode_state", "encode_rows"]

_HAND = OFFSETS["hand"]
_TRUMP = OFFSETS["trump"]
_PLAYERS = OFFSETS["players"]
_CARDS = OFFSETS["cards"]
_PHASE = OFFSETS["phase"]
_DEALER = OFFSETS["dealer"]
_HAS_BID = OFFSETS["has_bid"]
_BID = OFFSETS["bid"]
_WON = OFFSETS["won"]
_NEED = OFFSETS["need"]
_HELD = OFFSETS["held"]
_BID_TOTAL = OFFSETS["bid_total"]
_PLAYED_BY = OFFSETS["played_by"]
_IN_TRICK = OFFSETS["in_trick"]
_LEADER = OFFSETS["leader"]
_WINNING = OFFSETS["winning"]
_LED = OFFSETS["led_suit"]
_VOIDS = OFFSETS["voids"]
_IN_GAME = OFFSETS["in_game"]
_TOTALS = OFFSETS["totals"]
_ROUNDS_LEFT = OFFSETS["rounds_left"]
_CARDS_LEFT = OFFSETS["cards_left"]
_TO_PLAY = OFFSETS["to_play"]

_TOTALS_SCALE = 100.0  # encode.py divides the totals' differences by 100 (docs/ENCODING.md)
_RANKS = N_CARDS // N_SUITS  # cards of a suit: a card's suit is card // _RANKS
_BID_PHASE, _PLAY_PHASE = 0, 1  # the entries of the "phase" field

# The trump field is S H C D none: the state's NO_TRUMP must land on "none", after the suits.
assert NO_TRUMP == N_SUITS, "the state's NO_TRUMP no longer indexes the trump field's 'none'"


def _lowest(mask: int) -> int:
    """The index of the lowest set bit of a non-zero mask (plain Python; compiled: below)."""
    m = int(mask)
    return (m & -m).bit_length() - 1


@overload(_lowest)
def _lowest_compiled(mask):  # type: ignore[no-untyped-def]
    # One count-trailing-zeros instruction: twice as fast a row as shifting through the mask.
    return lambda mask: trailing_zeros(mask)  # type: ignore[call-arg]  # an intrinsic: typing context added by numba


@njit(cache=True)
def _ones(row: np.ndarray, base: int, mask: int) -> None:
    """Set ``row[base + c] = 1`` for every card ``c`` of ``mask``."""
    while mask:
        row[base + _lowest(mask)] = 1.0
        mask &= mask - 1


@njit(cache=True)
def encode_state(st: np.ndarray, seat: int, row: np.ndarray) -> None:
    """Write state ``st`` (int64, ``STATE``) seen by ``seat`` into ``row`` (float32, ``WIDTH``,
    zeroed here first): ``encode.encode_rounds`` of the same position with ``seat=seat``.

    Seats in the row are relative to ``seat``; ``seat`` may be any seat, the one to act or not,
    and the round may be over (``TO_PLAY`` -1: no ``to_play`` entry)."""
    n = st[PLAYERS]
    if row.shape[0] != WIDTH:
        raise ValueError("encode_state: row must hold WIDTH floats")
    if seat < 0 or seat >= n:
        raise ValueError("encode_state: seat must be 0..players-1")
    row[:] = 0.0
    cards = st[CARDS]
    inv = 1.0 / cards

    _ones(row, _HAND, st[HAND + seat])  # the only HAND slot read
    row[_TRUMP + st[TRUMP]] = 1.0  # NO_TRUMP is the field's 'none' (checked at import)
    row[_PLAYERS + n - MIN_PLAYERS] = 1.0
    row[_CARDS] = cards / MAX_BID
    row[_PHASE + (_BID_PHASE if st[N_BIDS] < n else _PLAY_PHASE)] = 1.0  # a finished round counts as play
    r = st[DEALER] - seat
    row[_DEALER + (r + n if r < 0 else r)] = 1.0
    row[_BID_TOTAL] = st[BID_TOTAL] * inv

    left = (cards - st[TRICKS_DONE]) * inv  # cards held by each seat after the completed tricks
    for s in range(n):
        r = s - seat
        if r < 0:
            r += n
        won = st[WON + s]
        row[_WON + r] = won * inv
        row[_HELD + r] = left
        bid = st[BIDS + s]
        if bid >= 0:
            row[_HAS_BID + r] = 1.0
            row[_BID + r] = bid * inv
            row[_NEED + r] = (bid - won) * inv
        _ones(row, _PLAYED_BY + r * N_CARDS, st[PLAYED + s])
        _ones(row, _VOIDS + r * N_SUITS, st[VOIDS + s])

    t = st[TRICK_LEN]
    if t > 0:
        leader = st[LEADER]
        for i in range(t):
            row[_IN_TRICK + st[TRICK + i]] = 1.0
            r = leader + i - seat  # the i-th card's seat, (leader + i) % n, relative to seat
            if r < 0:
                r += n
            elif r >= n:
                r -= n
            row[_HELD + r] = left - inv  # encode.py subtracts the trick card from ``left``
        r = leader - seat
        row[_LEADER + (r + n if r < 0 else r)] = 1.0
        r = st[WIN_SEAT] - seat
        row[_WINNING + (r + n if r < 0 else r)] = 1.0
        row[_LED + st[TRICK] // _RANKS] = 1.0

    if st[IN_GAME]:
        row[_IN_GAME] = 1.0
        mine = st[TOTALS + seat]
        for s in range(n):
            r = s - seat
            row[_TOTALS + (r + n if r < 0 else r)] = (st[TOTALS + s] - mine) / _TOTALS_SCALE
        rounds = st[SCHED_LEN]
        row[_ROUNDS_LEFT] = (rounds - st[ROUND_INDEX] - 1) / rounds
        row[_CARDS_LEFT] = st[CARDS_LATER] / (MAX_BID * rounds)

    p = st[TO_PLAY]
    if p >= 0:  # -1 once the round is over
        r = p - seat
        row[_TO_PLAY + (r + n if r < 0 else r)] = 1.0


@njit(cache=True)
def encode_rows(states: np.ndarray, seats: np.ndarray, out: np.ndarray) -> None:
    """``encode_state(states[i], seats[i], out[i])`` for every ``i``: states int64 (k, STATE),
    seats int64 (k,), out float32 (>= k, WIDTH); rows after the k-th are left alone."""
    k = states.shape[0]
    if seats.shape[0] != k:
        raise ValueError("encode_rows: give one seat per state")
    if out.shape[0] < k:
        raise ValueError("encode_rows: out has fewer rows than states")
    for i in range(k):
        encode_state(states[i], seats[i], out[i])
