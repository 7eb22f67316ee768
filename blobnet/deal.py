"""Determinization as numba kernels: deal the cards a seat has not seen into a state array.

``deal`` is ``blobnet.views.determinize`` over the array form of ``blobnet.position``: it takes
what a seat knows (``pack_view``: its own hand, every other HAND slot 0) and fills every other
seat's HAND slot with a deal drawn uniformly from all the deals the view allows. A deal is allowed
when every other seat gets its remaining number of cards (``CARDS - popcount(PLAYED[s])``), none
of them a card the seat has seen (its own hand, the cards played) and none of a suit the receiving
seat is known to lack (``VOIDS[s]``). Unseen cards that no hand needs stay out of every hand. Bids
do not weight the deals.

The sampler has three paths, the same as the checked Python one:

- plain: no seat that still needs cards has a known void, so one shuffle is exact;
- rejection: up to ``tries`` shuffles (16 by default), the first allowed one kept. Rejection keeps
  the distribution uniform; the seats with voids are dealt first, so a shuffle that breaks a void
  is given up at its first wrong card;
- exact: when the voids make a lucky shuffle unlikely, count the allowed deals suit by suit and
  draw one with the right probability (the comment above ``_index`` says how).

The generator is xoshiro128** (Blackman and Vigna): four 32-bit words kept in an int64 array that
the caller owns and passes to every kernel that draws; the kernels advance it in place and hold no
generator of their own, so a game that owns one state (from ``rng_state(seed)``) replays the same
deals. Why this one and not a 64-bit generator: with 32-bit words every product fits in an int64,
so the kernels use int64 only (numba's mixed uint64/int64 arithmetic turns into floats) and run
unchanged, wrap-free and warning-free, as plain Python under ``NUMBA_DISABLE_JIT=1``; 32 bits a
draw are all a deck needs, and the period (2**128 - 1) is far beyond any run.

Kernels write into arrays the caller owns; the plain and rejection paths allocate one 52-card
scratch deck per call (about 60 ns), the exact path a few small arrays and its memo.
"""

from __future__ import annotations

from math import comb

import numpy as np

from blobnet.cards import FULL_DECK, N_CARDS
from blobnet.jit import njit
from blobnet.position import CARDS, HAND, PLAYED, PLAYERS, STATE, SUIT, VOIDS, popcount

__all__ = [
    "rng_state", "next_u32", "below", "uniform", "deal", "REJECTION_TRIES", "PLAIN", "REJECTION",
    "EXACT",
]  # fmt: skip

REJECTION_TRIES = 16  # shuffles tried before the exact sampler, as in blobnet.views
PLAIN, REJECTION, EXACT = 0, 1, 2  # which path ``deal`` took (its return value)

_M32 = 0xFFFFFFFF
# C(n, k) as float64 for n, k in 0..52: exact (C(52, 26) < 2**53); products of them overflow int64
_BINOM = np.array([[comb(n, k) for k in range(N_CARDS + 1)] for n in range(N_CARDS + 1)], dtype=np.float64)


# -- the generator --------------------------------------------------------------------------------
def _splitmix64(x: int) -> tuple[int, int]:
    """The next splitmix64 state and output (Python ints, 64-bit)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x, z ^ (z >> 31)


def rng_state(seed: int) -> np.ndarray:
    """A fresh generator state, int64 shape (4,): xoshiro128**'s four 32-bit words, seeded from
    ``seed`` (any int; taken mod 2**64) by splitmix64. The caller owns it; kernels advance it."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    x, a = _splitmix64(x)
    x, b = _splitmix64(x)
    words = [a & _M32, a >> 32, b & _M32, b >> 32]
    if not any(words):  # the one state xoshiro never leaves
        words[0] = 1
    return np.array(words, dtype=np.int64)


# next_u32, below and _fill are inlined into their callers (numba IR inlining): as calls that pass
# the arrays down, they made a 4 x 5 deal twice as slow (490 against 240 ns, measured).
@njit(cache=True)
def _rotl32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


@njit(cache=True, inline="always")
def next_u32(rs: np.ndarray) -> int:
    """32 random bits (an int in 0..2**32-1); advances ``rs``."""
    s0, s1, s2, s3 = rs[0], rs[1], rs[2], rs[3]
    result = (_rotl32((s1 * 5) & _M32, 7) * 9) & _M32
    t = (s1 << 9) & _M32
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    rs[0], rs[1], rs[2], rs[3] = s0, s1, s2, _rotl32(s3, 11)
    return result


