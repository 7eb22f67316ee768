"""The network cache: answers to rows already evaluated, keyed by the position each row shows.

KataGo and lc0 keep one. Here rows repeat in two ways: the searching seat's own view after its own
move is the same in every determinization (its view does not depend on the hidden cards), and a
position reached by the same public moves is the same row from one decision to the next. A row's
answer depends on the row alone, so a row met again is answered from here instead of the network.
The search caches its own-view rows alone (``blobnet.tree``), and reads one number of their
answers, the viewing seat's own value (column 0 of the values): that number is what an entry keeps,
4 bytes where the whole answer (70 priors and 8 values) would take 312. A 65,536-entry cache is then
1.8 MB, not 22, and a lookup or a store touches one cache line of answers instead of six.

The key (``view_key``) is three 32-bit lanes hashed over what the row is made of: the position's
slots that ``blobnet.features.encode_state`` reads, and the viewing seat (murmur3's block step,
with multipliers under 2**31 so every product fits in an int64 and the kernels stay wrap-free as
plain Python). Lanes 1 and 2 are the 64-bit key (lane 1 also picks the slot); lane 3 checks it: an
entry whose key matches and whose check does not is a collision of the 64-bit key, counted
(``COLLISIONS``) and not answered, so a wrong answer needs all 96 bits to agree by chance. The
memory is bounded: ``size`` slots (a power of two), one entry each, and a new entry takes its slot
from whatever was there. The cache holds the answers of one model: ``NetCache.version`` is the
evaluator's ``model_version`` they came from, and a search empties the cache when that changes
(``blobnet.search``).
"""

from __future__ import annotations

import numpy as np

from blobnet.jit import njit
from blobnet.position import BIDS, HAND, PLAYED, PLAYERS, TOTALS, TRICK, TRICK_LEN, VOIDS, WON

__all__ = ["NetCache", "view_key", "find", "store", "LOOKUPS", "HITS", "COLLISIONS", "KEY_LANES"]

KEY_LANES = 3
# counters (NetCache.stats): rows looked up, rows answered here, 64-bit key collisions seen
LOOKUPS, HITS, COLLISIONS = range(3)
_M32 = 0xFFFFFFFF
# per lane: the block step's two multipliers and the seed (odd constants under 2**31)
_C1 = (0x5BD1E995, 0x27D4EB2F, 0x165667B1)
_C2 = (0x1B873593, 0x2C1B3C6D, 0x297A2D39)
_SEED = (0x3C6EF372, 0x5851F42D, 0x14057B7E)


class NetCache:
    """``size`` slots of (key, value); ``size`` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        if size < 0 or size & (size - 1):
            raise ValueError(f"cache size {size}: give 0 (no cache) or a power of two")
        self.size = size
        self.keys = np.full((size, KEY_LANES), -1, np.int64)  # -1: empty (lanes are never negative)
        # read only where a key matches: left unwritten (and untouched by the OS) until stored
        self.values = np.empty(size, np.float32)
        self.stats = np.zeros(3, np.int64)
        self.version: object = None  # the model_version of the evaluator whose answers these are

    def clear(self, version: object = None) -> None:
        """Forget every entry (a model swap); the counters stay."""
        self.keys.fill(-1)
        self.version = version


@njit(cache=True)
def _step(h: int, k: int, c1: int, c2: int) -> int:
    """murmur3's block step on 32-bit values held in int64."""
    k = (k * c1) & _M32
    k = ((k << 15) | (k >> 17)) & _M32
    k = (k * c2) & _M32
    h ^= k
    h = ((h << 13) | (h >> 19)) & _M32
    return (h * 5 + 0xE6546B64) & _M32


@njit(cache=True)
def _mix(out: np.ndarray, x: int) -> None:
    """Each lane's block step over ``x``, a slot of at most 32 bits with its sign (-1 is 0xFFFFFFFF)."""
    w = x & _M32
    for lane in range(KEY_LANES):
        out[lane] = _step(out[lane], w, _C1[lane], _C2[lane])


@njit(cache=True)
def view_key(st: np.ndarray, viewer: int, kind: int, out: np.ndarray) -> None:
    """The key of position ``st`` (``blobnet.position``) seen by seat ``viewer`` into ``out``
    (KEY_LANES int64); ``kind`` tells apart views asked for different answers (0: the acting seat's
    row, 1: a seat's own-view row). Hashed over every slot that ``blobnet.features.encode_state``
    reads, and the viewer: the header, the viewer's hand (no other seat's), each seat's bid, tricks
    won, cards played, voids and game total, the current trick's cards. The row is a function of
    these, so equal views give equal keys, and a key met again is the same row unless all 96 bits
    agree by chance; a determinized deal and the position it came from give the same key. About 45
    words at 4 players, where the row has 654: 0.1 us a key against 0.6 for a hash of the row's
    nonzero words (the key before, in a scratch timing)."""
    for lane in range(KEY_LANES):
        out[lane] = _SEED[lane] ^ kind
    for i in range(HAND):
        _mix(out, st[i])
    _mix(out, viewer)
    # the card masks (52 bits) as two words; every other slot is a small number
    _mix(out, st[HAND + viewer])
    _mix(out, st[HAND + viewer] >> 32)
    n = st[PLAYERS]
    for s in range(n):
        _mix(out, st[PLAYED + s])
        _mix(out, st[PLAYED + s] >> 32)
    for base in (BIDS, WON, VOIDS, TOTALS):
        for s in range(n):
            _mix(out, st[base + s])
    for i in range(st[TRICK_LEN]):
        _mix(out, st[TRICK + i])
    for lane in range(KEY_LANES):
        h = out[lane]
        h ^= h >> 16
        h = (h * _C1[lane]) & _M32
        h ^= h >> 13
        h = (h * _C2[lane]) & _M32
        out[lane] = h ^ (h >> 16)


@njit(cache=True)
def find(keys: np.ndarray, stats: np.ndarray, key: np.ndarray) -> int:
    """The slot holding ``key``, or -1; counts the lookup, the hit or a collision into ``stats``."""
    size = keys.shape[0]
    if size == 0:
        return -1
    stats[LOOKUPS] += 1
    c = key[0] & (size - 1)
    if keys[c, 0] != key[0] or keys[c, 1] != key[1]:
        return -1
    if keys[c, 2] != key[2]:
        stats[COLLISIONS] += 1
        return -1
    stats[HITS] += 1
    return c


@njit(cache=True)
def store(keys: np.ndarray, values: np.ndarray, key: np.ndarray, v: float) -> None:
    """Keep the value ``v`` of the row whose key is ``key``, in the slot its key picks."""
    size = keys.shape[0]
    if size == 0:
        return
    c = key[0] & (size - 1)
    keys[c] = key
    values[c] = v
