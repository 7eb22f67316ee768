"""The exact value of a position whose every hand is known (a determinized deal), for the last
tricks of a round: every seat chooses the move that maximises its own round score (max^n), and a
seat indifferent between moves picks among them uniformly (the tied options' values averaged).

The search (``blobnet.tree.select``, ``SearchConfig.solve``) scores a leaf with this instead of
asking the network once at most ``solve`` tricks are left: there the rest of the round is a few
dozen positions, the deal the tree was built on is known, and no row is sent for the leaf.
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
    """Every seat's round score under max^n play from ``st`` (all hands known, bids done) into
    ``out[:players]`` (float64, points, not normalised). Cost: the whole game tree below ``st``,
    forced moves walked without branching. A loop over an explicit stack, not recursion: a recursive
    kernel loaded from numba's cache crashes."""
    n = st[PLAYERS]
    depth = n * (st[CARDS] - st[TRICKS_DONE]) + 1  # the most choices on one line of play, and the leaf
    work = np.empty((depth, STATE), np.int64)  # the position of each choice on the line
    moves = np.empty((depth, N_ACTIONS), np.int64)
    count = np.empty(depth, np.int64)  # each choice's options, and the next one to try
    tried = np.empty(depth, np.int64)
    best = np.empty(depth, np.float64)  # the chooser's best value so far, and the options tied at it
    ties = np.empty(depth, np.int64)
    total = np.empty((depth, N_VALUES), np.float64)  # every seat's values summed over those ties
    value = np.empty(N_VALUES, np.float64)
    pts = np.empty(N_VALUES, np.int64)
    work[0] = st
    d = 0
    while True:
        # work[d] is a new position on the line: walk its forced moves, then open a choice or score it
        k = legal(work[d], moves[d])
        while k == 1:
            apply(work[d], moves[d, 0])
            k = legal(work[d], moves[d])
        if k > 0:
            count[d] = k
            tried[d] = 0
            best[d] = -1.0
            ties[d] = 0
        else:
            scores(work[d], pts)
            for s in range(n):
                value[s] = pts[s]
            d -= 1
            while True:  # climb: ``value`` answers the option last tried at choice d
                if d < 0:
                    out[:n] = value[:n]
                    return
                v = value[work[d, TO_PLAY]]
                if v > best[d] + 1e-9:  # better for the chooser: the tied set starts again
                    best[d] = v
                    ties[d] = 0
                    total[d, :n] = 0.0
                if v >= best[d] - 1e-9:
                    ties[d] += 1
                    for s in range(n):
                        total[d, s] += value[s]
                if tried[d] < count[d]:
                    break
                for s in range(n):  # every option tried: the mean over the chooser's best ones
                    value[s] = total[d, s] / ties[d]
                d -= 1
        work[d + 1] = work[d]  # down the next option of choice d
        apply(work[d + 1], moves[d, tried[d]])
        tried[d] += 1
        d += 1
