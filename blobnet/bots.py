"""Players that need no network: a uniform random one and a rule-based one.

Both see only a ``View`` (``Round.view(seat)``) and answer an action id from
``view.legal_actions()``. They own their random generator (``random.Random(seed)``), so a
seeded bot replays the same choices given the same views.

``HeuristicBot`` is what a careful casual player does: bid the tricks its high cards, trumps
and short suits are likely to take, then play to make exactly that many: win cheaply while
tricks are still needed, duck with the highest card that still loses once it has enough, and
throw away dangerous high cards when it cannot follow and wants no more tricks.
"""

from __future__ import annotations

import random
from functools import cache
from math import comb

from blobnet.cards import BID0, FULL_DECK, N_CARDS, SUIT_MASKS, beats, mask_of
from blobnet.rules import View

__all__ = ["Bot", "RandomBot", "HeuristicBot", "estimate_tricks"]

# Weight of one low trump held alongside a short side suit: it can ruff that suit when led.
RUFF_TRUMP_VALUE = 0.5
# How much more a second (third, ...) card of a side suit is exposed to being ruffed than the first.
RUFF_EXPOSURE_STEP = 0.6
# Random deals per table size used to calibrate the estimate (see ``_scale``).
CALIBRATION_HANDS = 200


class Bot:
    """The player protocol: ``act(view) -> action id``, one of ``view.legal_actions()``."""

    def act(self, view: View) -> int:
        raise NotImplementedError


