"""Encoded rows in compact form: one bit a column, the scalar fields as float32, the legal mask as bits.

A row of ``blobnet.encode`` is ``WIDTH`` (654) float32, 2,616 bytes, and all but ``N_SCALARS``
(44) of its entries are 0/1 flags (``encode.SCALAR_FIELDS`` names the others). Packed, a row is
``BIT_BYTES`` (82) bytes holding one bit per column ("nonzero", eight columns a byte in order, the
first in the high bit, as ``np.packbits``), its 44 scalars as float32 (176 bytes) and its legal
mask, ``LEGAL_BYTES`` (9) bytes packed the same way: ``ROW_BYTES`` = 267 bytes, 10 times fewer
than the row and its mask as the batcher takes them (2,616 + 70 bytes).
Unpacking sets each column from its bit, then the scalar columns from the scalars: exact, bit for
bit. The form is fixed-size, so a ring of rows in shared memory (servers/shm.py) indexes it like
any array, and a GPU unpacks it with a few elementwise torch ops (``servers.backends.unpack_torch``).

Why every column gets a bit, the 44 scalar columns too (5 bytes more than bits for the 610 flag
columns alone): eight contiguous columns make a byte without a gather or a branch, which packs at
about 0.5 us a row on this machine against 1 us for the flag columns gathered one by one and 1.7 us
for byte-aligned runs of each field (numba, rows of real positions, 24 to 512 rows a call).
Why not a list of each row's nonzero entries (about 36 of 654, what the sparse first layer of
``blobnet.stem`` reads): finding them costs a scan of the row (0.7 us a row in numba, 4 to 6 us
with ``np.nonzero``), and the list varies in length with the position (up to 64 in these rows),
so a ring of them needs an offset table. The bits are that list already, in column order: the
sparse first layer lists the entries from them (``blobnet.stem.nonzero_packed``), and a GPU or a
dense engine unpacks them (0.3 to 0.4 us a row).

``pack_rows`` refuses a row whose flag columns hold anything but 0 or 1, whose scalars are not
finite, or whose legal mask is empty (ValueError naming the row, the column and its field): what
cannot be carried exactly is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blobnet.cards import N_ACTIONS
from blobnet.encode import FIELDS, OFFSETS, SCALAR_FIELDS, WIDTH
from blobnet.evaluator import NO_LEGAL
from blobnet.jit import njit

__all__ = [
    "PackedRows",
    "pack_rows",
    "unpack_rows",
    "BIT_COLS",
    "FLAG",
    "SCALAR_AT",
    "unpack_legal",
    "SCALAR_COLS",
    "BIT_BYTES",
    "N_SCALARS",
    "LEGAL_BYTES",
    "ROW_BYTES",
]

# The flag columns (0/1 only) and the scalar columns (carried as float32 too), each in row order.
BIT_COLS = np.array(
    [OFFSETS[name] + i for name, w in FIELDS if name not in SCALAR_FIELDS for i in range(w)], dtype=np.int64
)
SCALAR_COLS = np.array(
    [OFFSETS[name] + i for name, w in FIELDS if name in SCALAR_FIELDS for i in range(w)], dtype=np.int64
)
FLAG = np.zeros(WIDTH, dtype=np.uint8)  # 1 at the flag columns (0/1 only), 0 at the scalar ones
FLAG[BIT_COLS] = 1
SCALAR_AT = np.full(WIDTH, -1, dtype=np.int64)  # column -> its index among the scalars; -1: a flag column
SCALAR_AT[SCALAR_COLS] = np.arange(len(SCALAR_COLS))
BIT_BYTES = (WIDTH + 7) // 8  # 82: a bit for every column
N_SCALARS = len(SCALAR_COLS)  # 44
LEGAL_BYTES = (N_ACTIONS + 7) // 8  # 9
ROW_BYTES = BIT_BYTES + 4 * N_SCALARS + LEGAL_BYTES  # 267: one row and its legal mask


@dataclass(frozen=True, slots=True)
class PackedRows:
    """n rows in compact form: bits (n, BIT_BYTES) uint8, scalars (n, N_SCALARS) float32, legal
    (n, LEGAL_BYTES) uint8. The arrays may be views into shared memory or a replay buffer; slicing
    gives views, an index array copies."""

    bits: np.ndarray
    scalars: np.ndarray
    legal: np.ndarray

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, rows: slice | np.ndarray) -> PackedRows:
        return PackedRows(self.bits[rows], self.scalars[rows], self.legal[rows])

    @staticmethod
    def empty(n: int) -> PackedRows:
        """``n`` rows of zeros, in fresh arrays."""
        return PackedRows(
            np.zeros((n, BIT_BYTES), np.uint8),
            np.zeros((n, N_SCALARS), np.float32),
            np.zeros((n, LEGAL_BYTES), np.uint8),
        )


@njit(cache=True)  # no fastmath: it would assume away the NaN and inf this refuses
def _pack(x, legal, flag, scalar_cols, bits, scalars, lbits, row0, need_legal):  # type: ignore[no-untyped-def]
    """Pack the rows of ``x`` and ``legal`` into rows ``row0 ..`` of ``bits``, ``scalars`` and
    ``lbits``; the first row that cannot be packed exactly (or has no legal id), or -1. Every
    column's bit is "nonzero", eight contiguous columns a byte, without a branch (a scan that
    branched on each nonzero entry cost twice as much: mispredictions)."""
    n, width = x.shape
    whole = width // 8
    na = legal.shape[1]
    for r in range(n):
        o = row0 + r
        bad = np.uint8(0)
        for q in range(whole):
            acc = np.uint8(0)
            for k in range(8):
                v = x[r, q * 8 + k]
                nz = np.uint8(v != 0.0)
                bad |= nz & np.uint8(v != 1.0) & flag[q * 8 + k]
                acc |= nz << np.uint8(7 - k)
            bits[o, q] = acc
        if whole * 8 < width:
            acc = np.uint8(0)
            for c in range(whole * 8, width):
                v = x[r, c]
                nz = np.uint8(v != 0.0)
                bad |= nz & np.uint8(v != 1.0) & flag[c]
                acc |= nz << np.uint8(7 - (c - whole * 8))
            bits[o, whole] = acc
        for i in range(scalar_cols.shape[0]):
            v = x[r, scalar_cols[i]]
            bad |= np.uint8(not np.isfinite(v))
            scalars[o, i] = v
        lbits[o, :] = 0
        seen = False
        for a in range(na):
            if legal[r, a]:
                lbits[o, a >> 3] |= 0x80 >> (a & 7)
                seen = True
        if bad or (need_legal and not seen):
            return r
    return -1


@njit(cache=True)
def _unpack(bits, scalars, lbits, scalar_cols, x, legal):  # type: ignore[no-untyped-def]
    """Write every column of ``x`` and ``legal`` from the packed rows: each column from its bit,
    then the scalar columns from the scalars."""
    n, width = x.shape
    na = legal.shape[1]
    whole = width // 8
    for r in range(n):
        for q in range(whole):
            b = bits[r, q]
            for k in range(8):
                x[r, q * 8 + k] = (b >> (7 - k)) & 1
        for c in range(whole * 8, width):
            x[r, c] = (bits[r, whole] >> (7 - (c - whole * 8))) & 1
        for i in range(scalar_cols.shape[0]):
            x[r, scalar_cols[i]] = scalars[r, i]
        for a in range(na):
            legal[r, a] = (lbits[r, a >> 3] >> (7 - (a & 7))) & 1 != 0


def pack_rows(
    features: np.ndarray, legal: np.ndarray, out: PackedRows, row0: int = 0, *, first: int = 0, need_legal: bool = True
) -> None:
    """Pack features (n, WIDTH) float32 and legal (n, N_ACTIONS) bool into rows ``row0 .. row0 + n - 1``
    of ``out`` (writing at an offset saves slicing three arrays: a ring's hot path).
    ValueError naming the first row that cannot travel exactly: a flag column holding anything but
    0 or 1, a scalar that is NaN or inf, or no legal id (rows before it are written, the rest not);
    ``first``: the caller's number of row 0, for that message. ``need_legal`` False: an empty legal
    mask is fine (stored examples, not positions to evaluate)."""
    n = len(features)
    if features.shape != (n, WIDTH) or legal.shape != (n, N_ACTIONS) or not 0 <= row0 <= len(out) - n:
        raise ValueError(
            f"pack_rows: features {features.shape}, legal {legal.shape} at row {row0} of {len(out)} packed rows: "
            f"expected (n, {WIDTH}) and (n, {N_ACTIONS}) with 0 <= row {row0} <= {len(out)} - n"
        )
    bad = _pack(features, legal, FLAG, SCALAR_COLS, out.bits, out.scalars, out.legal, row0, need_legal)
    if bad >= 0:
        raise ValueError(f"row {first + bad}: {_why(features[bad], legal[bad])}")


def _why(row: np.ndarray, legal: np.ndarray) -> str:
    """Why ``row`` cannot be packed (the slow path, once a row has failed)."""
    for c in BIT_COLS.tolist():
        if row[c] not in (0.0, 1.0):
            return f"feature {c} (field {_field(c)!r}) is {row[c]}, where only 0 or 1 can be carried as a bit"
    for c in SCALAR_COLS.tolist():
        if not np.isfinite(row[c]):
            return f"feature {c} (field {_field(c)!r}) is {row[c]}: features must be finite"
    return NO_LEGAL


def _field(c: int) -> str:
    return max((name for name, _ in FIELDS if OFFSETS[name] <= c), key=OFFSETS.__getitem__)


def unpack_rows(rows: PackedRows, features: np.ndarray, legal: np.ndarray) -> None:
    """Unpack ``rows`` into features (n, WIDTH) float32 and legal (n, N_ACTIONS) bool, every column
    written (the outputs may hold anything before)."""
    n = len(rows)
    if features.shape != (n, WIDTH) or legal.shape != (n, N_ACTIONS):
        raise ValueError(
            f"unpack_rows: {n} packed rows into features {features.shape} and legal {legal.shape}: expected "
            f"({n}, {WIDTH}) and ({n}, {N_ACTIONS})"
        )
    _unpack(rows.bits, rows.scalars, rows.legal, SCALAR_COLS, features, legal)


def unpack_legal(rows: PackedRows) -> np.ndarray:
    """The rows' legal masks, (n, N_ACTIONS) bool (a fresh array)."""
    return np.unpackbits(rows.legal, axis=1, count=N_ACTIONS).view(np.bool_)
