"""The exact value of a position whose every hand is known (a determinized deal), for the last
tricks of a round: every seat chooses the move that maximises its own round score (max^n), and a
seat indifferent between moves picks among them uniformly (the tied options' values averaged).

The search (``blobnet.tree.select``, ``SearchConfig.solve``) scores a leaf with this instead of the
network's value once at most ``solve`` tricks are left: there the whole rest of the round is a
few hundred positions at most, and the deal the tree was built on is known.
"""

from __future__ import annotations

import numpy as np

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.jit import njit
from blobnet.position import CARDS, N_BIDS, PLAYERS, STATE, TO_PLAY, TRICKS_DONE, apply, legal, scores

__all__ = ["solve_values", "in_endgame"]


@njit(cache=True)
def in_endgame(st: np.ndarray, solve: int) -> bool:
    """``st`` is in the play with at most ``solve`` tricks left (the one in progress included)."""
    return st[TO_PLAY] >= 0 and st[N_BIDS] == st[PLAYERS] and st[CARDS] - st[TRICKS_DONE] <= solve


@njit(cache=True)
def solve_values(st: np.ndarray, out: np.ndarray) -> None:
    """Every seat's round score under max^n play from ``st`` (all hands known) into
    ``out[:players]`` (float64, points, not normalised). Cost: the whole game tree below ``st``."""
    n = st[PLAYERS]
    if st[TO_PLAY] < 0:
        pts = np.zeros(N_VALUES, np.int64)
        scores(st, pts)
        for s in range(n):
            out[s] = pts[s]
        return
    moves = np.empty(N_ACTIONS, np.int64)
    k = legal(st, moves)
    seat = st[TO_PLAY]
    child = np.empty(STATE, np.int64)
    options = np.empty((k, N_VALUES), np.float64)
    best = -1.0
    for i in range(k):
        child[:] = st
        apply(child, moves[i])
        solve_values(child, options[i])
        best = max(best, options[i, seat])
    out[:n] = 0.0
    ties = 0
    for i in range(k):
        if options[i, seat] >= best - 1e-9:
            ties += 1
            for s in range(n):
                out[s] += options[i, s]
    for s in range(n):
        out[s] /= ties
