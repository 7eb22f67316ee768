"""The network's first layer over a row's nonzero entries (a numba kernel).

A row of ``blobnet.encode`` is mostly zeros: about 28 of its 654 entries are set, most of them
one-hots. The first layer ``x @ W.T + b`` is then the bias plus the sum, over the set entries, of
that entry's value times its row of ``W.T``: an embedding bag with per-sample weights, which reads
28 rows of the weight instead of 654. Equal to the dense layer up to the order of the additions
(within 1e-5 for the project's networks).
"""

from __future__ import annotations

import numpy as np

from blobnet.jit import njit

__all__ = ["stem_rows", "stem_packed"]


@njit(cache=True, fastmath=True)
def stem_rows(x: np.ndarray, wt: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = bias + sum over c with x[r, c] != 0 of x[r, c] * wt[c]`` for every row r of ``x``
    (n, width) float32; ``wt`` (width, hidden) float32 is the layer's weight transposed, ``out``
    (n, hidden) float32. A row's set entries are gathered first, then added weight row by weight
    row (``fastmath`` lets the additions use fused multiply-adds)."""
    n, width = x.shape
    hidden = wt.shape[1]
    index = np.empty(width, np.int64)
    value = np.empty(width, np.float32)
    for r in range(n):
        k = 0
        for c in range(width):
            if x[r, c] != 0.0:
                index[k] = c
                value[k] = x[r, c]
                k += 1
        for j in range(hidden):
            out[r, j] = bias[j]
        for q in range(k):
            v = value[q]
            c = index[q]
            for j in range(hidden):
                out[r, j] += v * wt[c, j]


@njit(cache=True, fastmath=True)
def stem_packed(
    bits: np.ndarray, scalars: np.ndarray, scalar_at: np.ndarray, wt: np.ndarray, bias: np.ndarray, out: np.ndarray
) -> None:
    """``stem_rows`` of rows packed by ``blobnet.compact`` (bits (n, BIT_BYTES) uint8, scalars
    (n, N_SCALARS) float32), without unpacking them: a row's set bits are its nonzero columns, in
    column order, so walking them adds the same terms in the same order as ``stem_rows`` (equal to
    it bit for bit), and no scan of the 654 columns is needed. ``scalar_at[c]``: the index in
    ``scalars`` of column c, -1 for a flag column (whose value is 1)."""
    n = bits.shape[0]
    hidden = wt.shape[1]
    for r in range(n):
        for j in range(hidden):
            out[r, j] = bias[j]
        for q in range(bits.shape[1]):
            b = bits[r, q]
            if b == 0:
                continue
            for k in range(8):
                if b & (0x80 >> k):
                    c = q * 8 + k
                    s = scalar_at[c]
                    v = np.float32(1.0) if s < 0 else scalars[r, s]
                    for j in range(hidden):
                        out[r, j] += v * wt[c, j]