@njit(cache=True, inline="always")
def below(rs: np.ndarray, n: int) -> int:
    """An unbiased int in 0..n-1 for n in 1..2**31 (Lemire's multiply-and-reject on 32 bits)."""
    m = next_u32(rs) * n
    low = m & _M32
    if low < n:
        floor = (_M32 + 1 - n) % n  # 2**32 mod n: the values of low that would favour some results
        while low < floor:
            m = next_u32(rs) * n
            low = m & _M32
    return m >> 32


@njit(cache=True)
def uniform(rs: np.ndarray) -> float:
    """A float in [0, 1) with 53 random bits."""
    a = next_u32(rs) >> 5
    b = next_u32(rs) >> 6
    return (a * 67108864.0 + b) / 9007199254740992.0


# -- the deal -------------------------------------------------------------------------------------
@njit(cache=True)
def deal(view_st: np.ndarray, seat: int, rs: np.ndarray, out: np.ndarray, tries: int = REJECTION_TRIES) -> int:
    """Deal the cards ``seat`` has not seen: ``out`` (int64, shape (STATE,)) becomes ``view_st``
    with every other seat's HAND slot drawn uniformly from the deals the view allows; returns the
    path taken (PLAIN, REJECTION or EXACT). ``view_st`` is what ``seat`` knows (``pack_view``);
    only its HAND slot of ``seat`` is read among the hands, so ``out`` may be ``view_st`` itself.
    ``tries``: shuffles before the exact sampler when a seat has a known void (0 goes straight to
    it). ``rs`` is the caller's generator state, the only source of randomness. Raises ValueError
    when no deal is allowed."""
    for i in range(STATE):
        out[i] = view_st[i]
    n = out[PLAYERS]
    cards = out[CARDS]
    seen = out[HAND + seat]
    for s in range(n):
        seen |= out[PLAYED + s]
    unseen = FULL_DECK & ~seen
    deck = np.empty(N_CARDS, dtype=np.int64)
    u = 0
    for c in range(N_CARDS):
        deck[u] = c
        u += unseen >> c & 1  # without a branch: the bits are too random to predict
    total = 0
    constrained = False
    for s in range(n):
        if s != seat:
            k = cards - popcount(out[PLAYED + s])
            total += k
            if k > 0 and out[VOIDS + s] & 15:
                constrained = True
    if total > u:
        raise ValueError("no deal: the seats need more cards than the view leaves unseen")
    if not constrained:
        i = 0
        for s in range(n):
            if s != seat:
                k = cards - popcount(out[PLAYED + s])
                out[HAND + s] = _fill(rs, deck, i, u, k, 0)
                i += k
        return PLAIN
    for _ in range(tries):
        if _shuffle_once(out, seat, rs, deck, u):
            return REJECTION
    _exact(out, seat, rs, unseen)
    return EXACT


@njit(cache=True)
def _void_cards(voids: int) -> int:
    """The cards of the suits in a 4-bit void mask."""
    m = 0
    for x in range(4):
        if voids >> x & 1:
            m |= SUIT[x]
    return m


@njit(cache=True, inline="always")
def _fill(rs: np.ndarray, deck: np.ndarray, i: int, u: int, k: int, banned: int) -> int:
    """Draw ``k`` cards into ``deck[i:i + k]`` from ``deck[i:u]`` (Fisher-Yates steps); their mask,
    or -1 as soon as one is in ``banned``. (Drawing from a mask instead, with no deck, measured
    twice as slow: its rejection branches are unpredictable.)"""
    hand = 0
    for t in range(i, i + k):
        j = t + below(rs, u - t)
        c = deck[j]
        deck[j] = deck[t]
        deck[t] = c
        bit = np.int64(1) << c
        if bit & banned:
            return -1
        hand |= bit
    return hand


@njit(cache=True)
def _shuffle_once(out: np.ndarray, seat: int, rs: np.ndarray, deck: np.ndarray, u: int) -> bool:
    """One shuffle of ``deck[:u]`` dealt to the other seats, the ones with voids first; False (and
    HAND slots half written) when it breaks a void. Any order of ``deck`` will do: each try draws
    afresh."""
    n = out[PLAYERS]
    cards = out[CARDS]
    i = 0
    for with_voids in (True, False):
        for s in range(n):
            if s == seat:
                continue
            k = cards - popcount(out[PLAYED + s])
            if (k > 0 and out[VOIDS + s] & 15 != 0) != with_voids:
                continue
            hand = _fill(rs, deck, i, u, k, _void_cards(out[VOIDS + s]) if with_voids else 0)
            if hand < 0:
                return False
            out[HAND + s] = hand
            i += k
    return True


