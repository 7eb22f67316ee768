"""The classic baseline: single-observer information-set MCTS with random rollouts, compiled.

``ISMCTSBot`` is the textbook player a new user would write first (Cowling, Powley and Whitehouse
2012, "Information Set Monte Carlo Tree Search"): one tree for the acting seat, whose nodes are
the sequences of actions from its decision, shared by every deal of the hidden cards. Each
simulation deals the cards the seat has not seen (``blobnet.deal.deal``: uniform over the deals
its view allows, bids not used), walks down the tree among the children that are legal in that
deal, adds one child, plays the rest of the round at random, and credits every node on its path
with the round score of the seat that chose it. A child is chosen by UCB1 over its mean score and
its availability count (the simulations in which it was legal), the subset-armed bandit rule of
the paper:

    mean + c * sqrt(ln(available) / visits)

Scores are raw points (10 + bid for an exact bid, else 0), so ``c`` is in points: about 10 plays
best. The move is the root child with the most visits. It needs no network and plays any table
size, trump or no trump, in a single round or a full game (a rollout ends with the round; the
game's totals do not change what a round's best play is).

A player spec names it as ``ismcts`` or ``ismcts:sims=1000,c=10`` (``clients.players``).

``among_random`` is its calibration: one ismcts seat among RandomBots, the round scores it makes.
Told to see every hand at its bids or its plays (each simulation on the true deal instead of a
sampled one), it measures what the hidden cards cost the search (``bench.ismcts_bound``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from blobnet.bots import Bot, RandomBot
from blobnet.cards import BID0, N_ACTIONS
from blobnet.deal import below, deal, rng_state
from blobnet.jit import njit
from blobnet.position import STATE, TO_PLAY, apply, legal, pack, pack_view, popcount, scores
from blobnet.rules import Round, View, choices, random_round

__all__ = ["ISMCTSBot", "search", "among_random", "calibration_round", "SEES", "DEFAULT_SIMS", "DEFAULT_C"]

DEFAULT_SIMS = 1000  # simulations a decision: about 7.4 points a round against three RandomBots at 4 x 5
DEFAULT_C = 10.0  # UCB1's exploration constant, in points (a made bid of 0 scores 10)
_MAX_DEPTH = 64  # actions left in a round at most: 8 bids + 52 cards, and the root
_DEALT = np.empty(0, dtype=np.int64)  # search's true_st when the search samples the hidden cards
SEES = ("bids", "plays")  # the decisions at which among_random's seat may see every hand


@njit(cache=True, inline="always")
def _bit(a: int) -> int:
    """An action's bit in a legal-action mask: the card itself, or the bid. A node's children are
    all bids or all cards, so the two never share a mask."""
    return a if a < BID0 else a - BID0


@njit(cache=True)
def search(
    view_st: np.ndarray, seat: int, sims: int, c: float, rs: np.ndarray, actions: np.ndarray, visits: np.ndarray,
    true_st: np.ndarray,
) -> int:  # fmt: skip
    """``sims`` simulations of IS-MCTS (module docstring) from what ``seat`` knows (``view_st``,
    ``pack_view``; ``seat`` is to act). Writes the root's actions into ``actions`` and their visits
    into ``visits`` (int64, at least N_ACTIONS each, in the order the children were added) and
    returns how many. ``rs`` is the caller's generator state (``blobnet.deal.rng_state``).
    ``true_st``: empty, or the whole position (``pack``), every hand in it: then each simulation
    starts from it instead of a sampled deal (a search that sees every hand, for ``among_random``)."""
    size = sims + 1  # one node added a simulation
    first = np.full(size, -1, dtype=np.int64)  # a node's most recently added child, -1 for none
    sibling = np.full(size, -1, dtype=np.int64)  # the child added before this one by the same parent
    action = np.zeros(size, dtype=np.int64)  # the action leading to the node
    mover = np.zeros(size, dtype=np.int64)  # the seat that took that action (whose score it earns)
    n = np.zeros(size, dtype=np.int64)  # visits
    avail = np.ones(size, dtype=np.int64)  # simulations in which the node's action was legal (1 at birth)
    total = np.zeros(size, dtype=np.float64)  # sum of the mover's round scores over the visits
    path = np.zeros(_MAX_DEPTH, dtype=np.int64)
    st = np.empty(STATE, dtype=np.int64)
    moves = np.empty(N_ACTIONS, dtype=np.int64)
    points = np.zeros(8, dtype=np.int64)
    nodes = 1
    for _ in range(sims):
        if len(true_st):
            st[:] = true_st
        else:
            deal(view_st, seat, rs, st)
        node = 0
        depth = 0
        while True:  # select, then expand one child
            k = legal(st, moves)
            if k == 0:
                break
            mask = 0
            for i in range(k):
                mask |= 1 << _bit(moves[i])
            tried = 0
            best = -1
            best_u = -np.inf
            ch = first[node]
            while ch >= 0:
                b = 1 << _bit(action[ch])
                if mask & b:
                    tried |= b
                    u = total[ch] / n[ch] + c * math.sqrt(math.log(avail[ch]) / n[ch])
                    if u > best_u:
                        best_u = u
                        best = ch
                ch = sibling[ch]
            untried = mask & ~tried
            if untried:
                a = -1
                j = below(rs, popcount(untried))
                for i in range(k):
                    if untried >> _bit(moves[i]) & 1:
                        if j == 0:
                            a = moves[i]
                            break
                        j -= 1
                new = nodes
                nodes += 1
                action[new] = a
                mover[new] = st[TO_PLAY]
                sibling[new] = first[node]
                first[node] = new
                apply(st, a)
                depth += 1
                path[depth] = new
                break
            ch = first[node]
            while ch >= 0:  # every child legal in this deal was available to the choice
                if mask >> _bit(action[ch]) & 1:
                    avail[ch] += 1
                ch = sibling[ch]
            apply(st, action[best])
            node = best
            depth += 1
            path[depth] = node
        while True:  # the random rollout
            k = legal(st, moves)
            if k == 0:
                break
            apply(st, moves[below(rs, k)])
        scores(st, points)
        n[0] += 1
        for i in range(1, depth + 1):
            node = path[i]
            n[node] += 1
            total[node] += points[mover[node]]
    k = 0
    ch = first[0]
    while ch >= 0:
        actions[k] = action[ch]
        visits[k] = n[ch]
        k += 1
        ch = sibling[ch]
    return k


class ISMCTSBot(Bot):
    """IS-MCTS with random rollouts (module docstring): ``sims`` simulations a decision, UCB1
    constant ``c`` in points. A forced move is not searched. ``seed`` seeds the bot's own
    generator; None draws one from the operating system."""

    def __init__(self, seed: int | None = None, *, sims: int = DEFAULT_SIMS, c: float = DEFAULT_C) -> None:
        if isinstance(sims, bool) or not isinstance(sims, int) or sims < 1:
            raise ValueError(f"ismcts sims={sims!r}: give a whole number of simulations, at least 1")
        if not (isinstance(c, int | float) and math.isfinite(c) and c >= 0):
            raise ValueError(f"ismcts c={c!r}: give a finite exploration constant >= 0 (about 10 plays best)")
        self.sims = sims
        self.c = float(c)
        self.name = f"ismcts:sims={sims},c={self.c:g}"
        self.rs = rng_state(int.from_bytes(os.urandom(8)) if seed is None else seed)
        self._actions = np.empty(N_ACTIONS, dtype=np.int64)
        self._visits = np.empty(N_ACTIONS, dtype=np.int64)

    def root_visits(self, view: View, seen: Round | None = None) -> dict[int, int]:
        """Search ``view`` and return the visits of each root action (all of the legal ones once
        ``sims`` is at least their number). ``seen``: the round itself, every hand in sight (its
        position is ``view``'s): every simulation on it, none on a sampled deal."""
        true_st = _DEALT if seen is None else pack(seen)
        k = search(pack_view(view), view.seat, self.sims, self.c, self.rs, self._actions, self._visits, true_st)
        return {int(a): int(v) for a, v in zip(self._actions[:k], self._visits[:k])}

    def act(self, view: View, seen: Round | None = None) -> int:
        """The most visited root action (ties to the lower id); a forced move is not searched.
        ``seen``: as ``root_visits``."""
        legal_actions = view.legal_or_raise()
        if len(legal_actions) == 1:
            return legal_actions[0]
        visits = self.root_visits(view, seen)
        return max(sorted(visits), key=visits.__getitem__)

    def __repr__(self) -> str:
        return f"<ISMCTSBot {self.name}>"


def calibration_round(i: int, players: int, cards: int) -> tuple[Round, int]:
    """Round ``i`` of ``among_random`` (``random_round`` of ``default_rng([7, i])``) and the seat
    that plays it among the RandomBots (turning round the table)."""
    return random_round(players, cards, np.random.default_rng([7, i])), i % players


def among_random(
    rounds: int, *, sims: int = DEFAULT_SIMS, c: float = DEFAULT_C, players: int = 4, cards: int = 5,
    sees: tuple[str, ...] = (), seed: int = 1,
) -> np.ndarray:  # fmt: skip
    """The round scores (``rounds``,) of one ismcts seat among ``players - 1`` RandomBots, its seat
    turning round the table, on fixed deals (``calibration_round``).
    ``sees``: some of ``SEES``, the decisions at which its search sees every hand."""
    if not set(sees) <= set(SEES):
        raise ValueError(f"sees={sees!r}: name some of {', '.join(SEES)}")
    bot, other = ISMCTSBot(seed, sims=sims, c=c), RandomBot(seed + 1)
    out = np.zeros(rounds)
    for i in range(rounds):
        r, me = calibration_round(i, players, cards)
        for seat in choices(r):
            if seat != me:
                r.play(other.act(r.view(seat)))
            else:
                sees_all = ("bids" if r.phase == "bid" else "plays") in sees
                r.play(bot.act(r.view(seat), r if sees_all else None))
        out[i] = r.scores()[me]
    return out
