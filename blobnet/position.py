"""A position as one int64 array, and the compiled rules over it (numba kernels).

The search's hot path runs on this form: a position is ``STATE`` int64 slots, cards as 52-bit
masks, seats absolute. ``blobnet.rules.Round`` stays the public, checked API and the oracle the
kernels are tested against; ``pack`` and ``unpack`` convert between the two.

Layout (slot: meaning):

    PLAYERS, CARDS       table size and cards dealt to each seat this round
    TRUMP                trump suit 0..3, NO_TRUMP (4) for none
    DEALER               the dealer's seat
    TO_PLAY              the seat to act, -1 once the round is over
    N_BIDS, BID_TOTAL    bids made so far and their sum
    LEADER               the seat that led the current trick, -1 between tricks
    TRICK_LEN            cards in the current trick
    WIN_SEAT, WIN_CARD   who holds the current trick so far and with which card, -1 between tricks
    TRICKS_DONE          completed tricks
    IN_GAME              1 inside a full game, 0 for an independent round
    ROUND_INDEX, SCHED_LEN, CARDS_LATER
                         in a game: this round's index, the schedule's length, and the cards
                         the later rounds deal (0 for an independent round)
    HAND + s             seat s's cards now (a mask; 0 for a seat whose cards are not known)
    BIDS + s             seat s's bid, -1 before it bids
    WON + s              tricks seat s has won
    PLAYED + s           the cards seat s has played this round (a mask)
    VOIDS + s            the suits seat s is known to lack (4 bits)
    TOTALS + s           in a game: seat s's total before this round
    TRICK + i            the i-th card of the current trick (played by seat (LEADER + i) % PLAYERS)

Kernels take the state array and write into arrays the caller owns; they never allocate on the
hot path. ``NUMBA_DISABLE_JIT=1`` runs them as plain Python.
"""

from __future__ import annotations

import numpy as np

from blobnet.cards import BID0, MAX_PLAYERS, SUIT_MASKS, cards_of
from blobnet.jit import njit
from blobnet.rules import GameContext, Round, View

__all__ = [
    "STATE", "NO_TRUMP", "PLAYERS", "CARDS", "TRUMP", "DEALER", "TO_PLAY", "N_BIDS", "BID_TOTAL", "LEADER",
    "TRICK_LEN", "WIN_SEAT", "WIN_CARD", "TRICKS_DONE", "IN_GAME", "ROUND_INDEX", "SCHED_LEN", "CARDS_LATER",
    "HAND", "BIDS", "WON", "PLAYED", "VOIDS", "TOTALS", "TRICK", "pack", "pack_view", "unpack", "legal",
    "apply", "scores", "popcount", "SUIT",
]  # fmt: skip

P = MAX_PLAYERS
(
    PLAYERS, CARDS, TRUMP, DEALER, TO_PLAY, N_BIDS, BID_TOTAL, LEADER, TRICK_LEN, WIN_SEAT, WIN_CARD, TRICKS_DONE,
    IN_GAME, ROUND_INDEX, SCHED_LEN, CARDS_LATER,
) = range(16)  # fmt: skip
HAND = 16
BIDS = HAND + P
WON = BIDS + P
PLAYED = WON + P
VOIDS = PLAYED + P
TOTALS = VOIDS + P
TRICK = TOTALS + P
STATE = TRICK + P
NO_TRUMP = 4

SUIT = np.array(SUIT_MASKS, dtype=np.int64)  # the 13-card mask of each suit, for the kernels


