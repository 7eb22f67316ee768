"""Determinized PUCT search with network priors and values for every seat.

One decision: the acting seat's view is dealt out ``dets`` times (``determinize``) and each deal
gets its own tree. The search runs in waves: in every tree, up to ``leaves`` simulations descend
one after another under virtual loss, so each takes a different path; the new leaves of all the
trees go to the evaluator in one request, and their values are backed up when it answers. One
await per wave instead of one per leaf keeps the Python per simulation small, and a decision's
leaves arrive at the batcher together.

Values are per seat, normalised round scores (``blobnet.encode.value_scale``). Each edge keeps
the value of the seat that chose it, so every node backs up the value of the seat that moved into
it. A leaf is evaluated from the view of the seat acting there (priors, and the values of the
other seats), and, where that is not the searching seat, once more from the searching seat's view
(``config.root_view``): its own values then depend on its own hand. Without that second row, the
searcher's moves would be valued by a seat that cannot see its cards, and a bid would be judged by
how often such a bid is made on average, whatever the hand.

Virtual loss is one visit counted on the way down whose value (0, the worst a seat can score) is
replaced on the way back; a descent that runs into a leaf already waiting in this wave is
undone and its tree sits the rest of the wave out.

The root is expanded before any leaf is sent (its features depend on the view alone, so one
evaluation serves every tree), so no wave is copies of the root; inside a tree, forced moves are
walked without asking the network; a decision with one legal action is not searched.
The search knows the evaluator protocol alone, never torch or a server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blobnet.config import SearchConfig
from blobnet.encode import WIDTH, encode, encode_rounds, value_scale
from blobnet.evaluator import Evaluator
from blobnet.rules import Round, View
from blobnet.views import determinize

__all__ = ["Evaluator", "Search", "SearchResult", "choose_action"]


Determinize = Callable[[View, np.random.Generator], Round]


class Node:
    """A position in one tree. Edge statistics live in the node, one slot per legal action."""

    __slots__ = ("state", "to_play", "actions", "priors", "children", "n", "w", "visits", "fpu", "values", "pending")

    def __init__(self, state: Round) -> None:
        self.state = state
        self.to_play = state.to_play
        self.actions: list[int] = []  # empty until expanded
        self.priors: list[float] = []
        self.children: list[Node | None] = []
        self.n: list[int] = []  # visits through each edge (virtual ones included while in flight)
        self.w: list[float] = []  # summed value, for the seat choosing, through each edge
        self.visits = 0
        self.fpu = 0.0  # value assumed for an unvisited edge: the network's estimate of this node
        self.values: list[float] | None = None  # terminal: every seat's normalised score
        self.pending = False  # waiting for the network in the current wave

    def expand(self, actions: list[int], priors: list[float], fpu: float) -> None:
        k = len(actions)
        self.actions, self.priors, self.fpu = actions, priors, fpu
        self.children = [None] * k
        self.n = [0] * k
        self.w = [0.0] * k


@dataclass(slots=True)
class SearchResult:
    actions: list[int]  # legal actions at the root, ascending
    visits: list[int]  # root visits per action, summed over the determinizations
    evaluations: int  # network evaluations this search asked for
    simulations: int
    features: np.ndarray | None = None  # the root's encoded view (WIDTH,), None when not searched

    def policy(self) -> list[float]:
        total = sum(self.visits)
        return [v / total for v in self.visits]

    def is_uniform(self) -> bool:
        """All root actions visited equally: the sign of a search that never looked past the root."""
        return len(self.visits) > 1 and min(self.visits) == max(self.visits)


def choose_action(result: SearchResult, temperature: float, rng: np.random.Generator) -> int:
    """The most visited action at temperature 0 (ties to the lower id), else visits ** (1/T)."""
    if temperature == 0 or len(result.actions) == 1:
        best = max(result.visits)
        return result.actions[result.visits.index(best)]
    weights = np.asarray(result.visits, dtype=np.float64) ** (1.0 / temperature)
    return result.actions[int(rng.choice(len(weights), p=weights / weights.sum()))]


def terminal_values(state: Round) -> list[float]:
    scale = value_scale(state.cards)
    return [s / scale for s in state.scores()]


class Search:
    """PUCT over ``config.dets`` determinizations. ``evaluator`` and ``deal`` are passed in (the
    OpenSpiel MCTSBot style), so tests can hand in fakes with known answers. ``collisions``
    counts descents undone because they met a leaf already waiting in their wave."""

    def __init__(self, evaluator: Evaluator, config: SearchConfig, *, deal: Determinize = determinize) -> None:
        self.evaluator = evaluator
        self.config = config
        self.deal = deal
        self.evaluations = 0
        self.simulations = 0
        self.collisions = 0
        self._rows = np.zeros((self.rows_per_wave(config), WIDTH), dtype=np.float32)

    @staticmethod
    def rows_per_wave(config: SearchConfig) -> int:
        """The most rows one wave asks the evaluator for."""
        return config.dets * min(config.leaves, config.sims) * (2 if config.root_view else 1)

    async def run(self, view: View, rng: np.random.Generator, *, noise: bool = False) -> SearchResult:
        """Search the acting seat's decision. ``rng`` (the caller's) draws deals and noise."""
        if view.to_play != view.seat:
            raise ValueError(f"seat {view.seat} is not to play (seat {view.to_play} is)")
        legal = view.legal_actions()
        if len(legal) == 1:
            return SearchResult(legal, [1], 0, 0)
        cfg = self.config
        evals0, sims0 = self.evaluations, self.simulations
        row = np.empty((1, WIDTH), dtype=np.float32)
        encode(view, row[0])
        priors, values = await self.evaluator.evaluate_many(row, [legal])
        self.evaluations += 1
        if noise:
            eta = rng.dirichlet([cfg.dirichlet_alpha] * len(legal))
            eps = cfg.dirichlet_eps
            priors = [(1 - eps) * p + eps * float(e) for p, e in zip(priors, eta)]
        roots = []
        for _ in range(cfg.dets):
            root = Node(self.deal(view, rng))
            root.expand(legal, priors, values[0][0])
            roots.append(root)
        left = [cfg.sims] * cfg.dets
        while any(left):
            await self._wave(roots, left, view.seat)
        visits = [sum(col) for col in zip(*(root.n for root in roots))]
        return SearchResult(legal, visits, self.evaluations - evals0, self.simulations - sims0, row[0])

    async def _wave(self, roots: list[Node], left: list[int], seat: int) -> None:
        """Up to ``leaves`` descents per tree, one evaluator request for all the new leaves;
        ``seat`` is the searching seat (an argument: one Search serves many games at once)."""
        c = self.config.c_puct
        leaves: list[tuple[Node, list[tuple[Node, int]]]] = []
        legals: list[list[int]] = []
        rows = self._rows
        for t, root in enumerate(roots):
            for _ in range(min(self.config.leaves, left[t])):
                path = self._descend(root, c)
                if path is None:  # ran into this wave's own leaf: the tree is busy until it returns
                    self.collisions += 1
                    break
                left[t] -= 1
                node = path[-1][0].children[path[-1][1]]
                assert node is not None
                if node.values is not None:
                    self._backup(path, node.values)
                    continue
                node.pending = True
                leaves.append((node, path))
                legals.append(node.actions)  # set by _descend; expanded when the values come
        if not leaves:
            return
        k = len(leaves)
        encode_rounds([node.state for node, _ in leaves], rows)
        # The searching seat's own view of the leaves where another seat acts (module docstring).
        others = [j for j, (node, _) in enumerate(leaves) if node.to_play != seat] if self.config.root_view else []
        if others:
            encode_rounds([leaves[j][0].state for j in others], rows[k:], seat=seat)
            legals += [legals[j] for j in others]  # any legal list will do: those rows' priors are unused
        priors, values = await self.evaluator.evaluate_many(rows[: k + len(others)], legals)
        self.evaluations += k + len(others)
        own = dict(zip(others, values[k:]))
        pos = 0
        for j in range(k):
            node, path = leaves[j]
            legal, rel = legals[j], values[j]
            m = len(legal)
            node.expand(legal, priors[pos : pos + m], rel[0])
            node.pending = False
            pos += m
            tp, n = node.to_play, node.state.players
            backed = [rel[(s - tp) % n] for s in range(n)]  # type: ignore[operator]
            if j in own:
                backed[seat] = own[j][0]
            self._backup(path, backed)

    def _backup(self, path: list[tuple[Node, int]], values: list[float]) -> None:
        self.simulations += 1
        for node, i in path:
            node.w[i] += values[node.to_play]  # type: ignore[index]

    @staticmethod
    def _descend(root: Node, c: float) -> list[tuple[Node, int]] | None:
        """Select edges by PUCT from the root to a new leaf, counting a virtual visit on each.
        Returns the path whose last edge leads to the leaf (a new node, expanded already when it
        is a forced move or terminal), or None (visits undone) when the path meets a pending leaf."""
        node = root
        path: list[tuple[Node, int]] = []
        while True:
            # PUCT: q + c * p * sqrt(N) / (1 + n); an unvisited edge counts the node's own value
            n, w, p = node.n, node.w, node.priors
            scale = c * math.sqrt(node.visits + 1)
            fpu = node.fpu
            best, best_score = 0, -1e9
            for i in range(len(n)):
                ni = n[i]
                s = (w[i] / ni if ni else fpu) + scale * p[i] / (1 + ni)
                if s > best_score:
                    best, best_score = i, s
            n[best] += 1
            node.visits += 1
            path.append((node, best))
            child = node.children[best]
            if child is None:
                state = node.state.clone()
                state.apply(node.actions[best])
                child = node.children[best] = Node(state)
                if state.to_play is None:
                    child.values = terminal_values(state)
                    return path
                legal = state.legal()
                if len(legal) > 1:
                    child.actions = legal
                    return path
                child.expand(legal, [1.0], 0.0)  # a forced move: walk on without the network
            elif child.values is not None:
                return path
            elif child.pending:
                for nd, i in path:
                    nd.n[i] -= 1
                    nd.visits -= 1
                return None
            node = child