class RandomBot(Bot):
    """Picks uniformly among the legal actions."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def act(self, view: View) -> int:
        return self.rng.choice(view.legal_or_raise())


def _p_none_among(outside: int, pool: int, drawn: int) -> float:
    """P(none of ``outside`` given cards lands among ``drawn`` cards taken from ``pool``)."""
    if drawn > pool - outside:
        return 0.0
    return comb(pool - outside, drawn) / comb(pool, drawn)


def _raw_estimate(hand: tuple[int, ...] | list[int], *, players: int, trump: int | None) -> float:
    """Expected tricks of ``hand`` before any card is seen, by a card-by-card estimate.

    A card scores the chance that no opponent holds a higher card of its suit; a side-suit card
    loses the chance that an opponent can ruff it (void in the suit and holding a trump), and
    lower cards of a long side suit are more exposed. Low trumps score when a short side suit
    gives them something to ruff. More players and bigger hands mean more of the deck is out, so
    every card is worth less; that is where ``players`` and ``len(hand)`` come in.
    """
    h = len(hand)
    pool = N_CARDS - h  # cards not in this hand
    f = (players - 1) * h / pool  # chance a given outside card sits with an opponent
    mine = [[c % 13 for c in hand if c // 13 == s] for s in range(4)]
    trumps = len(mine[trump]) if trump is not None else 0
    total = 0.0
    low_trumps = 0
    for s in range(4):
        for j, r in enumerate(sorted(mine[s], reverse=True)):
            higher_out = (12 - r) - j  # higher cards of the suit not in this hand
            p = (1.0 - f) ** higher_out
            if trump is not None and s != trump:
                # an opponent ruffs: void in s (its cards come from the pool) and holding a trump
                void = _p_none_among(13 - len(mine[s]), pool, h)
                has_trump = 1.0 - _p_none_among(13 - trumps, pool, h)
                q = min(1.0, void * has_trump * (1.0 + RUFF_EXPOSURE_STEP * j))
                p *= (1.0 - q) ** (players - 1)
            elif s == trump and p < RUFF_TRUMP_VALUE:
                low_trumps += 1
            total += p
    if trump is not None and low_trumps:
        short = sum(1 for s in range(4) if s != trump and len(mine[s]) <= 1)
        total += min(low_trumps, short) * RUFF_TRUMP_VALUE * (1.0 - f)
    return total


@cache
def _scale(players: int, cards: int, no_trump: bool) -> float:
    """Makes the estimates of a table add up to the tricks there are: ``cards / players`` per seat
    on average over random hands (a fixed sample, so the bot stays deterministic). The card-by-card
    estimate alone undercounts big hands, where high cards fall early and lower ones then win."""
    rng = random.Random(players * 100 + cards)
    trump = None if no_trump else 0
    total = 0.0
    for _ in range(CALIBRATION_HANDS):
        deck = rng.sample(range(N_CARDS), players * cards)
        for s in range(players):
            total += _raw_estimate(deck[s * cards : (s + 1) * cards], players=players, trump=trump)
    mean = total / (CALIBRATION_HANDS * players)
    return (cards / players) / mean if mean > 0 else 1.0


def estimate_tricks(hand: tuple[int, ...] | list[int], *, players: int, trump: int | None) -> float:
    """Expected tricks of ``hand``: the card-by-card estimate, scaled so that a table's estimates
    add up to the tricks there are on average."""
    est = _raw_estimate(hand, players=players, trump=trump) * _scale(players, len(hand), trump is None)
    return min(est, float(len(hand)))


class HeuristicBot(Bot):
    """A rule-based player: bids its likely tricks, then plays to make the bid exactly.

    ``seed`` seeds the generator that breaks ties between equally good bids.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def act(self, view: View) -> int:
        legal = view.legal_or_raise()
        if view.phase == "bid":
            return self._bid(view, legal)
        return self._play(view, legal)

    # -- bidding ---------------------------------------------------------------------------
    def _bid(self, view: View, legal: list[int]) -> int:
        est = estimate_tricks(view.hand, players=view.players, trump=view.trump)
        # The nearest legal bid; when the hook removes the best one, the closer neighbour wins.
        return min(legal, key=lambda a: (abs(a - BID0 - est), self.rng.random()))

    # -- play ------------------------------------------------------------------------------
    def _play(self, view: View, legal: list[int]) -> int:
        k = _Knowledge(view)
        bid = view.bids[view.seat]
        need = (bid if bid is not None else 0) - view.tricks_won[view.seat]
        if not view.trick:
            return _lead(k, legal, need=need, left=len(view.hand))
        best = view.trick[0][1]
        for _, c in view.trick[1:]:
            if beats(c, best, k.trump):
                best = c
        last = len(view.trick) == view.players - 1
        winners = [c for c in legal if beats(c, best, k.trump)]
        losers = [c for c in legal if not beats(c, best, k.trump)]
        if need > 0:
            if not winners:
                return min(losers, key=lambda c: (k.master(c), k.strength(c)))  # dump the least useful card
            if last:
                return min(winners, key=k.strength)  # the cheapest card that takes it
            led = view.trick[0][1] // 13
            if all(c // 13 != led for c in winners):
                return min(winners, key=k.strength)  # ruffing: a low trump does it unless over-ruffed
            masters = [c for c in winners if k.master(c)]
            if masters:
                return min(masters, key=k.strength)
            return max(winners, key=k.strength)  # a strong card, to make the others' job hard
        # enough tricks (or already too many): lose this one if possible
        if losers:
            return max(losers, key=k.strength)  # the most dangerous card that still loses
        if last:
            return max(winners, key=k.strength)  # taking it anyway: shed the biggest card
        return min(winners, key=k.strength)  # the lowest, so a later card may still overtake it


class _Knowledge:
    """What a seat can tell about the cards: trump, and the cards it has not seen (a mask)."""

    __slots__ = ("trump", "unseen")

    def __init__(self, view: View) -> None:
        self.trump = view.trump
        seen = mask_of(view.hand)
        for _, c in view.played:
            seen |= 1 << c
        self.unseen = FULL_DECK & ~seen

    def above(self, card: int) -> int:
        """Unseen cards of the card's suit that are higher than it."""
        higher_in_suit = SUIT_MASKS[card // 13] & ~((2 << card) - 1)
        return (self.unseen & higher_in_suit).bit_count()

    def master(self, card: int) -> bool:
        """No unseen card of its suit beats it."""
        return self.above(card) == 0

    def strength(self, card: int) -> int:
        """An ordering of cards by how likely they are to take a trick: trumps above everything."""
        return card % 13 + (13 if card // 13 == self.trump else 0)


def _lead(k: _Knowledge, legal: list[int], *, need: int, left: int) -> int:
    t = k.trump
    if need > 0:
        masters = [c for c in legal if k.master(c)]
        side = [c for c in masters if c // 13 != t]
        if side:
            return max(side, key=k.strength)  # cash side-suit winners before they are ruffed
        if masters:
            return max(masters, key=k.strength)
        if need >= left:
            return max(legal, key=k.strength)  # every trick is needed: lead the strongest
        # Lead low from the shortest side suit: keeps the high cards and makes a void to ruff with.
        counts = [sum(1 for c in legal if c // 13 == s) for s in range(4)]
        side_cards = [c for c in legal if c // 13 != t] or legal
        return min(side_cards, key=lambda c: (counts[c // 13], k.strength(c)))
    # No tricks wanted: lead the card most likely to be beaten (most unseen cards above it), a
    # side suit before trumps, which nobody can beat by ruffing.
    return max(legal, key=lambda c: (c // 13 != t, k.above(c), -k.strength(c)))
