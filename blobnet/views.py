"""Determinization: deal the cards a seat has not seen, uniformly over the deals its view allows.

A deal is allowed when every seat gets its number of cards and no seat gets a suit it is known
to lack. Most of the time no seat is known void and a plain shuffle is exact. With voids, a few
shuffles are tried and the first allowed one kept (rejection keeps the uniform distribution);
when the voids make that unlikely, an exact sampler counts the allowed deals suit by suit and
draws one with the right probability. Bids do not weight the deals.
"""

from __future__ import annotations

from functools import cache
from math import comb

import numpy as np

from blobnet.cards import FULL_DECK, SUIT_MASKS, cards_of, mask_of
from blobnet.rules import Round, View

__all__ = ["View", "determinize", "unseen_and_needs"]

REJECTION_TRIES = 16


def unseen_and_needs(view: View) -> tuple[list[int], list[int], list[int]]:
    """The cards ``view.seat`` has not seen, how many each seat still holds, and void masks."""
    played_by = [0] * view.players
    played_mask = 0
    for s, c in view.played:
        played_by[s] += 1
        played_mask |= 1 << c
    unseen = cards_of(FULL_DECK & ~played_mask & ~mask_of(view.hand))
    needs = [0 if s == view.seat else view.cards - played_by[s] for s in range(view.players)]
    voids = [0 if s == view.seat else sum(SUIT_MASKS[x] for x in v) for s, v in enumerate(view.voids)]
    return unseen, needs, voids


def determinize(view: View, rng: np.random.Generator, *, tries: int = REJECTION_TRIES) -> Round:
    """A Round that agrees with everything ``view.seat`` knows, the hidden cards dealt uniformly
    among all allowed deals. ``rng`` is the caller's generator; only it is drawn from."""
    unseen, needs, voids = unseen_and_needs(view)
    me_mask = mask_of(view.hand)
    constrained = [s for s in range(view.players) if voids[s] and needs[s]]
    arr = np.array(unseen, dtype=np.int64)
    for _ in range(tries if constrained else 1):
        deck = rng.permutation(arr).tolist()
        masks, pos = [], 0
        for s in range(view.players):
            masks.append(mask_of(deck[pos : pos + needs[s]]) if s != view.seat else me_mask)
            pos += needs[s]
        if all(not masks[s] & voids[s] for s in constrained):
            return Round.from_view(view, masks)
    return Round.from_view(view, _exact_masks(view.seat, unseen, needs, voids, constrained, me_mask, rng))


def _exact_masks(
    seat: int,
    unseen: list[int],
    needs: list[int],
    voids: list[int],
    constrained: list[int],
    me_mask: int,
    rng: np.random.Generator,
) -> list[int]:
    """Exact uniform sampling. A deal is fixed by how many cards of each suit every constrained
    seat gets (a row k) and which ones; the number of deals completing a partial deal depends only
    on the cards left per suit, so ``ways(j, left)`` counts them over seats ``j..`` and rows are
    drawn in proportion to ``prod C(left_s, k_s) * ways(j + 1, left - k)``. The unconstrained
    seats and the undealt rest share what is left by a plain shuffle."""
    by_suit = [rng.permutation([c for c in unseen if c // 13 == s]).tolist() for s in range(4)]
    allowed = [tuple(not voids[s] & SUIT_MASKS[x] for x in range(4)) for s in constrained]

    def rows(j: int, left: tuple[int, ...]) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        n, ok = needs[constrained[j]], allowed[j]

        def rec(x: int, rest: int, acc: tuple[int, ...]) -> None:
            if x == 4:
                if rest == 0:
                    out.append(acc)
                return
            top = min(rest, left[x]) if ok[x] else 0
            for k in range(top + 1):
                rec(x + 1, rest - k, acc + (k,))

        rec(0, n, ())
        return out

    @cache
    def ways(j: int, left: tuple[int, ...]) -> int:
        if j == len(constrained):
            return 1  # the rest is a plain shuffle whose count is the same for every partial deal
        total = 0
        for k in rows(j, left):
            w = comb(left[0], k[0]) * comb(left[1], k[1]) * comb(left[2], k[2]) * comb(left[3], k[3])
            total += w * ways(j + 1, tuple(a - b for a, b in zip(left, k)))
        return total

    left = tuple(len(c) for c in by_suit)
    if ways(0, left) == 0:
        raise ValueError("no deal of the unseen cards respects the known voids and hand sizes")
    masks = [0] * len(needs)
    masks[seat] = me_mask
    for j, s in enumerate(constrained):
        options = rows(j, left)
        weighted = [
            comb(left[0], k[0]) * comb(left[1], k[1]) * comb(left[2], k[2]) * comb(left[3], k[3])
            * ways(j + 1, tuple(a - b for a, b in zip(left, k)))
            for k in options
        ]  # fmt: skip
        options = [k for k, w in zip(options, weighted) if w]
        weights = [w for w in weighted if w]
        pick = int(rng.random() * sum(weights))
        acc = 0
        for k, w in zip(options, weights):  # noqa: B007 (k is the pick, used after the loop)
            acc += w
            if pick < acc:
                break
        taken = []
        for x in range(4):
            taken += by_suit[x][: k[x]]
            by_suit[x] = by_suit[x][k[x] :]
        masks[s] = mask_of(taken)
        left = tuple(a - b for a, b in zip(left, k))
    rest = rng.permutation([c for x in range(4) for c in by_suit[x]]).tolist()
    pos = 0
    for s in range(len(needs)):
        if s != seat and s not in constrained:
            masks[s] = mask_of(rest[pos : pos + needs[s]])
            pos += needs[s]
    return masks
