"""The two ends of the network over what is set in them: the first layer over a row's nonzero
entries, and the policy's softmax over the legal ids.

A row of ``blobnet.encode`` is mostly zeros: about 28 of its 654 entries are set, most of them
one-hots. The first layer ``x @ W.T + b`` is then the bias plus the sum, over the set entries, of
that entry's value times its row of ``W.T``: an embedding bag with per-sample weights, which reads
28 rows of the weight instead of 654. The kernels here list each row's set entries (column and
value, in column order, rows one after another with their offsets), from the float rows or from
their packed bits (``blobnet.compact``); PyTorch's ``embedding_bag`` adds the weight rows up.
Equal to the dense layer up to the order of the additions (within 1e-5 for the project's
networks); the two listings are equal, so the first layer from packed bits equals the one from
the rows bit for bit. Measured at batch 256 to 1,024 (one thread): the listing 0.7 us a row and
the bag 0.9, against 2.5 us for one numba kernel that found the entries and added the rows itself.

A position has a few legal ids of 70: the softmax of the legal logits reads and exponentiates those
alone (ONNX Runtime's masking and softmax over all 70 took 1.1 us a row at batch 1,024).
"""

from __future__ import annotations

import math

import numpy as np

from blobnet.jit import njit

__all__ = ["nonzero_rows", "list_rows", "nonzero_packed", "legal_softmax"]


@njit(cache=True)
def nonzero_rows(x: np.ndarray, cols: np.ndarray, vals: np.ndarray, offsets: np.ndarray) -> int:
    """List the nonzero entries of the rows of ``x`` (n, width) float32, width even (``WIDTH`` is):
    row r's are ``cols`` (int64) and ``vals`` (float32) from ``offsets[r]`` on, in column order;
    returns how many in all (``cols`` and ``vals`` hold at least n * width). The row is read two
    columns at a time as 64-bit words (an odd width cannot be: numba refuses the view) and the
    nonzero words found without a branch (a branch on each entry mispredicts at every set one)."""
    n, width = x.shape
    half = width // 2
    words = x.view(np.uint64)
    found = np.empty(half, np.int64)
    k = 0
    for r in range(n):
        offsets[r] = k
        xr = x[r]
        wr = words[r]
        m = 0
        for q in range(half):
            found[m] = q
            m += wr[q] != 0
        for i in range(m):
            c0 = 2 * found[i]
            for c in range(c0, c0 + 2):
                v = xr[c]
                cols[k] = c
                vals[k] = v
                k += v != 0.0
    return k


@njit(cache=True)
def list_rows(
    x: np.ndarray, legal: np.ndarray, cols: np.ndarray, vals: np.ndarray, offsets: np.ndarray, mask: np.ndarray,
    row0: int, k: int,
) -> tuple[int, int]:  # fmt: skip
    """``nonzero_rows`` appending, for the batcher: the nonzero entries of the rows of ``x`` (n,
    width) float32, C-contiguous, width even, go to ``cols`` and ``vals`` from entry ``k`` on, row
    r's first at ``offsets[row0 + r]``, and its ``legal`` (n, n_actions) bool row to ``mask[row0 +
    r]``; returns the entries in all and the rows not listed: a row holding NaN or inf, or no legal
    id, lists nothing (``blobnet.evaluator.bad_rows`` names them, on that rare path). ``cols`` and
    ``vals`` hold at least k + n * width. The batcher lists each request's rows as it takes them,
    while they are still in the core's cache (``servers.batcher``). Its own loop, not
    ``nonzero_rows``'s: on a request's few rows, in cache, a branch on each 64-bit word lists 0.32 us
    a row against 0.37 for one loop shared by both, and ``nonzero_rows``'s branch-free scan over a
    whole batch, out of cache, 0.39 to 0.68 against 0.71 to 0.89 with the branch (scratch loops, 1,536
    rows of sample inputs)."""
    n, width = x.shape
    words = x.view(np.uint64)
    bits = x.view(np.uint32)
    n_bad = 0
    for r in range(n):
        offsets[row0 + r] = k
        start = k
        wr = words[r]
        br = bits[r]
        xr = x[r]
        nonfinite = 0
        for q in range(width // 2):
            if wr[q] != 0:
                for c in range(2 * q, 2 * q + 2):
                    cols[k] = c
                    vals[k] = xr[c]
                    k += br[c] != 0
                    nonfinite |= (br[c] & 0x7F800000) == 0x7F800000
        any_legal = False
        mr = mask[row0 + r]
        for a in range(legal.shape[1]):
            mr[a] = legal[r, a]
            any_legal |= legal[r, a]
        if nonfinite or not any_legal:
            k = start
            n_bad += 1
    return k, n_bad


@njit(cache=True)
def nonzero_packed(
    bits: np.ndarray, scalars: np.ndarray, scalar_at: np.ndarray, cols: np.ndarray, vals: np.ndarray,
    offsets: np.ndarray,
) -> int:  # fmt: skip
    """``nonzero_rows`` of rows packed by ``blobnet.compact`` (bits (n, BIT_BYTES) uint8, scalars
    (n, N_SCALARS) float32), without unpacking them: a row's set bits are its nonzero columns, in
    column order. ``scalar_at[c]``: the index in ``scalars`` of column c, -1 for a flag column
    (whose value is 1)."""
    n = bits.shape[0]
    k = 0
    for r in range(n):
        offsets[r] = k
        for q in range(bits.shape[1]):
            b = bits[r, q]
            if b == 0:
                continue
            for j in range(8):
                if b & (0x80 >> j):
                    c = q * 8 + j
                    s = scalar_at[c]
                    cols[k] = c
                    vals[k] = np.float32(1.0) if s < 0 else scalars[r, s]
                    k += 1
    return k


@njit(cache=True)  # no fastmath: it would assume away the infinities exp may meet
def legal_softmax(logits: np.ndarray, legal: np.ndarray, out: np.ndarray) -> None:
    """``out[r]``: the softmax of ``logits[r]`` (n, n_actions) float32 over the ids where ``legal[r]``
    (bool) holds, 0 elsewhere; a row with no legal id gets zeros (the batcher never runs one). A
    row's legal ids are listed first (one pass over the mask, without a branch), then only they are
    read: 0.08 us a row against 0.18 for three passes over all 70 ids with a branch on each (batch
    1,024 of sample masks, a scratch timing), the same numbers bit for bit."""
    n, a = logits.shape
    ids = np.empty(a, np.int64)
    for r in range(n):
        lr = logits[r]
        mr = legal[r]
        o = out[r]
        m = 0
        for j in range(a):
            ids[m] = j
            m += mr[j]
            o[j] = 0.0
        top = np.float32(-3.4e38)
        for i in range(m):
            if lr[ids[i]] > top:
                top = lr[ids[i]]
        total = 0.0
        for i in range(m):
            e = math.exp(lr[ids[i]] - top)
            o[ids[i]] = e
            total += e
        scale = 1.0 / total if total > 0.0 else 0.0
        for i in range(m):
            o[ids[i]] *= scale
