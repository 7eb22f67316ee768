"""The network's input: one float32 row of ``WIDTH`` per position, seen by one seat: the acting
seat's (``encode``, ``encode_round``), or any seat's (``encode_rounds(..., seat=)``).

Seats are relative to the viewing seat (0 = itself, 1 = next to play after it, ...) and padded to
8. The layout, field by field, is in docs/ENCODING.md; ``FIELDS`` below is its source of truth.
These are the checked Python encoders: the search and the replay's rows use the compiled one,
``blobnet.features.encode_state``, which the tests hold equal to these.
"""

from __future__ import annotations

import numpy as np

from blobnet.cards import MAX_BID, MAX_PLAYERS, MIN_PLAYERS, N_CARDS, winning
from blobnet.rules import Round, View

__all__ = [
    "FIELDS",
    "SCALAR_FIELDS",
    "WIDTH",
    "OFFSETS",
    "encode",
    "encode_round",
    "encode_rounds",
    "value_scale",
]  # and the OFF_* offsets

P = MAX_PLAYERS
# (name, width): the order is the row's order.
FIELDS: tuple[tuple[str, int], ...] = (
    ("hand", N_CARDS),  # the viewing seat's cards, one-hot by card id
    ("trump", 5),  # S H C D none
    ("players", MAX_PLAYERS - MIN_PLAYERS + 1),  # one-hot 3..8
    ("cards", 1),  # cards dealt to each seat this round / 17
    ("phase", 2),  # bid, play
    ("dealer", P),  # dealer's relative seat
    ("has_bid", P),  # 1 when that seat has bid
    ("bid", P),  # bid / cards
    ("won", P),  # tricks won / cards
    ("need", P),  # (bid - won) / cards: tricks still to take, negative once over the bid
    ("held", P),  # cards still in hand / cards
    ("bid_total", 1),  # sum of bids so far / cards
    ("played_by", P * N_CARDS),  # for each relative seat, the cards it has played this round
    ("in_trick", N_CARDS),  # cards in the current trick
    ("leader", P),  # relative seat that led the current trick
    ("winning", P),  # relative seat holding the current trick so far
    ("led_suit", 4),  # suit led in the current trick
    ("voids", P * 4),  # suits each seat is known to lack
    ("in_game", 1),  # 1 inside a full game, 0 for an independent round
    ("totals", P),  # game totals before this round, relative to the viewing seat's, / 100
    ("rounds_left", 1),  # rounds after this one / len(schedule)
    ("cards_left", 1),  # cards still to be dealt in later rounds / (17 * len(schedule))
    ("to_play", P),  # relative seat to act (0 when the viewing seat acts)
)
# The fields that hold scaled numbers; every other field holds only 0/1 flags (blobnet.compact
# carries those as bits).
SCALAR_FIELDS = frozenset({"cards", "bid", "won", "need", "held", "bid_total", "totals", "rounds_left", "cards_left"})
OFFSETS: dict[str, int] = {}
_o = 0
for _name, _w in FIELDS:
    OFFSETS[_name] = _o
    _o += _w
WIDTH = _o
del _o, _name, _w

# Each field's offset as a module-level int: the hot paths here and the compiled encoder
# (blobnet.features, where numba needs plain ints) read these.
OFF_HAND = OFFSETS["hand"]
OFF_TRUMP = OFFSETS["trump"]
OFF_PLAYERS = OFFSETS["players"]
OFF_CARDS = OFFSETS["cards"]
OFF_PHASE = OFFSETS["phase"]
OFF_DEALER = OFFSETS["dealer"]
OFF_HAS_BID = OFFSETS["has_bid"]
OFF_BID = OFFSETS["bid"]
OFF_WON = OFFSETS["won"]
OFF_NEED = OFFSETS["need"]
OFF_HELD = OFFSETS["held"]
OFF_BID_TOTAL = OFFSETS["bid_total"]
OFF_PLAYED_BY = OFFSETS["played_by"]
OFF_IN_TRICK = OFFSETS["in_trick"]
OFF_LEADER = OFFSETS["leader"]
OFF_WINNING = OFFSETS["winning"]
OFF_LED = OFFSETS["led_suit"]
OFF_VOIDS = OFFSETS["voids"]
OFF_IN_GAME = OFFSETS["in_game"]
OFF_TOTALS = OFFSETS["totals"]
OFF_ROUNDS_LEFT = OFFSETS["rounds_left"]
OFF_CARDS_LEFT = OFFSETS["cards_left"]
OFF_TO_PLAY = OFFSETS["to_play"]


def value_scale(cards: int) -> float:
    """Round scores are divided by this for the value head: the most a seat can score, 10 + cards."""
    return 10.0 + cards


def encode_round(r: Round, row: np.ndarray) -> None:
    """Write the position of ``r`` seen by the seat to play into ``row`` (float32, ``WIDTH``).

    Reads only what that seat knows: its own hand and the public state."""
    encode_rounds([r], row.reshape(1, WIDTH))


def encode_rounds(rounds: list[Round], out: np.ndarray, seat: int | None = None) -> None:
    """``encode_round`` for many positions into the rows of ``out`` (float32, (>= k, WIDTH)),
    with one numpy write for all of them: the search's hot path. ``seat``: view every position
    from that seat (its hand, seats relative to it) instead of from the seat to act."""
    ones: list[int] = []
    idx: list[int] = []
    val: list[float] = []
    for k, r in enumerate(rounds):
        viewer: int = r.to_play if seat is None else seat  # type: ignore[assignment]
        _collect(
            ones, idx, val, k * WIDTH, viewer, r.players, r.cards, r.trump, r.dealer, r.masks[viewer], r.bids,
            r.tricks_won, r.trick, r.played, r.void_masks, r.n_bids < r.players, r.win_seat, r.context, r.to_play,
        )  # fmt: skip
    _write(out, len(rounds), ones, idx, val)


