"""The trees of one decision in preallocated arrays, and the two kernels of a wave (numba).

A search (``blobnet.search``) keeps ``D`` trees, one per determinization, in the arrays of a
``Trees``: nodes and edges indexed by integers, a tree's nodes and edges allocated in order.
Positions are not stored: a descent copies its tree's root position (``blobnet.position``) and
applies the actions of its path, which costs less than keeping a position per node.

One wave is two kernel calls around one await of the evaluator:

- ``select``: in every tree, up to ``leaves`` descents by PUCT under virtual loss. A descent ends
  at a terminal position (backed up at once), at a new leaf (its row is encoded into the batch
  buffer, with its legal mask; where another seat than the searcher acts, a second row, the
  searcher's own view, follows it), or at a leaf already waiting in this wave (the descent is
  undone and the tree sits the rest of the wave out). Forced moves are walked without the network.
  In a tree's last wave (its last simulations all start in it) no leaf is visited again, so its
  priors and the other seats' values are never read: with ``lazy``, such a leaf sends the
  searcher's own-view row alone, unless a collision holds a descent over to another wave after
  all; then the tree's leaves of this wave get their acting rows (about 3.5% of the rows, 4 x 5,
  3 x 30). Each row gets an answer slot. A searcher's own-view row takes the slot of the same row met
  earlier in this wave, or a new slot that the network cache (``blobnet.netcache``) fills; other
  rows, and own-view rows neither has, get a slot the evaluator fills: those rows alone are sent.
- ``backup``: the evaluator's answers fill their slots (and the cache); the slots expand each new
  leaf (its legal ids' priors, its value as the first-play urgency of its unvisited edges) and back
  every seat's value up its path; each edge adds the value of the seat that chose it. The
  searcher's own values come from its own-view row. A last wave's leaf without an acting row is
  not expanded; it backs up the searcher's value alone.

Virtual loss is one visit counted on the way down whose value (0, the worst a seat can score) is
replaced on the way back. Values are per seat, normalised round scores (``value_scale``).

Array fields (``D`` trees, ``NC`` nodes and ``EC`` edges a tree at most):

    node_i (D, NC, NODE_FIELDS) int64   PARENT (-1 at the root), PEDGE (the edge leading here),
                                        FIRST edge and NEDGE edges (0: not expanded yet),
                                        ACTOR (the seat acting here; -1 at a terminal position),
                                        PENDING (1 while waiting for the network), VISITS
    node_f (D, NC) float64              FPU: the value an unvisited edge counts (the node's own)
    edge_i (D, EC, EDGE_FIELDS) int64   ACTION, CHILD (-1 until visited), N (visits, virtual included)
    edge_f (D, EC, 2) float64           PRIOR, W (summed value of the seat choosing the edge)
    used (D, 2) int64                   nodes and edges allocated in each tree
"""

from __future__ import annotations

import math

import numpy as np

from blobnet.cards import MAX_PLAYERS, MIN_PLAYERS, N_ACTIONS, N_CARDS, N_VALUES
from blobnet.features import encode_state
from blobnet.jit import njit
from blobnet.netcache import HITS, KEY_LANES, LOOKUPS, find, store, view_key
from blobnet.position import CARDS, PLAYERS, STATE, TO_PLAY, apply, legal, scores

__all__ = [
    "Trees", "NODE_FIELDS", "EDGE_FIELDS", "init_roots", "select", "backup", "root_visits", "LEAF_FIELDS",
    "ANSWER_PRIORS", "ANSWER_VALUES",
]  # fmt: skip

