"""The network's input row written from a state array (``blobnet.position``) by a numba kernel.

``encode_state(st, seat, row)`` writes the position ``st`` as ``seat`` sees it into ``row``, the
same float32 row of ``WIDTH`` that ``blobnet.encode`` writes for the same position and seat, bit
for bit, field by field (docs/ENCODING.md). ``blobnet.encode`` stays the oracle the kernel is
tested against; the search's hot path uses the kernel. Values are computed in float64 in the
order encode.py computes them and rounded once on the store into float32, so rows are identical.

Nothing hidden is read: the kernel reads ``seat``'s own ``HAND`` slot and the public slots (bids,
tricks won, cards played, voids, the current trick, the game context), never another seat's
``HAND``, so a determinized deal and the position it came from give the same row.

The field offsets are ``blobnet.encode``'s module-level ints (``OFF_HAND``, ...), which numba
freezes into the compiled code as constants; ``blobnet.jit`` recompiles the kernels when any
kernel source (encode.py and position.py included) changes. ``NUMBA_DISABLE_JIT=1`` runs them as
plain Python.
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from blobnet.cards import MAX_BID, MIN_PLAYERS, N_CARDS, N_SUITS
from blobnet.encode import (
    OFF_BID,
    OFF_BID_TOTAL,
    OFF_CARDS,
    OFF_CARDS_LEFT,
    OFF_DEALER,
    OFF_HAND,
    OFF_HAS_BID,
    OFF_HELD,
    OFF_IN_GAME,
    OFF_IN_TRICK,
    OFF_LEADER,
    OFF_LED,
    OFF_NEED,
    OFF_PHASE,
    OFF_PLAYED_BY,
    OFF_PLAYERS,
    OFF_ROUNDS_LEFT,
    OFF_TO_PLAY,
    OFF_TOTALS,
    OFF_TRUMP,
    OFF_VOIDS,
    OFF_WINNING,
    OFF_WON,
    WIDTH,
)
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

__all__ = ["encode_state"]


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

    _ones(row, OFF_HAND, st[HAND + seat])  # the only HAND slot read
    row[OFF_TRUMP + st[TRUMP]] = 1.0  # NO_TRUMP is the field's 'none' (checked at import)
    row[OFF_PLAYERS + n - MIN_PLAYERS] = 1.0
    row[OFF_CARDS] = cards / MAX_BID
    row[OFF_PHASE + (_BID_PHASE if st[N_BIDS] < n else _PLAY_PHASE)] = 1.0  # a finished round counts as play
    r = st[DEALER] - seat
    row[OFF_DEALER + (r + n if r < 0 else r)] = 1.0
    row[OFF_BID_TOTAL] = st[BID_TOTAL] * inv

    left = (cards - st[TRICKS_DONE]) * inv  # cards held by each seat after the completed tricks
    for s in range(n):
        r = s - seat
        if r < 0:
            r += n
        won = st[WON + s]
        row[OFF_WON + r] = won * inv
        row[OFF_HELD + r] = left
        bid = st[BIDS + s]
        if bid >= 0:
            row[OFF_HAS_BID + r] = 1.0
            row[OFF_BID + r] = bid * inv
            row[OFF_NEED + r] = (bid - won) * inv
        _ones(row, OFF_PLAYED_BY + r * N_CARDS, st[PLAYED + s])
        _ones(row, OFF_VOIDS + r * N_SUITS, st[VOIDS + s])

    t = st[TRICK_LEN]
    if t > 0:
        leader = st[LEADER]
        for i in range(t):
            row[OFF_IN_TRICK + st[TRICK + i]] = 1.0
            r = leader + i - seat  # the i-th card's seat, (leader + i) % n, relative to seat
            if r < 0:
                r += n
            elif r >= n:
                r -= n
            row[OFF_HELD + r] = left - inv  # encode.py subtracts the trick card from ``left``
        r = leader - seat
        row[OFF_LEADER + (r + n if r < 0 else r)] = 1.0
        r = st[WIN_SEAT] - seat
        row[OFF_WINNING + (r + n if r < 0 else r)] = 1.0
        row[OFF_LED + st[TRICK] // _RANKS] = 1.0

    if st[IN_GAME]:
        row[OFF_IN_GAME] = 1.0
        mine = st[TOTALS + seat]
        for s in range(n):
            r = s - seat
            row[OFF_TOTALS + (r + n if r < 0 else r)] = (st[TOTALS + s] - mine) / _TOTALS_SCALE
        rounds = st[SCHED_LEN]
        row[OFF_ROUNDS_LEFT] = (rounds - st[ROUND_INDEX] - 1) / rounds
        row[OFF_CARDS_LEFT] = st[CARDS_LATER] / (MAX_BID * rounds)

    p = st[TO_PLAY]
    if p >= 0:  # -1 once the round is over
        r = p - seat
        row[OFF_TO_PLAY + (r + n if r < 0 else r)] = 1.0
