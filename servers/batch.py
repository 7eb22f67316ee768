"""What passes between the batcher and its backends: a batch, its staging buffers, its results.

A ``Batch`` is filled by ``servers.batcher.Batcher`` (feature rows and legal masks copied into its
``Slot``), computed by a backend (servers/backends.py), then delivered by the batcher: its waiters
woken, its ``submit_rows`` callbacks handed ``RowsResult`` slices. ``check_rows`` is the one check
of a batch's rows every backend makes before its forward pass, but for a listed slot's, which the
batcher checked as it listed them.

Bad rows are found per batch, vectorised (``blobnet.evaluator.bad_rows``): a row holding NaN or
inf, or no legal id, is marked in ``Batch.bad`` and neutralised so that the rest of the batch runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from blobnet.compact import PackedRows, unpack_rows
from blobnet.evaluator import NO_LEGAL, NOT_FINITE, bad_rows
from servers.waiting import Shared

__all__ = [
    "Batch",
    "Slot",
    "RowsResult",
    "RowsCallback",
    "check_rows",
    "check_packed",
    "packed_bad_rows",
    "OPEN",
    "SEALED",
    "RUNNING",
    "DONE",
]


@dataclass(slots=True)
class RowsResult:
    """What ``submit_rows`` hands its callback for rows ``start .. start + count - 1`` of a submission.

    priors: (count, n_actions) float32, the softmax over each row's legal ids (0 elsewhere). values:
    (count, n_values) float32. Both are slices of the batch's own result arrays, which nothing reuses.
    row_errors: row index within the submission -> message, for rows that failed alone. error: set
    when the whole batch failed (then priors and values are None)."""

    start: int
    count: int
    priors: np.ndarray | None
    values: np.ndarray | None
    row_errors: dict[int, str]
    error: BaseException | None


RowsCallback = Callable[[RowsResult], None]


class Slot:
    """Staging buffers for one batch: features (max_batch, width) float32 and legal mask
    (max_batch, n_actions) bool, and, when ``packed``, packed rows (blobnet.compact, max_batch of
    them: a sparse CPU engine reads them as they are, a GPU unpacks them). ``pinned`` (CUDA): in
    page-locked memory, so that the copies to the device run asynchronously, plus pinned output
    buffers for the results coming back. ``listed`` (a sparse CPU engine): the rows' nonzero
    entries (``entries``: columns, values, each row's first entry; ``blobnet.stem.list_rows``)
    take the place of the features, which are then never written; room for every entry of every
    row, of which only the pages written are ever touched."""

    __slots__ = ("feat", "mask", "feat_t", "mask_t", "priors_out", "values_out", "packed", "packed_t", "entries")

    def __init__(
        self, max_batch: int, width: int, n_actions: int, n_values: int, *, pinned: bool, packed: bool = False,
        listed: bool = False,
    ) -> None:  # fmt: skip
        self.entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if listed:
            self.entries = (np.empty(max_batch * width, np.int64), np.empty(max_batch * width, np.float32),
                            np.empty(max_batch, np.int64))  # fmt: skip
        self.packed: PackedRows | None = PackedRows.empty(max_batch) if packed and not pinned else None
        self.packed_t: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if pinned and packed:
            rows = PackedRows.empty(max_batch)
            self.packed_t = tuple(torch.from_numpy(a).pin_memory() for a in (rows.bits, rows.scalars, rows.legal))  # type: ignore[assignment]
            assert self.packed_t is not None
            self.packed = PackedRows(*(t.numpy() for t in self.packed_t))
        if pinned:
            self.feat_t = torch.zeros((max_batch, width), dtype=torch.float32).pin_memory()
            self.mask_t = torch.zeros((max_batch, n_actions), dtype=torch.bool).pin_memory()
            self.priors_out = torch.zeros((max_batch, n_actions), dtype=torch.float32).pin_memory()
            self.values_out = torch.zeros((max_batch, n_values), dtype=torch.float32).pin_memory()
            self.feat = self.feat_t.numpy()
            self.mask = self.mask_t.numpy()
        else:
            self.feat = np.zeros((max_batch, width), dtype=np.float32)
            self.mask = np.zeros((max_batch, n_actions), dtype=np.bool_)


OPEN, SEALED, RUNNING, DONE = range(4)  # a batch's states, in order


class Batch(Shared):
    """One batch: the rows and masks copied so far into its slot, then the results."""

    __slots__ = (
        "slot", "feat", "mask", "n", "k", "packed", "parts", "soon", "due", "state", "full",
        "t0", "t_launch", "model", "weights", "error", "bad", "priors", "values",
    )  # fmt: skip

    def __init__(self, fut: asyncio.Future[None], slot: Slot, t0: float) -> None:
        super().__init__(fut)
        self.slot = slot
        self.feat = slot.feat  # (max_batch, width) float32
        self.mask = slot.mask  # (max_batch, n_actions) bool
        self.n = 0  # rows so far
        self.k = 0  # entries listed so far (a listed slot)
        self.packed: list[tuple[int, int]] = []  # (row0, count): rows staged in slot.packed
        self.parts: list[tuple[RowsCallback, int, int, int]] = []  # (callback, start, count, row0)
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
        self.priors: np.ndarray | None = None  # (n, n_actions) float32, this batch's own
        self.values: np.ndarray | None = None  # (n, n_values) float32, this batch's own

    def set_results(self, priors: np.ndarray, values: np.ndarray) -> None:
        """Keep the forward pass's results, fresh arrays that no later batch writes into: each
        requester gets slices of them."""
        self.priors = priors
        self.values = values


def check_rows(b: Batch) -> None:
    """Mark the rows of ``b`` with NaN/inf features or no legal id in ``b.bad`` and neutralise them
    (zero features, every id legal) so that the batch can run. Rows staged packed are unpacked
    first, unless every row is: then ``check_packed``."""
    n = b.n
    if b.packed:
        assert b.slot.packed is not None
        if b.packed == [(0, n)]:
            check_packed(b)
            return
        for row0, count in b.packed:  # a batch mixing packed and plain rows: all plain
            unpack_rows(b.slot.packed[row0 : row0 + count], b.feat[row0 : row0 + count], b.mask[row0 : row0 + count])
        b.packed = []
    feats = b.feat[:n]
    mask = b.mask[:n]
    bad = bad_rows(feats, mask)
    if bad:
        rows = list(bad)
        feats[rows] = 0.0
        mask[rows] = True
        b.bad = bad


def check_packed(b: Batch) -> None:
    """``check_rows`` for a batch whose rows are all packed (``packed_bad_rows``); a bad row is
    neutralised packed (every bit and scalar 0, every id legal)."""
    assert b.slot.packed is not None
    rows = b.slot.packed[: b.n]
    bad = packed_bad_rows(rows)
    if bad:
        idx = list(bad)
        rows.bits[idx] = 0
        rows.scalars[idx] = 0.0
        rows.legal[idx] = 0xFF
        b.bad = bad


def packed_bad_rows(rows: PackedRows) -> dict[int, str]:
    """``blobnet.evaluator.bad_rows`` of packed rows: a flag column holds only 0 or 1 by
    construction, so a bad row is one with a NaN/inf scalar or no legal id."""
    bad: dict[int, str] = {}
    for r in np.flatnonzero(~rows.legal.any(axis=1)).tolist():
        bad[r] = NO_LEGAL
    for r in np.flatnonzero(~np.isfinite(rows.scalars).all(axis=1)).tolist():
        bad[r] = NOT_FINITE
    return bad
