"""Determinized PUCT search with network priors and values for every seat, in compiled kernels.

One decision: the acting seat's view is dealt out ``dets`` times (``blobnet.deal``: uniform over
the deals the view allows) and each deal gets its own tree (``blobnet.tree``). The search runs in
waves: in every tree, up to ``leaves`` simulations descend one after another under virtual loss,
so each takes a different path; the new leaves of all the trees go to the evaluator in one
request, and their values are backed up when it answers. A wave is one kernel call that walks
the trees and encodes the leaves' rows straight into the request's buffer, one ``await`` of the
evaluator, and one kernel call that backs the answers up: no Python per simulation.

Values are per seat, normalised round scores (``blobnet.encode.value_scale``). Each edge keeps
the value of the seat that chose it. A leaf is evaluated from the view of the seat acting there
(priors, and the values of the other seats), and, where that is not the searching seat, once more
from the searching seat's view (``config.root_view``): its own values then depend on its own hand.
Without that second row, the searcher's moves would be valued by a seat that cannot see its cards,
and a bid would be judged by how often such a bid is made on average, whatever the hand.

The root is expanded before any leaf is sent (its row depends on the view alone, so one evaluation
serves every tree), so no wave is copies of the root; inside a tree, forced moves are walked
without asking the network; a decision with one legal action is not searched. A searcher's
own-view row already answered, in this wave or before, is not asked again: the network cache
(``blobnet.netcache``) of the Search holds the answers, for as long as the evaluator's model does
not change; in a tree's last wave a leaf sends its own-view row alone, as its other answers would
never be read (``blobnet.tree``). The search knows the evaluator protocol alone (arrays in, arrays
out), never torch or a server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from blobnet.aio import run_now
from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.config import SearchConfig
from blobnet.deal import deal, rng_state
from blobnet.encode import WIDTH
from blobnet.evaluator import Evaluator, FreeEvaluator
from blobnet.features import encode_state
from blobnet.netcache import NetCache
from blobnet.position import pack, pack_view
from blobnet.rules import Round, View, random_round
from blobnet.tree import ANSWER_PRIORS, Trees, W, backup, init_roots, root_visits, select

__all__ = ["Evaluator", "Search", "SearchResult", "choose_action"]

# A test's stand-in for the determinization: a Round agreeing with the view (``blobnet.deal`` otherwise).
Determinize = Callable[[View, np.random.Generator], Round]


@dataclass(slots=True)
class SearchResult:
    actions: list[int]  # legal actions at the root, ascending
    visits: list[int]  # root visits per action, summed over the determinizations
    evaluations: int  # network evaluations this search asked for
    simulations: int
    features: np.ndarray | None = None  # the root's encoded view (WIDTH,), None when not searched
    # per action: the network's root prior (before noise), and the mean value the searching seat
    # backed up through it (normalised score, ``blobnet.encode.value_scale``; None if never visited)
    priors: list[float] | None = None
    values: list[float | None] | None = None
    root_value: float | None = None  # the network's value of the root for the searching seat

    def policy(self) -> list[float]:
        total = sum(self.visits)
        return [v / total for v in self.visits]

    def completed_q_policy(self, c_visit: float = 50.0, c_scale: float = 0.1) -> list[float]:
        """Gumbel MuZero's policy target (Danihelka et al. 2022, as ``mctx``'s
        ``qtransform_completed_by_mix_value``): softmax(log prior + sigma(completed Q)). An action
        never visited takes the mixed value (the root's network value and the prior-weighted mean of
        the visited actions' values, weighted 1 : visits), and ``sigma(q) = (c_visit + most visits)
        * c_scale * q``. The values are not rescaled to their range (``mctx``'s default): they are
        already on a fixed scale (points over the round's most, 0..1), and a min-max rescale would
        make a one-hot target of the noise between two near-equal actions. Unlike visit shares, the
        target keeps the prior where the search says nothing and moves it where the search found
        a better value, which matters when simulations are few."""
        if self.priors is None or self.values is None or self.root_value is None:
            return self.policy()  # not searched: a forced move
        # plain Python: a handful of actions, where numpy's per-call costs would be most of it
        seen = [(p, q) for p, q in zip(self.priors, self.values) if q is not None]  # None: never visited
        mass = sum(p for p, _ in seen)
        mixed = sum(p * q for p, q in seen) / mass if mass > 0 else self.root_value
        total = sum(self.visits)
        v_mix = (self.root_value + total * mixed) / (1 + total)
        sigma = (c_visit + max(self.visits)) * c_scale
        completed = [v_mix if q is None else q for q in self.values]
        logits = [math.log(max(p, 1e-30)) + sigma * q for p, q in zip(self.priors, completed)]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        norm = sum(weights)
        return [w / norm for w in weights]

    def is_uniform(self) -> bool:
        """All root actions visited equally: the sign of a search that never looked past the root."""
        return len(self.visits) > 1 and min(self.visits) == max(self.visits)


def choose_action(result: SearchResult, temperature: float, rng: np.random.Generator) -> int:
    """The most visited action at temperature 0 (ties to the lower id), else visits ** (1/T)."""
    if temperature == 0 or len(result.actions) == 1:
        best = max(result.visits)
        return result.actions[result.visits.index(best)]
    cumulative = np.cumsum(np.asarray(result.visits, dtype=np.float64) ** (1.0 / temperature))
    i = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return result.actions[min(i, len(cumulative) - 1)]


class Search:
    """PUCT over ``config.dets`` determinizations. ``evaluator`` is passed in (the OpenSpiel MCTSBot
    style), so tests can hand in fakes with known answers; ``deal`` replaces the determinization
    (tests). ``collisions`` counts descents undone because they met a leaf already waiting in their
    wave. Its counts (``evaluations``, ``simulations``, ``collisions``) grow wave by wave, not at a
    search's end: with hundreds of games on one slow evaluator a search outlasts a benchmark's window,
    which would otherwise see no simulation at all. One Search serves many concurrent searches (the
    games of an engine): each takes a ``Trees`` from the Search's free list for its duration. They
    share one buffer for the rows of a wave (``features``, ``mask``): a wave writes its rows and hands
    them to the evaluator with no await between, and the evaluator copies them before its first await
    (``blobnet.evaluator``), so the next wave, of any search, may write over them. The buffer then
    stays in the core's cache, where a buffer per search (a few hundred of them at a time) would not:
    the search's kernels took 0.5 to 0.6 us less a simulation with it (64 games, a free evaluator).
    ``kernel_seconds`` adds up the wall time of the compiled stages: "deal", "select" (descents and the
    leaves' rows), "backup". ``lazy``: a tree's last wave sends no row whose answer is never read
    (``blobnet.tree``); the result is the same either way (a test holds the two equal)."""

    lazy = True

    def __init__(self, evaluator: Evaluator, config: SearchConfig, *, deal: Determinize | None = None) -> None:
        self.evaluator = evaluator
        self.config = config
        self.deal = deal
        self.evaluations = 0
        self.simulations = 0
        self.collisions = 0
        self.kernel_seconds = dict.fromkeys(("deal", "select", "backup"), 0.0)
        self._free: list[Trees] = []
        rows = max(self.rows_per_wave(config), 1)
        self.features = np.zeros((rows, WIDTH), np.float32)
        self.mask = np.zeros((rows, N_ACTIONS), np.bool_)
        # Answers of rows met before (blobnet.netcache), for an evaluator that says which model
        # answers (``model_version``): a cache of another model's answers would be wrong.
        cached = getattr(evaluator, "model_version", None) is not None
        self.cache = NetCache(config.cache if cached else 0)

    def load_kernels(self) -> None:
        """Load the compiled kernels now (numba reads each from its cache at its first call, about
        0.15 s a process in all; a few milliseconds once loaded): one search of a small round, with
        a free evaluator that never waits, on a Search of its own (with an empty cache: the kernels
        are the same), so this one's counts, cache and evaluator stay untouched and no turn of the
        event loop is taken."""
        r = random_round(3, 2, np.random.default_rng(0))
        assert r.to_play is not None  # a new round: its first bid is to make
        search = Search(FreeEvaluator(yield_each=False), msgspec.structs.replace(self.config, cache=0))
        run_now(search.run(r.view(r.to_play), np.random.default_rng(0)))

    @staticmethod
    def rows_per_wave(config: SearchConfig) -> int:
        """The most rows one wave asks the evaluator for."""
        return config.dets * min(config.leaves, config.sims) * (2 if config.root_view else 1)

    def _trees(self, view: View) -> Trees:
        """A free ``Trees`` big enough for a search of ``view``: each simulation adds one node, plus
        one for each forced move it walks, at most the moves left in the round."""
        cfg = self.config
        moves_left = view.players * (view.cards + 1) - sum(b is not None for b in view.bids) - len(view.played)
        nodes = 1 + cfg.sims * max(moves_left, 1)
        edges = nodes * (view.cards + 1)  # a node has at most cards + 1 legal actions (the bids)
        rows = max(self.rows_per_wave(cfg), 1)
        for i, trees in enumerate(self._free):
            if trees.fits(cfg.dets, nodes, edges, rows):
                return self._free.pop(i)
        return Trees(cfg.dets, nodes, edges, rows)

    async def run(self, view: View, rng: np.random.Generator, *, noise: bool = False) -> SearchResult:
        """Search the acting seat's decision. ``rng`` (the caller's) draws the deals' seed and the noise."""
        if view.to_play != view.seat:
            raise ValueError(f"seat {view.seat} is not to play (seat {view.to_play} is)")
        legal = view.legal_actions()
        if len(legal) == 1:
            return SearchResult(legal, [1], 0, 0)
        trees = self._trees(view)
        try:
            return await self._run(trees, view, legal, view.seat, rng, noise)
        finally:
            self._free.append(trees)

    async def _run(
        self, trees: Trees, view: View, legal: list[int], seat: int, rng: np.random.Generator, noise: bool
    ) -> SearchResult:
        cfg = self.config
        known = pack_view(view)
        row = np.zeros((1, WIDTH), np.float32)
        encode_state(known, seat, row[0])
        mask = np.zeros((1, N_ACTIONS), np.bool_)
        mask[0, legal] = True
        priors, values = _answers(await self.evaluator.evaluate_many(row, mask), 1)
        root_value = float(values[0, 0])  # the searching seat's (column 0: the acting seat's)
        evaluations = 1
        self.evaluations += 1
        p = priors[0, legal].astype(np.float64)
        root_priors = p.tolist()
        if noise:
            eta = rng.dirichlet([cfg.dirichlet_alpha] * len(legal))
            p = (1 - cfg.dirichlet_eps) * p + cfg.dirichlet_eps * eta
        clock = self.kernel_seconds
        t0 = time.perf_counter()
        if self.deal is None:
            rs = rng_state(int(rng.integers(2**63)))
            for t in range(cfg.dets):
                deal(known, seat, rs, trees.roots[t])
        else:
            for t in range(cfg.dets):
                trees.roots[t] = pack(self.deal(view, rng))
        t1 = time.perf_counter()
        clock["deal"] += t1 - t0
        dets = cfg.dets
        init_roots(trees.node_i, trees.node_f, trees.edge_i, trees.edge_f, trees.used, dets,
                   np.asarray(legal, np.int64), p, root_value, seat)  # fmt: skip
        trees.left[:dets] = cfg.sims
        trees.counts[:] = 0
        per_tree = min(cfg.leaves, cfg.sims)
        cache = self.cache
        counted = 0, 0  # this search's simulations and collisions so far, as the Search's counts hold them
        more = dets * cfg.sims
        while more:
            t0 = time.perf_counter()
            version = getattr(self.evaluator, "model_version", None)
            if version != cache.version:
                cache.clear(version)
            k, rows, more = select(
                trees.roots, trees.node_i, trees.node_f, trees.edge_i, trees.edge_f, trees.used, trees.left,
                trees.leaves, self.features, self.mask, trees.counts, trees.scratch, trees.legal, trees.values,
                trees.slot_key, trees.slot_v, trees.slot_mask, trees.sent_slot, trees.key, cache.keys,
                cache.values, cache.stats, dets, per_tree, cfg.c_puct, seat, cfg.root_view, self.lazy,
            )  # fmt: skip
            t1 = time.perf_counter()
            clock["select"] += t1 - t0
            if k:  # else every descent of the wave ended at a terminal position
                if rows:
                    answer = await self.evaluator.evaluate_many(self.features[:rows], self.mask[:rows])
                    priors, values = _answers(answer, rows, finite=False)  # backup checks for NaN and inf
                    evaluations += rows
                    self.evaluations += rows
                else:  # the cache answered every leaf
                    priors, values = _NO_PRIORS, _NO_VALUES
                # answers that a model swap may have overtaken are used, not kept
                keep = getattr(self.evaluator, "model_version", None) == version
                t0 = time.perf_counter()
                wrong = backup(trees.node_i, trees.node_f, trees.edge_i, trees.edge_f, trees.used, trees.leaves, k,
                               priors, values, trees.sent_slot, trees.slot_key, trees.slot_p, trees.slot_v,
                               trees.slot_mask, cache.keys, cache.values, keep, trees.counts, trees.values,
                               view.players, seat)  # fmt: skip
                clock["backup"] += time.perf_counter() - t0
                if wrong:
                    which = "priors" if wrong == ANSWER_PRIORS else "values"
                    raise ValueError(f"the evaluator's {which} hold NaN or inf")
            sims, collisions = int(trees.counts[0]), int(trees.counts[1])
            self.simulations += sims - counted[0]
            self.collisions += collisions - counted[1]
            counted = sims, collisions
        visits = np.zeros(len(legal), np.int64)
        root_visits(trees.edge_i, dets, len(legal), visits)
        # the root's edges are the first of every tree's (init_roots); W holds the searcher's values
        summed = trees.edge_f[:dets, : len(legal), W].sum(axis=0)
        means = [float(w / n) if n else None for w, n in zip(summed.tolist(), visits.tolist())]
        return SearchResult(legal, visits.tolist(), evaluations, counted[0], row[0], root_priors, means, root_value)


_NO_PRIORS = np.zeros((0, N_ACTIONS), np.float32)
_NO_VALUES = np.zeros((0, N_VALUES), np.float32)


def _answers(answer: tuple[np.ndarray, np.ndarray], rows: int, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """An evaluator's answer, checked before a kernel reads it: the kernels index these arrays
    without bounds checks, so a wrong shape or a NaN must stop here with a message, not corrupt a tree.
    ``finite`` False: the NaN and inf are left to the caller's kernel (``blobnet.tree.backup``)."""
    try:
        priors, values = answer
    except (TypeError, ValueError):
        raise ValueError("the evaluator's answer is not a pair (priors, values)") from None
    for name, a, width in (("priors", priors, N_ACTIONS), ("values", values, N_VALUES)):
        if not isinstance(a, np.ndarray) or a.shape != (rows, width) or a.dtype != np.float32:
            shape = getattr(a, "shape", None)
            raise ValueError(f"the evaluator's {name} have shape {shape}: expected ({rows}, {width}) float32")
        if finite and not np.isfinite(a).all():
            raise ValueError(f"the evaluator's {name} hold NaN or inf")
    return priors, values
