"""What passes between the batcher and its backends: a batch, its staging buffers, its results.

A ``Batch`` is filled by ``servers.batcher.Batcher`` (rows copied into its ``Slot``, legal ids
appended), computed by a backend (servers/backends.py), then delivered by the batcher: its waiters
woken, its ``submit_rows`` callbacks handed ``RowsResult`` slices. ``check_rows`` is the one check
of a batch's rows every backend makes before its forward pass.

Bad rows are found per batch, vectorised (``np.isfinite`` over the whole batch costs about 0.06 us
a row against 1.5 us for one row at a time): a row holding NaN or inf, or a legal id that is not
an int in ``0..n_actions-1``, is marked in ``Batch.bad`` and neutralised so that the rest of the
batch runs.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from servers.waiting import Shared

__all__ = ["Batch", "Slot", "RowsResult", "RowsCallback", "check_rows", "OPEN", "SEALED", "RUNNING", "DONE"]


@dataclass(slots=True)
class RowsResult:
    """What ``submit_rows`` hands its callback for rows ``start .. start + count - 1`` of a submission.

    probs: (sum of len(legal) over these rows,) float32, the prior of each legal id, rows in order,
    ids in the order given. values: (count, n_values) float32. row_errors: row index within the
    submission -> message, for rows that failed alone. error: set when the whole batch failed (then
    probs and values are None). The arrays are only valid during the callback: copy what you keep."""

    start: int
    count: int
    probs: np.ndarray | None
    values: np.ndarray | None
    row_errors: dict[int, str]
    error: BaseException | None


RowsCallback = Callable[[RowsResult], None]


class Slot:
    """Staging buffers for one batch: features (max_batch, width) float32 and legal mask
    (max_batch, n_actions) bool. ``pinned`` (CUDA): in page-locked memory, so that the copies to the
    device run asynchronously, plus pinned index and output buffers."""

    __slots__ = ("feat", "mask", "feat_t", "mask_t", "idx", "idx_t", "flat_out", "values_out")

    def __init__(self, max_batch: int, width: int, n_actions: int, n_values: int, *, pinned: bool) -> None:
        if pinned:
            self.feat_t = torch.zeros((max_batch, width), dtype=torch.float32).pin_memory()
            self.mask_t = torch.zeros((max_batch, n_actions), dtype=torch.bool).pin_memory()
            self.idx_t = torch.zeros(max_batch * n_actions, dtype=torch.int64).pin_memory()  # flat (row, id) index
            self.flat_out = torch.zeros(max_batch * n_actions, dtype=torch.float32).pin_memory()  # legal ids' priors
            self.values_out = torch.zeros((max_batch, n_values), dtype=torch.float32).pin_memory()
            self.feat = self.feat_t.numpy()
            self.mask = self.mask_t.numpy()
            self.idx = self.idx_t.numpy()
        else:
            self.feat = np.zeros((max_batch, width), dtype=np.float32)
            self.mask = np.zeros((max_batch, n_actions), dtype=np.bool_)


OPEN, SEALED, RUNNING, DONE = range(4)  # a batch's states, in order


class Batch(Shared):
    """One batch: the rows copied so far, their legal ids (flat, copied at submit), then the results."""

    __slots__ = (
        "slot", "feat", "n", "flat_legal", "lens", "part_rows", "parts", "soon", "due", "state", "full",
        "t0", "t_launch", "model", "weights", "error", "bad", "flat", "values", "flat_np", "values_np",
    )  # fmt: skip

    def __init__(self, fut: asyncio.Future[None], slot: Slot, t0: float) -> None:
        super().__init__(fut)
        self.slot = slot
        self.feat = slot.feat  # (max_batch, width) float32
        self.n = 0  # rows so far
        self.flat_legal: list[int] = []  # every row's legal ids, concatenated
        self.lens: list[int] = []  # len(legal) of each row
        self.part_rows = 0  # rows from submit_rows; the others came from evaluate_many and want Python lists
        self.parts: list[tuple[RowsCallback, int, int, int, int]] = []  # (callback, start, count, row0, flat0)
        self.soon = False  # a call_soon flush is scheduled (a max_wait timer may be too)
        self.due = False  # its flush came while every launch slot was busy: launch it when one frees
        self.state = OPEN
        self.full = False  # sealed at max_batch while its requesters' neighbours still ran
        self.t0 = t0  # perf_counter of the first submit
        self.t_launch = 0.0
        self.model: nn.Module | None = None  # the model at launch
        self.weights: dict[str, torch.Tensor] | None = None  # loaded into it just before this batch
        self.error: BaseException | None = None
        self.bad: dict[int, str] | None = None  # row -> why it failed alone
        self.flat: list[float] = []  # the legal ids' priors, in flat_legal order
        self.values: list[list[float]] = []  # (n, n_values)
        self.flat_np: np.ndarray | None = None  # the same as arrays, for submit_rows
        self.values_np: np.ndarray | None = None

    def set_results(self, flat: np.ndarray, values: np.ndarray) -> None:
        """Keep the forward pass's results: the legal ids' priors (flat) and the values (n, n_values)."""
        self.flat_np = flat
        self.values_np = values
        if self.n > self.part_rows:
            # One conversion per batch for the evaluate_many requesters; per request it would cost a call each.
            self.flat = flat.tolist()
            self.values = values.tolist()


def check_rows(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every legal id in ``b``, flat; marks rows with bad ids or NaN/inf features in
    ``b.bad`` and neutralises them (zero features, id 0) so that the batch can run."""
    n = b.n
    width = b.feat.shape[1]
    a = b.slot.mask.shape[1]  # n_actions
    lens = np.fromiter(b.lens, np.intp, n)
    flat = b.flat_legal
    try:
        # fromiter would truncate a float id (or parse a string): let it have plain ints only. sum() is
        # a C-speed check (about 5 ns an id): it stays an int only when every id is an int or a bool.
        if type(sum(flat)) is not int:
            raise TypeError
        cols = np.fromiter(flat, np.intp, len(flat))
    except (TypeError, ValueError, OverflowError):  # one at a time: numpy ints pass, the rest fail their row
        cols = np.array([_as_id(x) for x in flat], dtype=np.intp)
    rows = np.repeat(np.arange(n), lens)
    bad: dict[int, str] = {}
    if not lens.all():
        for r in np.flatnonzero(lens == 0).tolist():
            bad[r] = "legal is empty: a position to evaluate has at least one legal action"
    if cols.size and (cols.min() < 0 or cols.max() >= a):
        wrong = (cols < 0) | (cols >= a)
        for r in np.unique(rows[wrong]).tolist():
            bad[r] = f"legal holds an id that is not an int in 0..{a - 1}"
        cols[wrong] = 0
    feats = b.feat[:n]
    if not np.isfinite(feats).all():
        nonfinite = ~np.isfinite(feats).all(axis=1)
        for r in np.flatnonzero(nonfinite).tolist():
            bad[r] = f"features hold NaN or inf (row of width {width})"
        feats[nonfinite] = 0.0
    if bad:
        b.bad = bad
    return rows, cols


def _as_id(x: object) -> int:
    """An action id as a Python int, or -1 (rejected later as out of range) when it is not a small integer."""
    try:
        a = operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        return -1
    return a if -(1 << 62) < a < 1 << 62 else -1