PARENT, PEDGE, FIRST, NEDGE, ACTOR, PENDING, VISITS = range(7)
NODE_FIELDS = 7
ACTION, CHILD, N = range(3)
EDGE_FIELDS = 3
PRIOR, W = range(2)
# a wave's leaves: (tree, node, its row, the searcher's own-view row or -1)
TREE, NODE, ROW, OWN_ROW = range(4)
LEAF_FIELDS = 4
# counters of select/backup: simulations finished, descents undone on a collision
SIMS, COLLISIONS = range(2)
# the most moves a path can hold: every bid and card of a round (56: 8 x 7 or 4 x 14)
MAX_DEPTH = max(p * (N_CARDS // p + 1) for p in range(MIN_PLAYERS, MAX_PLAYERS + 1))
# the kinds of row a leaf asks for: the acting seat's, the searcher's own view
ACTING, OWN = range(2)
# what backup found wrong with the evaluator's answer (0: nothing)
ANSWER_PRIORS, ANSWER_VALUES = 1, 2


class Trees:
    """The arrays of one search: ``dets`` trees of up to ``nodes`` nodes and ``edges`` edges each,
    the determinized root positions, the wave's leaves and their answer slots (``rows`` at most).
    Allocated once and reused by later searches of the same size or smaller. The rows a wave sends
    are not here: the searches of one ``blobnet.search.Search`` share one buffer for them."""

    def __init__(self, dets: int, nodes: int, edges: int, rows: int) -> None:
        self.dets, self.nodes, self.edges, self.rows = dets, nodes, edges, rows
        self.roots = np.zeros((dets, STATE), np.int64)
        self.node_i = np.zeros((dets, nodes, NODE_FIELDS), np.int64)
        self.node_f = np.zeros((dets, nodes), np.float64)
        self.edge_i = np.zeros((dets, edges, EDGE_FIELDS), np.int64)
        self.edge_f = np.zeros((dets, edges, 2), np.float64)
        self.used = np.zeros((dets, 2), np.int64)
        self.left = np.zeros(dets, np.int64)  # simulations still to run in each tree
        self.leaves = np.zeros((rows, LEAF_FIELDS), np.int64)
        # the wave's answer slots: one per distinct row, answered by the evaluator or the cache
        self.slot_key = np.zeros((rows, KEY_LANES), np.int64)
        self.slot_p = np.zeros((rows, N_ACTIONS), np.float32)
        self.slot_v = np.zeros((rows, N_VALUES), np.float32)
        self.slot_mask = np.zeros((rows, N_ACTIONS), np.bool_)
        self.sent_slot = np.zeros(rows, np.int64)  # sent row -> its slot
        self.key = np.zeros(KEY_LANES, np.int64)
        self.counts = np.zeros(2, np.int64)
        self.scratch = np.zeros(STATE, np.int64)  # the position a descent walks
        self.legal = np.zeros(N_ACTIONS, np.int64)
        self.values = np.zeros(N_VALUES, np.float64)

    def fits(self, dets: int, nodes: int, edges: int, rows: int) -> bool:
        return dets <= self.dets and nodes <= self.nodes and edges <= self.edges and rows <= self.rows


@njit(cache=True)
def init_roots(
    node_i: np.ndarray, node_f: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray, used: np.ndarray,
    dets: int, actions: np.ndarray, priors: np.ndarray, fpu: float, actor: int,
) -> None:  # fmt: skip
    """Every tree's root, expanded with the root's legal ``actions`` and their ``priors`` (one
    evaluation serves every determinization: the root's row depends on the view alone)."""
    k = len(actions)
    for t in range(dets):
        node = node_i[t, 0]
        node[PARENT] = -1
        node[PEDGE] = -1
        node[FIRST] = 0
        node[NEDGE] = k
        node[ACTOR] = actor
        node[PENDING] = 0
        node[VISITS] = 0
        node_f[t, 0] = fpu
        for i in range(k):
            edge_i[t, i, ACTION] = actions[i]
            edge_i[t, i, CHILD] = -1
            edge_i[t, i, N] = 0
            edge_f[t, i, PRIOR] = priors[i]
            edge_f[t, i, W] = 0.0
        used[t, 0] = 1
        used[t, 1] = k


@njit(cache=True)
def _new_node(node_i: np.ndarray, used: np.ndarray, t: int, parent: int, pedge: int, actor: int) -> int:
    c = used[t, 0]
    if c >= node_i.shape[1]:
        raise ValueError("a search tree ran out of node slots")
    used[t, 0] = c + 1
    node = node_i[t, c]
    node[PARENT] = parent
    node[PEDGE] = pedge
    node[FIRST] = 0
    node[NEDGE] = 0
    node[ACTOR] = actor
    node[PENDING] = 0
    node[VISITS] = 0
    return c


@njit(cache=True)
def _edges(node_i: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray, used: np.ndarray, t: int, node: int,
           k: int) -> int:  # fmt: skip
    """Allocate ``k`` edges for ``node``; returns the first."""
    first = used[t, 1]
    if first + k > edge_i.shape[1]:
        raise ValueError("a search tree ran out of edge slots")
    used[t, 1] = first + k
    node_i[t, node, FIRST] = first
    node_i[t, node, NEDGE] = k
    for e in range(first, first + k):
        edge_i[t, e, CHILD] = -1
        edge_i[t, e, N] = 0
        edge_f[t, e, W] = 0.0
    return first


@njit(cache=True)
def _expand_forced(node_i: np.ndarray, node_f: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray,
                   used: np.ndarray, t: int, node: int, action: int) -> None:  # fmt: skip
    """A forced move: one edge, prior 1, walked on without the network."""
    e = _edges(node_i, edge_i, edge_f, used, t, node, 1)
    edge_i[t, e, ACTION] = action
    edge_f[t, e, PRIOR] = 1.0
    node_f[t, node] = 0.0


@njit(cache=True)
def _expand(node_i: np.ndarray, node_f: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray, used: np.ndarray,
            t: int, node: int, mask: np.ndarray, priors: np.ndarray, fpu: float) -> None:  # fmt: skip
    """One edge per legal action of a (N_ACTIONS,) ``mask`` row, ascending, with ``priors`` from
    the matching (N_ACTIONS,) row; ``fpu`` the node's value."""
    k = 0
    for a in range(N_ACTIONS):
        k += mask[a]
    e = _edges(node_i, edge_i, edge_f, used, t, node, k)
    for a in range(N_ACTIONS):
        if mask[a]:
            edge_i[t, e, ACTION] = a
            edge_f[t, e, PRIOR] = priors[a]
            e += 1
    node_f[t, node] = fpu


@njit(cache=True)
def _up(node_i: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray, t: int, node: int, values: np.ndarray) -> None:
    """Back ``values`` (per absolute seat) up from ``node`` to its root: each edge adds the value of
    the seat that chose it."""
    while node_i[t, node, PARENT] >= 0:
        e = node_i[t, node, PEDGE]
        parent = node_i[t, node, PARENT]
        edge_f[t, e, W] += values[node_i[t, parent, ACTOR]]
        node = parent


@njit(cache=True)
def _undo(node_i: np.ndarray, edge_i: np.ndarray, t: int, node: int, e: int) -> None:
    """Take back the virtual visits of a descent that chose edge ``e`` at ``node``."""
    edge_i[t, e, N] -= 1
    node_i[t, node, VISITS] -= 1
    while node_i[t, node, PARENT] >= 0:
        pe = node_i[t, node, PEDGE]
        node = node_i[t, node, PARENT]
        edge_i[t, pe, N] -= 1
        node_i[t, node, VISITS] -= 1


@njit(cache=True)
def _terminal_values(st: np.ndarray, out: np.ndarray, pts: np.ndarray) -> None:
    scores(st, pts)
    scale = 10.0 + st[CARDS]  # blobnet.encode.value_scale
    for s in range(st[PLAYERS]):
        out[s] = pts[s] / scale


@njit(cache=True)
def _place(
    st: np.ndarray, viewer: int, r: int, kind: int, n_slots: int, slot_key: np.ndarray, slot_v: np.ndarray,
    sent_slot: np.ndarray, key: np.ndarray, ckeys: np.ndarray, cvalues: np.ndarray, cstats: np.ndarray,
) -> tuple[int, bool]:  # fmt: skip
    """The answer slot of row ``r``, position ``st`` seen by ``viewer``, and whether the row is sent.
    A searcher's own-view row (``kind`` OWN) takes a slot of this wave holding the same view
    (``blobnet.netcache.view_key``), else a new slot whose own value (``slot_v[s, 0]``, all that is
    read of an own-view row's answer) the network cache fills on a hit; any other row, or one not
    found, a new slot the evaluator's answer to row ``r`` will fill. Only own-view rows are looked
    up: they are what repeats (the searcher's view does not depend on the deal), while an acting
    seat's row holds that seat's hand, which differs from deal to deal (measured: 3% of the cache's
    hits came from acting rows), and hashing them would cost more than it saves."""
    s = n_slots
    if kind == OWN and ckeys.shape[0]:
        view_key(st, viewer, kind, key)
        for j in range(n_slots):
            if slot_key[j, 0] == key[0] and slot_key[j, 1] == key[1] and slot_key[j, 2] == key[2]:
                cstats[LOOKUPS] += 1
                cstats[HITS] += 1
                return j, False
        slot_key[s] = key
        c = find(ckeys, cstats, key)
        if c >= 0:
            slot_v[s, 0] = cvalues[c]
            return s, False
    else:
        slot_key[s, 0] = -1  # not looked up, not kept
    sent_slot[r] = s
    return s, True


@njit(cache=True)
def _row(
    st: np.ndarray, viewer: int, kind: int, buf: np.ndarray, nl: int, features: np.ndarray, mask: np.ndarray,
    n_rows: int, n_slots: int, slot_key: np.ndarray, slot_v: np.ndarray, slot_mask: np.ndarray,
    sent_slot: np.ndarray, key: np.ndarray, ckeys: np.ndarray, cvalues: np.ndarray, cstats: np.ndarray,
) -> tuple[int, int, int]:  # fmt: skip
    """Position ``st`` seen by ``viewer`` given a slot of ``kind`` (``_place``) and, when it is sent
    (a row the cache or this wave answers is not even written), written to ``features[n_rows]``
    with its mask, the ``nl`` legal ids in ``buf`` (the acting seat's; an own-view row's priors are
    never read, so any legal mask does); an acting row's slot keeps the mask for the leaf's
    expansion; returns (slot, rows, slots)."""
    r = n_rows
    slot, sent = _place(st, viewer, r, kind, n_slots, slot_key, slot_v, sent_slot, key, ckeys, cvalues, cstats)
    if sent:
        encode_state(st, viewer, features[r])
        mask[r] = False
        for i in range(nl):
            mask[r, buf[i]] = True
        if kind == ACTING:
            slot_mask[slot] = mask[r]
    return slot, n_rows + sent, max(n_slots, slot + 1)


@njit(cache=True)
def _replay(root: np.ndarray, node_i: np.ndarray, edge_i: np.ndarray, t: int, node: int, st: np.ndarray) -> None:
    """The position at ``node`` of tree ``t`` into ``st``: its root position and the actions of its
    path (a rare path: a last wave that collided)."""
    path = np.empty(MAX_DEPTH, np.int64)
    d = 0
    while node_i[t, node, PARENT] >= 0:
        path[d] = edge_i[t, node_i[t, node, PEDGE], ACTION]
        node = node_i[t, node, PARENT]
        d += 1
    st[:] = root
    for i in range(d - 1, -1, -1):
        apply(st, path[i])


@njit(cache=True)
def select(
    roots: np.ndarray, node_i: np.ndarray, node_f: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray,
    used: np.ndarray, left: np.ndarray, leaves: np.ndarray, features: np.ndarray, mask: np.ndarray,
    counts: np.ndarray, scratch: np.ndarray, buf: np.ndarray, values: np.ndarray,
    slot_key: np.ndarray, slot_v: np.ndarray, slot_mask: np.ndarray, sent_slot: np.ndarray,
    key: np.ndarray, ckeys: np.ndarray, cvalues: np.ndarray, cstats: np.ndarray,
    dets: int, per_tree: int, c_puct: float, seat: int, root_view: bool, lazy: bool,
) -> tuple[int, int, int]:  # fmt: skip
    """The first half of a wave (module docstring). Returns (leaves, rows, simulations left): the
    leaves written to ``leaves`` (their answer slots), the rows to send written to ``features``
    and ``mask`` (``sent_slot`` maps them to their slots), and the simulations still to start in
    all the trees; counts finished simulations and collisions into ``counts``, the cache's lookups
    into ``cstats``. ``ckeys``, ``cvalues``: the network cache (``blobnet.netcache``; no rows: no
    cache). ``lazy`` (with ``root_view``): a last wave's leaves send their own-view rows alone."""
    n_leaves = 0
    n_rows = 0
    n_slots = 0
    pts = np.zeros(N_VALUES, np.int64)
    for t in range(dets):
        # the tree's last wave, unless a collision holds a descent over: its leaves are never
        # visited again, and of their values only the searcher's is read (its own-view row)
        last = lazy and root_view and left[t] <= per_tree
        first_leaf = n_leaves
        for _ in range(min(per_tree, left[t])):
            scratch[:] = roots[t]
            node = 0
            while True:
                # PUCT: q + c * p * sqrt(N) / (1 + n); an unvisited edge counts the node's own value
                first = node_i[t, node, FIRST]
                k = node_i[t, node, NEDGE]
                scale = c_puct * math.sqrt(node_i[t, node, VISITS] + 1)
                fpu = node_f[t, node]
                best = first
                best_score = -1e9
                for e in range(first, first + k):
                    ne = edge_i[t, e, N]
                    q = edge_f[t, e, W] / ne if ne else fpu
                    s = q + scale * edge_f[t, e, PRIOR] / (1 + ne)
                    if s > best_score:
                        best = e
                        best_score = s
                edge_i[t, best, N] += 1
                node_i[t, node, VISITS] += 1
                apply(scratch, edge_i[t, best, ACTION])
                child = edge_i[t, best, CHILD]
                if child >= 0 and node_i[t, child, PENDING]:
                    _undo(node_i, edge_i, t, node, best)  # this wave's own leaf: the tree waits
                    counts[1] += 1
                    child = -2
                    break
                if child < 0:
                    child = _new_node(node_i, used, t, node, best, scratch[TO_PLAY])
                    edge_i[t, best, CHILD] = child
                    if scratch[TO_PLAY] >= 0:
                        nl = legal(scratch, buf)
                        if nl == 1:  # a forced move: walk on without the network
                            _expand_forced(node_i, node_f, edge_i, edge_f, used, t, child, buf[0])
                            node = child
                            continue
                        node_i[t, child, PENDING] = 1
                        slot = -1  # no acting row (yet): a leaf of the tree's last wave
                        if not last:
                            slot, n_rows, n_slots = _row(scratch, scratch[TO_PLAY], ACTING, buf, nl, features, mask,
                                                         n_rows, n_slots, slot_key, slot_v, slot_mask, sent_slot, key,
                                                         ckeys, cvalues, cstats)  # fmt: skip
                        own = -1
                        if last or (root_view and scratch[TO_PLAY] != seat):
                            own, n_rows, n_slots = _row(scratch, seat, OWN, buf, nl, features, mask, n_rows, n_slots,
                                                        slot_key, slot_v, slot_mask, sent_slot, key, ckeys, cvalues,
                                                        cstats)  # fmt: skip
                        leaves[n_leaves, TREE] = t
                        leaves[n_leaves, NODE] = child
                        leaves[n_leaves, ROW] = slot
                        leaves[n_leaves, OWN_ROW] = own
                        n_leaves += 1
                        break
                if scratch[TO_PLAY] < 0:  # terminal, new or seen before: its values at once
                    _terminal_values(scratch, values, pts)
                    _up(node_i, edge_i, edge_f, t, child, values)
                    counts[0] += 1
                    break
                node = child
            if child == -2:  # a collision: the rest of this tree's wave waits for its leaf
                if last:  # not the last wave after all: the leaves without an acting row get one now
                    for j in range(first_leaf, n_leaves):
                        if leaves[j, ROW] < 0:
                            _replay(roots[t], node_i, edge_i, t, leaves[j, NODE], scratch)
                            leaves[j, ROW], n_rows, n_slots = _row(
                                scratch, scratch[TO_PLAY], ACTING, buf, legal(scratch, buf), features, mask, n_rows,
                                n_slots, slot_key, slot_v, slot_mask, sent_slot, key, ckeys, cvalues, cstats,
                            )  # fmt: skip
                break
            left[t] -= 1
    return n_leaves, n_rows, left[:dets].sum()


@njit(cache=True)
def backup(
    node_i: np.ndarray, node_f: np.ndarray, edge_i: np.ndarray, edge_f: np.ndarray, used: np.ndarray,
    leaves: np.ndarray, n_leaves: int, priors: np.ndarray, values_in: np.ndarray, sent_slot: np.ndarray,
    slot_key: np.ndarray, slot_p: np.ndarray, slot_v: np.ndarray, slot_mask: np.ndarray,
    ckeys: np.ndarray, cvalues: np.ndarray, keep: bool, counts: np.ndarray, values: np.ndarray, players: int,
    seat: int,
) -> int:  # fmt: skip
    """The second half of a wave: the evaluator's answers (``priors`` N_ACTIONS wide, ``values_in``,
    one row per row sent) go to their slots, and into the network cache when ``keep``; then each
    leaf of ``leaves[:n_leaves]`` is expanded with its slot's priors and value, and its values are
    backed up (module docstring). Returns 0; or, having changed nothing, ANSWER_PRIORS or
    ANSWER_VALUES when that array holds a NaN or an infinity (checked here rather than in Python:
    a numpy pass over each array cost more per wave than the rest of the wave's Python)."""
    for i in range(priors.shape[0]):
        for a in range(priors.shape[1]):
            if not np.isfinite(priors[i, a]):
                return ANSWER_PRIORS
        for a in range(values_in.shape[1]):
            if not np.isfinite(values_in[i, a]):
                return ANSWER_VALUES
    for i in range(priors.shape[0]):
        s = sent_slot[i]
        slot_p[s] = priors[i]
        slot_v[s] = values_in[i]
        if keep and slot_key[s, 0] >= 0:
            store(ckeys, cvalues, slot_key[s], values_in[i, 0])
    for j in range(n_leaves):
        t = leaves[j, TREE]
        node = leaves[j, NODE]
        r = leaves[j, ROW]
        node_i[t, node, PENDING] = 0
        actor = node_i[t, node, ACTOR]
        if r >= 0:
            _expand(node_i, node_f, edge_i, edge_f, used, t, node, slot_mask[r], slot_p[r], slot_v[r, 0])
            for s in range(players):
                values[s] = slot_v[r, (s - actor) % players]
        else:  # a last wave's leaf: the searcher's value alone is ever read again
            values[:] = 0.0
        own = leaves[j, OWN_ROW]
        if own >= 0:
            values[seat] = slot_v[own, 0]
        _up(node_i, edge_i, edge_f, t, node, values)
        counts[0] += 1
    return 0


@njit(cache=True)
def root_visits(edge_i: np.ndarray, dets: int, k: int, out: np.ndarray) -> None:
    """Visits of each of the root's ``k`` edges, summed over the trees, into ``out``."""
    for i in range(k):
        total = 0
        for t in range(dets):
            total += edge_i[t, i, N]
        out[i] = total