# -- the compiled rules -------------------------------------------------------------------------------
@njit(cache=True)
def popcount(x: int) -> int:
    """Set bits of a mask in 0..2**63-1 (SWAR: no loop, no product that could wrap)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x += x >> 8
    x += x >> 16
    x += x >> 32
    return x & 0x7F


@njit(cache=True)
def legal(st: np.ndarray, out: np.ndarray) -> int:
    """The legal action ids of the seat to act, ascending, into ``out`` (int64, >= N_ACTIONS);
    returns how many (0 once the round is over). ``Round.legal`` of the same position."""
    s = st[TO_PLAY]
    if s < 0:
        return 0
    n = st[PLAYERS]
    k = 0
    if st[N_BIDS] < n:
        cards = st[CARDS]
        hooked = -1
        if s == st[DEALER]:
            hooked = cards - st[BID_TOTAL]
        for b in range(cards + 1):
            if b != hooked:
                out[k] = BID0 + b
                k += 1
        return k
    hand = st[HAND + s]
    if st[TRICK_LEN] > 0:
        follow = hand & SUIT[st[TRICK] // 13]
        if follow:
            hand = follow
    while hand:  # the set bits, lowest first
        low = hand & -hand
        out[k] = popcount(low - 1)
        k += 1
        hand ^= low
    return k


@njit(cache=True)
def apply(st: np.ndarray, a: int) -> None:
    """Play action ``a`` for the seat to act, unchecked: ``Round.apply`` of the same position."""
    s = st[TO_PLAY]
    n = st[PLAYERS]
    if st[N_BIDS] < n:
        st[BIDS + s] = a - BID0
        st[BID_TOTAL] += a - BID0
        st[N_BIDS] += 1
        st[TO_PLAY] = (s + 1) % n  # after the dealer's bid this is dealer + 1, the first leader
        return
    bit = np.int64(1) << a
    st[HAND + s] ^= bit
    st[PLAYED + s] |= bit
    suit = a // 13
    t = st[TRICK_LEN]
    if t > 0:
        led = st[TRICK] // 13
        if suit != led:
            st[VOIDS + s] |= 1 << led
        best = st[WIN_CARD]
        bs = best // 13
        if (suit == bs and a > best) or (suit == st[TRUMP] and bs != suit):
            st[WIN_SEAT] = s
            st[WIN_CARD] = a
    else:
        st[LEADER] = s
        st[WIN_SEAT] = s
        st[WIN_CARD] = a
    st[TRICK + t] = a
    st[TRICK_LEN] = t + 1
    if t + 1 < n:
        st[TO_PLAY] = (s + 1) % n
        return
    w = st[WIN_SEAT]
    st[WON + w] += 1
    st[TRICKS_DONE] += 1
    st[TRICK_LEN] = 0
    st[TRICK : TRICK + n] = 0  # a position has one array: the same as packing the Round
    st[LEADER] = -1
    st[WIN_SEAT] = -1
    st[WIN_CARD] = -1
    st[TO_PLAY] = w if st[HAND + w] else -1


@njit(cache=True)
def scores(st: np.ndarray, out: np.ndarray) -> None:
    """Round scores of a finished round into ``out[:players]``: 10 + bid for an exact bid, else 0."""
    for s in range(st[PLAYERS]):
        b = st[BIDS + s]
        out[s] = 10 + b if st[WON + s] == b else 0


# -- conversions (Python: the checked API's objects in, arrays out) ---------------------------------
def _context(st: np.ndarray, context: GameContext | None) -> None:
    if context is None:
        return
    st[IN_GAME] = 1
    st[ROUND_INDEX] = context.round_index
    st[SCHED_LEN] = len(context.schedule)
    st[CARDS_LATER] = sum(context.schedule[context.round_index + 1 :])
    st[TOTALS : TOTALS + len(context.totals)] = context.totals


def _public(st: np.ndarray, *, players: int, cards: int, trump: int | None, dealer: int, to_play: int | None,
            bids: list[int | None] | tuple[int | None, ...], won: list[int] | tuple[int, ...],
            trick: list[tuple[int, int]] | tuple[tuple[int, int], ...],
            played: list[tuple[int, int]] | tuple[tuple[int, int], ...], voids: list[int]) -> None:  # fmt: skip
    """What every seat knows, written into a zeroed ``st``."""
    n = players
    st[PLAYERS], st[CARDS], st[DEALER] = n, cards, dealer
    st[TRUMP] = NO_TRUMP if trump is None else trump
    st[TO_PLAY] = -1 if to_play is None else to_play
    made = [b for b in bids if b is not None]
    st[N_BIDS], st[BID_TOTAL] = len(made), sum(made)
    st[BIDS : BIDS + n] = [-1 if b is None else b for b in bids]
    st[WON : WON + n] = won
    st[VOIDS : VOIDS + n] = voids
    for s, c in played:
        st[PLAYED + s] |= 1 << c
    st[TRICKS_DONE] = (len(played) - len(trick)) // n
    st[TRICK_LEN] = len(trick)
    st[LEADER] = st[WIN_SEAT] = st[WIN_CARD] = -1
    for i, (s, c) in enumerate(trick):
        st[TRICK + i] = c
        if i == 0:
            st[LEADER] = st[WIN_SEAT] = s
            st[WIN_CARD] = c
        else:
            best = st[WIN_CARD]
            if (c // 13 == best // 13 and c > best) or (c // 13 == st[TRUMP] and best // 13 != st[TRUMP]):
                st[WIN_SEAT], st[WIN_CARD] = s, c


def pack(r: Round) -> np.ndarray:
    """The position of ``r`` (every hand included) as a state array."""
    st = np.zeros(STATE, dtype=np.int64)
    _public(st, players=r.players, cards=r.cards, trump=r.trump, dealer=r.dealer, to_play=r.to_play, bids=r.bids,
            won=r.tricks_won, trick=r.trick, played=r.played, voids=r.void_masks)  # fmt: skip
    st[HAND : HAND + r.players] = r.masks
    _context(st, r.context)
    return st


def pack_view(view: View) -> np.ndarray:
    """What ``view.seat`` knows as a state array: its own hand, every other hand 0 (to be dealt)."""
    st = np.zeros(STATE, dtype=np.int64)
    voids = [sum(1 << x for x in v) for v in view.voids]
    _public(st, players=view.players, cards=view.cards, trump=view.trump, dealer=view.dealer, to_play=view.to_play,
            bids=view.bids, won=view.tricks_won, trick=view.trick, played=view.played, voids=voids)  # fmt: skip
    st[HAND + view.seat] = sum(1 << c for c in view.hand)
    _context(st, view.context)
    return st


def unpack(st: np.ndarray) -> dict[str, object]:
    """The state array read back as ``Round``'s public fields (for tests and messages): players,
    cards, trump, dealer, to_play, hands, bids, tricks_won, trick (seat, card) pairs, voids."""
    n = int(st[PLAYERS])
    leader = int(st[LEADER])
    return {
        "players": n,
        "cards": int(st[CARDS]),
        "trump": None if st[TRUMP] == NO_TRUMP else int(st[TRUMP]),
        "dealer": int(st[DEALER]),
        "to_play": None if st[TO_PLAY] < 0 else int(st[TO_PLAY]),
        "hands": [cards_of(int(m)) for m in st[HAND : HAND + n]],
        "bids": [None if b < 0 else int(b) for b in st[BIDS : BIDS + n]],
        "tricks_won": [int(w) for w in st[WON : WON + n]],
        "trick": [((leader + i) % n, int(st[TRICK + i])) for i in range(int(st[TRICK_LEN]))],
        "voids": [frozenset(x for x in range(4) if v >> x & 1) for v in st[VOIDS : VOIDS + n]],
    }