@njit(cache=True)
def _pick(rs: np.ndarray, mask: int, k: int) -> int:
    """``k`` cards of ``mask`` (which holds at least ``k``), every subset equally likely."""
    left = popcount(mask)
    hand = 0
    for t in range(k):
        m = mask
        for _ in range(below(rs, left - t)):
            m &= m - 1
        low = m & -m
        hand |= low
        mask ^= low
    return hand


# The exact sampler. A deal is fixed by how many cards of each suit every constrained seat gets (a
# row k) and which ones. The deals completing a partial one depend only on the cards left per suit,
# so, over the constrained seats j.. (need[j] cards each, from the suits in the 4-bit allow[j]):
#     ways(j, left) = sum over rows k of prod_x C(left_x, k_x) * ways(j + 1, left - k)
# and the last constrained seat is counted in closed form: C(cards left in its allowed suits, need).
# The other seats and the undealt rest share what is left in as many ways whatever came before, so
# they are no factor. ways is tabled in ``memo`` by j and the cards taken from suits 0, 1, 2
# (L - left, L the unseen cards per suit; from suit 3 follows, as the seats before j take
# need[0] + ... + need[j - 1]). It is filled without recursion (numba cannot cache recursive
# functions: numba/numba#6061): a forward pass marks the states the rows reach (0.0; -1.0 is
# unreached), a backward pass counts them, last seat first. ``dims`` = (m constrained seats, the
# memo's radices R0, R1, R2, then L0, L1, L2, L3); a radix is min(L, cards the seats take) + 1.
_MARK, _COUNT, _PICK = 0, 1, 2


@njit(cache=True)
def _index(j: int, l0: int, l1: int, l2: int, dims: np.ndarray) -> int:
    return ((j * dims[1] + dims[4] - l0) * dims[2] + dims[5] - l1) * dims[3] + dims[6] - l2


@njit(cache=True)
def _ways(j: int, l0: int, l1: int, l2: int, l3: int, need: np.ndarray, allow: np.ndarray, dims: np.ndarray,
          memo: np.ndarray) -> float:  # fmt: skip
    """ways(j, left): the closed form for the last constrained seat, else the memo (counted)."""
    if j == dims[0] - 1:
        a = allow[j]
        pool = (l0 if a & 1 else 0) + (l1 if a & 2 else 0) + (l2 if a & 4 else 0) + (l3 if a & 8 else 0)
        return _BINOM[pool, need[j]]
    return memo[_index(j, l0, l1, l2, dims)]


@njit(cache=True)
def _rows(mode: int, j: int, l0: int, l1: int, l2: int, l3: int, need: np.ndarray, allow: np.ndarray,
          dims: np.ndarray, memo: np.ndarray, target: float, row: np.ndarray) -> float:  # fmt: skip
    """Walk the rows of seat ``j`` from ``left``. _MARK: mark the states they reach for seat j + 1.
    _COUNT: return ways(j, left) (seat j + 1's counted). _PICK: write into ``row`` the first row
    whose running sum of weights passes ``target`` (the last with a positive weight, should
    rounding leave the sum short) and return the sum so far."""
    a = allow[j]
    k = need[j]
    acc = 0.0
    for k0 in range(min(k, l0) + 1 if a & 1 else 1):
        for k1 in range(min(k - k0, l1) + 1 if a & 2 else 1):
            for k2 in range(min(k - k0 - k1, l2) + 1 if a & 4 else 1):
                k3 = k - k0 - k1 - k2
                if k3 > (l3 if a & 8 else 0):
                    continue
                if mode == _MARK:
                    idx = _index(j + 1, l0 - k0, l1 - k1, l2 - k2, dims)
                    memo[idx] = 0.0
                    continue
                w = _BINOM[l0, k0] * _BINOM[l1, k1] * _BINOM[l2, k2] * _BINOM[l3, k3]
                w *= _ways(j + 1, l0 - k0, l1 - k1, l2 - k2, l3 - k3, need, allow, dims, memo)
                if w > 0.0:
                    acc += w
                    if mode == _PICK:
                        row[0], row[1], row[2], row[3] = k0, k1, k2, k3
                        if acc > target:
                            return acc
    return acc


