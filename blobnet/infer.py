"""Policy-based inference from the bids: deals weighted by how likely each seat's bid is under the
network's policy for that seat's view of the deal (compiled kernels over position arrays).

A bid reveals a hand: a seat that bid 3 of 5 holds high cards and trumps. The uniform deal
(``blobnet.deal``) ignores that. Following Rebstock, Solinas, Buro and Sturtevant (2019, "Policy
Based Inference in Trick-Taking Card Games"), the search draws ``infer`` times more deals than it
keeps, asks the network for every other seat's bid policy in each (the position as it was when
that seat bid, seen by that seat, with the hand the deal gives it), and keeps ``dets`` of them,
drawn without replacement with weights ``prod_s p_s(bid_s)`` (Gumbel top-k). The searcher's own
bid and the seats that have not bid yet carry no weight.

``bid_position`` rebuilds the position of a bid from a later one: every seat's hand then is its
hand now plus the cards it has played; tricks, voids and the trick in progress are cleared; the
bids of the seats after it are taken back. ``bid_rows`` writes one network row per (deal, bidder).
"""

from __future__ import annotations

import numpy as np

from blobnet.cards import BID0, N_ACTIONS
from blobnet.features import encode_state
from blobnet.jit import njit
from blobnet.position import (
    BID_TOTAL,
    BIDS,
    DEALER,
    HAND,
    LEADER,
    N_BIDS,
    PLAYED,
    PLAYERS,
    STATE,
    TO_PLAY,
    TRICK,
    TRICK_LEN,
    TRICKS_DONE,
    VOIDS,
    WIN_CARD,
    WIN_SEAT,
    WON,
    legal,
)

__all__ = ["bid_position", "bid_rows", "bidders", "keep_likely"]


@njit(cache=True)
def bid_position(st: np.ndarray, s: int, out: np.ndarray) -> None:
    """The position of ``st`` (a full deal) when seat ``s`` made its bid, into ``out`` (STATE)."""
    for i in range(STATE):
        out[i] = st[i]
    n = st[PLAYERS]
    for t in range(n):
        out[HAND + t] = st[HAND + t] | st[PLAYED + t]
        out[PLAYED + t] = 0
        out[WON + t] = 0
        out[VOIDS + t] = 0
        out[TRICK + t] = 0
    out[TRICK_LEN] = 0
    out[TRICKS_DONE] = 0
    out[LEADER] = -1
    out[WIN_SEAT] = -1
    out[WIN_CARD] = -1
    first = (st[DEALER] + 1) % n
    j = (s - first) % n  # s bid j-th
    total = 0
    for i in range(n):
        t = (first + i) % n
        if i < j:
            total += st[BIDS + t]
        else:
            out[BIDS + t] = -1
    out[N_BIDS] = j
    out[BID_TOTAL] = total
    out[TO_PLAY] = s


def bidders(st: np.ndarray, seat: int) -> np.ndarray:
    """The seats other than ``seat`` that have bid in ``st``, as int64."""
    n = int(st[PLAYERS])
    return np.array([t for t in range(n) if t != seat and st[BIDS + t] >= 0], dtype=np.int64)


@njit(cache=True)
def bid_rows(deals: np.ndarray, who: np.ndarray, rows: np.ndarray, mask: np.ndarray, target: np.ndarray) -> int:
    """For every deal (``deals``: k x STATE) and every seat of ``who``, the row of that seat at its
    bid (``rows``, float32 WIDTH, encoded from its own view), its legal bids (``mask``) and the bid
    it made (``target``, an action id); returns how many rows (k * len(who))."""
    pos = np.empty(STATE, dtype=np.int64)
    moves = np.empty(N_ACTIONS, dtype=np.int64)
    r = 0
    for d in range(deals.shape[0]):
        for s in who:
            bid_position(deals[d], s, pos)
            encode_state(pos, s, rows[r])
            mask[r, :] = False
            for i in range(legal(pos, moves)):
                mask[r, moves[i]] = True
            target[r] = BID0 + deals[d, BIDS + s]
            r += 1
    return r


def keep_likely(priors: np.ndarray, target: np.ndarray, deals: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Which ``keep`` of ``deals`` candidate deals to search: drawn without replacement with weights
    the product of each row's prior of the bid made (rows grouped by deal, ``priors`` (rows,
    N_ACTIONS)), by Gumbel top-k with the caller's ``rng``."""
    p = priors[np.arange(len(target)), target].astype(np.float64)
    log_w = np.log(np.maximum(p, 1e-12)).reshape(deals, -1).sum(axis=1)
    return np.argsort(-(log_w + rng.gumbel(size=deals)))[:keep]
