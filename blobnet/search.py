"""Determinized PUCT search with network priors and values for every seat.

One decision: the acting seat's view is dealt out ``dets`` times (``determinize``); each deal gets
its own tree, all trees run concurrently, and inside a tree ``leaves`` simulations descend at once
under virtual loss. The policy target is the root visit counts summed over the trees.

Values are per seat, in absolute seat order, normalised round scores (``blobnet.encode.value_scale``).
Each edge keeps the value of the seat that chose it, so every node backs up the value of the seat
that moved into it. Virtual loss is one visit counted on the way down with its value (0, the worst
a seat can score) added only on the way back, so nothing needs undoing.

The search knows the evaluator protocol alone (``await evaluate(features, legal)``), never torch
or a server; the root is expanded before the leaves are sent, so the first batch is never copies
of the root, and a decision with one legal action is not searched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from blobnet.config import SearchConfig
from blobnet.encode import WIDTH, encode, encode_round, value_scale
from blobnet.rules import Round, View
from blobnet.views import determinize

__all__ = ["Evaluator", "Search", "SearchResult", "choose_action"]


class Evaluator(Protocol):
    """Priors over the 70 actions (softmax over ``legal``) and 8 relative seat values."""

    async def evaluate(self, features: np.ndarray, legal: list[int]) -> tuple[list[float], list[float]]: ...


Determinize = Callable[[View, np.random.Generator], Round]


class Node:
    """A position in one tree. Edge statistics live in the parent, one slot per legal action."""

    __slots__ = ("state", "to_play", "actions", "priors", "children", "n", "w", "visits", "fpu", "values", "waiters")

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
        self.waiters: asyncio.Future[list[float]] | None = None  # set while the net is asked

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


class Search:
    """PUCT over ``config.dets`` determinizations. ``evaluator`` and ``determinize`` are passed in
    (the OpenSpiel MCTSBot style), so tests can hand in fakes with known answers."""

    def __init__(
        self,
        evaluator: Evaluator,
        config: SearchConfig,
        *,
        deal: Determinize = determinize,
    ) -> None:
        self.evaluator = evaluator
        self.config = config
        self.deal = deal
        self.evaluations = 0
        self.simulations = 0

    async def run(self, view: View, rng: np.random.Generator, *, noise: bool = False) -> SearchResult:
        """Search the acting seat's decision. ``rng`` (the caller's) draws deals and noise."""
        if view.to_play != view.seat:
            raise ValueError(f"seat {view.seat} is not to play (seat {view.to_play} is)")
        legal = view.legal_actions()
        if len(legal) == 1:
            return SearchResult(legal, [1], 0, 0)
        cfg = self.config
        evals0, sims0 = self.evaluations, self.simulations
        # The root's features depend on the view alone, so one evaluation serves every tree.
        row = np.empty(WIDTH, dtype=np.float32)
        encode(view, row)
        priors, rel_values = await self.evaluator.evaluate(row, legal)
        self.evaluations += 1
        root_priors = [priors[a] for a in legal]
        if noise:
            eta = rng.dirichlet([cfg.dirichlet_alpha] * len(legal))
            eps = cfg.dirichlet_eps
            root_priors = [(1 - eps) * p + eps * float(e) for p, e in zip(root_priors, eta)]
        fpu = rel_values[0]
        roots = []
        for _ in range(cfg.dets):
            root = Node(self.deal(view, rng))
            root.expand(legal, root_priors, fpu)
            roots.append(root)
        leaves = min(cfg.leaves, cfg.sims)
        try:
            async with asyncio.TaskGroup() as tg:  # one failure cancels the other workers
                for root in roots:
                    for k in range(leaves):
                        tg.create_task(self._worker(root, cfg.sims, leaves, k))
        except BaseExceptionGroup as group:
            raise _first(group) from None
        visits = [sum(col) for col in zip(*(root.n for root in roots))]
        return SearchResult(legal, visits, self.evaluations - evals0, self.simulations - sims0, row)

    async def _worker(self, root: Node, sims: int, leaves: int, k: int) -> None:
        # worker k of `leaves` runs its share of the tree's simulations
        for _ in range(k, sims, leaves):
            await self._simulate(root)

    async def _simulate(self, root: Node) -> None:
        c = self.config.c_puct
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
            n[best] += 1  # virtual loss: the visit counts now, its value arrives on the way back
            node.visits += 1
            path.append((node, best))
            child = node.children[best]
            if child is None:
                state = node.state.clone()
                state.apply(node.actions[best])
                child = node.children[best] = Node(state)
                values = await self._expand(child)
                if values is None:  # a forced move: no evaluation, keep descending
                    node = child
                    continue
                break
            if child.values is not None:
                values = child.values
                break
            if child.waiters is not None:  # another simulation is asking the net about this node
                await child.waiters
            node = child
        self.simulations += 1
        for node, i in path:
            node.w[i] += values[node.to_play]  # type: ignore[index]

    async def _expand(self, node: Node) -> list[float] | None:
        """Terminal: the seats' scores. One legal action: expanded without the net (None).
        Otherwise ask the net, expand, and return every seat's value (absolute seats)."""
        state = node.state
        if state.to_play is None:
            scale = value_scale(state.cards)
            node.values = [s / scale for s in state.scores()]
            return node.values
        legal = state.legal()
        if len(legal) == 1:
            node.expand(legal, [1.0], 0.0)
            return None
        waiters = node.waiters = asyncio.get_running_loop().create_future()
        row = self._row
        encode_round(state, row)
        try:
            priors, rel = await self.evaluator.evaluate(row, legal)
        except Exception as e:
            waiters.set_exception(e)
            waiters.exception()  # marked as seen: the error itself travels up this simulation
            raise
        except BaseException:
            waiters.cancel()
            raise
        self.evaluations += 1
        tp = node.to_play
        n = state.players
        node.expand(legal, [priors[a] for a in legal], rel[0])
        values = [rel[(s - tp) % n] for s in range(n)]  # type: ignore[operator]
        node.waiters = None
        waiters.set_result(values)
        return values

    # One scratch row serves every leaf: the evaluator copies it before its first await.
    _row = np.empty(WIDTH, dtype=np.float32)


def _first(error: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: what the caller should see."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