@njit(cache=True)
def _count(need: np.ndarray, allow: np.ndarray, dims: np.ndarray, memo: np.ndarray, row: np.ndarray) -> None:
    """Fill ``memo`` with ways(j, left) for every state the rows reach from the unseen cards."""
    m = dims[0]
    memo[_index(0, dims[4], dims[5], dims[6], dims)] = 0.0
    for mode in (_MARK, _COUNT):
        for step in range(m - 1):
            j = step if mode == _MARK else m - 2 - step
            if mode == _MARK and j == m - 2:
                continue  # seat m - 1 is counted in closed form: nothing to mark
            used = 0
            for i in range(j):
                used += need[i]
            for d0 in range(min(dims[1], used + 1)):
                for d1 in range(min(dims[2], used - d0 + 1)):
                    for d2 in range(min(dims[3], used - d0 - d1 + 1)):
                        d3 = used - d0 - d1 - d2
                        if d3 > dims[7]:
                            continue
                        l0, l1, l2, l3 = dims[4] - d0, dims[5] - d1, dims[6] - d2, dims[7] - d3
                        idx = _index(j, l0, l1, l2, dims)
                        if memo[idx] < 0.0:
                            continue
                        memo[idx] = _rows(mode, j, l0, l1, l2, l3, need, allow, dims, memo, -1.0, row)


@njit(cache=True)
def _exact(out: np.ndarray, seat: int, rs: np.ndarray, unseen: int) -> None:
    """Exact uniform sampling (the comment above ``_index``): rows for the constrained seats in
    turn, each drawn in proportion to its completions, the cards of each suit drawn uniformly; the
    last constrained seat draws from its allowed suits, the other seats from what is left."""
    n = out[PLAYERS]
    cards = out[CARDS]
    need = np.empty(8, dtype=np.int64)
    allow = np.empty(8, dtype=np.int64)
    who = np.empty(8, dtype=np.int64)
    m = 0
    taken = 0  # the constrained seats, a bit each
    for s in range(n):
        k = cards - popcount(out[PLAYED + s])
        if s != seat and k > 0 and out[VOIDS + s] & 15:
            need[m], allow[m], who[m] = k, ~out[VOIDS + s] & 15, s
            taken |= 1 << s
            m += 1
    l0, l1, l2, l3 = (popcount(unseen & SUIT[0]), popcount(unseen & SUIT[1]), popcount(unseen & SUIT[2]),
                      popcount(unseen & SUIT[3]))  # fmt: skip
    taken_most = 0  # by the seats before the last constrained one, whose states the memo holds
    for j in range(m - 1):
        taken_most += need[j]
    r0, r1, r2 = min(l0, taken_most) + 1, min(l1, taken_most) + 1, min(l2, taken_most) + 1
    dims = np.array([m, r0, r1, r2, l0, l1, l2, l3], dtype=np.int64)
    memo = np.full(max(m - 1, 1) * r0 * r1 * r2, -1.0)
    row = np.zeros(4, dtype=np.int64)
    if m > 1:
        _count(need, allow, dims, memo, row)
    if _ways(0, l0, l1, l2, l3, need, allow, dims, memo) <= 0.0:
        raise ValueError("no deal of the unseen cards respects the known voids and hand sizes")
    left = unseen
    for j in range(m - 1):
        target = uniform(rs) * _ways(j, l0, l1, l2, l3, need, allow, dims, memo)
        _rows(_PICK, j, l0, l1, l2, l3, need, allow, dims, memo, target, row)
        hand = 0
        for x in range(4):
            hand |= _pick(rs, left & SUIT[x], row[x])
        out[HAND + who[j]] = hand
        left &= ~hand
        l0, l1, l2, l3 = l0 - row[0], l1 - row[1], l2 - row[2], l3 - row[3]
    last = who[m - 1]
    hand = _pick(rs, left & ~_void_cards(out[VOIDS + last]), need[m - 1])
    out[HAND + last] = hand
    left &= ~hand
    for s in range(n):
        if s != seat and not taken >> s & 1:
            hand = _pick(rs, left, cards - popcount(out[PLAYED + s]))
            out[HAND + s] = hand
            left &= ~hand
