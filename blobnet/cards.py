"""Cards and action ids, exactly as RULES.md numbers them.

A card is a small int ``suit * 13 + rank``; a set of cards is a 52-bit int mask with bit ``c``
set for card ``c``. Action ids: cards ``0..51``, bid ``b`` is ``52 + b`` for ``b`` in ``0..17``.
"""

from __future__ import annotations

from collections.abc import Iterable

SUITS = "SHCD"
RANKS = "23456789TJQKA"
N_CARDS = 52
N_SUITS = 4
BID0 = 52
MAX_BID = 17  # the most cards a 3-player round deals: 52 // 3
N_ACTIONS = BID0 + MAX_BID + 1  # 70
MIN_PLAYERS, MAX_PLAYERS = 3, 8
N_VALUES = MAX_PLAYERS  # a network's values: one per relative seat, padded to the largest table

SUIT_MASKS = tuple(((1 << 13) - 1) << (13 * s) for s in range(N_SUITS))
FULL_DECK = (1 << N_CARDS) - 1


def card_str(card: int) -> str:
    """``0`` -> ``"2S"``, ``51`` -> ``"AD"``."""
    if not 0 <= card < N_CARDS:
        raise ValueError(f"card id {card} is outside 0..51")
    return RANKS[card % 13] + SUITS[card // 13]


def parse_card(text: str) -> int:
    """``"AS"`` -> 12; accepts ``"10D"`` for ``"TD"`` and either case."""
    t = text.strip().upper()
    if t.startswith("10"):
        t = "T" + t[2:]
    if len(t) != 2 or t[0] not in RANKS or t[1] not in SUITS:
        raise ValueError(f"{text!r} is not a card: write rank then suit, like AS, TD, 10D or 2C")
    return SUITS.index(t[1]) * 13 + RANKS.index(t[0])


def action_str(action: int) -> str:
    return card_str(action) if action < BID0 else f"bid {action - BID0}"


def mask_of(cards: Iterable[int]) -> int:
    m = 0
    for c in cards:
        m |= 1 << c
    return m


def cards_of(mask: int) -> list[int]:
    """The cards of a mask in ascending id order."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def beats(card: int, best: int, trump: int | None) -> bool:
    """Whether ``card`` played now takes a trick held by ``best``: a higher card of its suit, or a
    trump on a trick no trump holds yet."""
    s, bs = card // 13, best // 13
    return (s == bs and card > best) or (s == trump and bs != trump)


def winning(trick: Iterable[tuple[int, int]], trump: int | None) -> tuple[int, int]:
    """(seat, card) holding a trick of (seat, card) plays so far; (-1, -1) for an empty trick."""
    seat, best = -1, -1
    for s, c in trick:
        if best < 0 or beats(c, best, trump):
            seat, best = s, c
    return seat, best