def encode(view: View, row: np.ndarray) -> None:
    """Write ``view`` into ``row``: the same numbers ``encode_round`` gives for that position."""
    hand = 0
    for c in view.hand:
        hand |= 1 << c
    win_seat, _ = winning(view.trick, view.trump)
    ones: list[int] = []
    idx: list[int] = []
    val: list[float] = []
    _collect(
        ones, idx, val, 0, view.seat, view.players, view.cards, view.trump, view.dealer, hand, view.bids,
        view.tricks_won, view.trick, view.played, [sum(1 << x for x in v) for v in view.voids], view.phase == "bid",
        win_seat, view.context, view.to_play,
    )  # fmt: skip
    _write(row.reshape(1, WIDTH), 1, ones, idx, val)


def _write(out: np.ndarray, k: int, ones: list[int], idx: list[int], val: list[float]) -> None:
    if not out.flags.c_contiguous or out.shape[1] != WIDTH:
        raise ValueError(f"encode needs C-contiguous rows of width {WIDTH}, got shape {out.shape}")
    out[:k] = 0.0
    flat = out.reshape(-1)
    flat[ones] = 1.0
    flat[idx] = val


class _Seats:
    """Index tables for one (players, acting seat) pair, so the hot path does no seat arithmetic.
    Every list is in absolute seat order; each entry is where that seat's field lands."""

    __slots__ = ("played", "won_held", "bid_need", "has_bid", "bid", "need", "voids", "dealer", "rel", "totals")

    def __init__(self, n: int, seat: int) -> None:
        rel = [(s - seat) % n for s in range(n)]
        self.rel = rel
        self.played = [OFF_PLAYED_BY + r * N_CARDS for r in rel]
        self.won_held = [OFF_WON + r for r in rel] + [OFF_HELD + r for r in rel]
        self.bid = [OFF_BID + r for r in rel]
        self.need = [OFF_NEED + r for r in rel]
        self.bid_need = self.bid + self.need
        self.has_bid = [OFF_HAS_BID + r for r in rel]
        self.voids = [OFF_VOIDS + r * 4 for r in rel]
        self.dealer = [OFF_DEALER + r for r in rel]
        self.totals = [OFF_TOTALS + r for r in rel]


_SEATS = {(n, s): _Seats(n, s) for n in range(MIN_PLAYERS, MAX_PLAYERS + 1) for s in range(n)}


# fmt: off
def _collect(
    ones, idx, val, base, seat, n, cards, trump, dealer, hand, bids, won, trick, played, void_masks, bidding,
    win_seat, context, to_play,
):  # type: ignore[no-untyped-def]  # the hot path: positional and untyped on purpose
    # fmt: on
    """Append one position's entries, offset by ``base`` (its row's first flat index): the flat
    indices holding 1 to ``ones``, the other non-zero entries to ``idx`` and their values to ``val``."""
    t = _SEATS[n, seat]
    b = base
    bp = t.played
    ones += [b + bp[s] + c for s, c in played]
    ones += (b + OFF_TRUMP + (4 if trump is None else trump), b + OFF_PLAYERS + n - MIN_PLAYERS,
             b + OFF_PHASE + (0 if bidding else 1), b + t.dealer[dealer])  # fmt: skip
    if to_play is not None:  # None once the round is over
        ones.append(b + OFF_TO_PLAY + t.rel[to_play])
    h = b + OFF_HAND
    while hand:
        low = hand & -hand
        ones.append(h + low.bit_length() - 1)
        hand ^= low
    inv = 1.0 / cards
    left = (cards - len(played) // n) * inv  # cards held after the completed tricks
    held = [left] * n
    if trick:
        for s, c in trick:
            ones.append(b + OFF_IN_TRICK + c)
            held[s] -= inv
        rel = t.rel
        ones += (b + OFF_LEADER + rel[trick[0][0]], b + OFF_WINNING + rel[win_seat], b + OFF_LED + trick[0][1] // 13)
    idx += [b + x for x in t.won_held]
    idx += (b + OFF_CARDS, b + OFF_BID_TOTAL)
    val += [w * inv for w in won]
    val += held
    if bidding:
        total = 0
        bid_val: list[float] = []
        for s in range(n):
            bid = bids[s]
            if bid is not None:
                total += bid
                ones.append(b + t.has_bid[s])
                idx += (b + t.bid[s], b + t.need[s])
                bid_val += (bid * inv, (bid - won[s]) * inv)
        val += (cards / MAX_BID, total * inv)
        val += bid_val
    else:
        ones += [b + x for x in t.has_bid]
        idx += [b + x for x in t.bid_need]
        val += (cards / MAX_BID, sum(bids) * inv)
        val += [bid * inv for bid in bids]
        val += [(bid - w) * inv for bid, w in zip(bids, won)]
    for s in range(n):
        v = void_masks[s]
        if v:
            vb = b + t.voids[s]
            ones += [vb + x for x in range(4) if v >> x & 1]
    if context is not None:
        ones.append(b + OFF_IN_GAME)
        totals = context.totals
        mine = totals[seat]
        idx += [b + x for x in t.totals]
        val += [(x - mine) / 100.0 for x in totals]
        sched = context.schedule
        later = sched[context.round_index + 1 :]
        idx += (b + OFF_ROUNDS_LEFT, b + OFF_CARDS_LEFT)
        val += (len(later) / len(sched), sum(later) / (MAX_BID * len(sched)))
