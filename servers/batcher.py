"""The batcher: one model, many waiting coroutines, one forward pass per batch.

A game coroutine that needs the network awaits ``batcher.evaluate_many(features, legal)`` (a wave
of leaves, the search's way: one await for many rows; the arrays of ``blobnet.evaluator``).
Submitting is synchronous and cheap (ray serve's ``_BatchQueue.put``): the feature rows and legal
masks are copied into a preallocated staging buffer, the first submit of a batch schedules its
flush with ``loop.call_soon``, and every requester awaits the batch's one shared future.
``call_soon`` puts the flush behind every callback already ready to run, so by the time it runs
every coroutine that could run has run: it either submitted or waits on something else. That is
the flush rule "flush when every live requester is waiting", without a timer. A batch that reaches
``max_batch`` is sealed at once and the next submit opens a new one. ``max_wait`` (a timer) is
only for rows that come from other processes (``submit_rows``, the socket front), whose next frame
cannot be seen from here.

Behind a sparse CPU engine (its first layer over the rows' nonzero entries, ``blobnet.stem``) the
staging buffer holds those entries, not the rows: each request's rows are listed, and checked, as
they are taken, while the caller's buffer is still in the core's cache (``blobnet.stem.list_rows``;
packed rows by ``nonzero_packed``), instead of copied whole into a buffer of a few MB that the
forward pass reads twice more, to check the rows and to list them.

The batcher keeps intake, the flush rule and delivery; where the forward pass runs is a backend
(servers/backends.py), chosen once at construction from ``device`` and ``mode``: "inline", "auto"
(the CPU default) or "thread" on a CPU, streams on CUDA. Up to ``max_inflight`` batches are
launched and not yet delivered; the model's weights change between batches, never inside one.

Every requester of a batch awaits the batch's one shared future (servers/waiting.py says why and
how a cancelled waiter leaves the rest of its batch undisturbed).

Bad rows (servers/batch.py finds them, per batch; or ``list_rows``, per request): a row holding NaN
or inf, or no legal id, fails only its own request with a ValueError. A forward pass that raises
fails every waiter of that batch with ``EvaluationError`` (its ``__cause__`` is the original
error); the batcher goes on serving.
Each batch's results are fresh arrays, priors (n, n_actions) and values (n, n_values); each request
takes its slices (no copy, no Python object per row), and nothing writes into them afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.compact import SCALAR_AT, PackedRows, unpack_legal
from blobnet.encode import WIDTH
from blobnet.evaluator import EvaluationError, EvaluatorClosed, Priors, bad_rows, check_request, row_errors
from blobnet.net import make_engine, resolve_dtype
from blobnet.stem import list_rows, nonzero_packed
from servers.backends import CPU_BACKENDS, Backend, CudaBackend, InlineBackend
from servers.batch import DONE, OPEN, RUNNING, SEALED, Batch, RowsCallback, RowsResult, Slot, packed_bad_rows
from servers.stats import BatcherStats
from servers.waiting import wait

__all__ = ["Batcher", "BatcherStats", "RowsResult", "RowsCallback", "MODES"]

log = logging.getLogger(__name__)

MODES = tuple(CPU_BACKENDS)  # where a CPU forward pass runs; the first is the default


class Batcher:
    """Evaluator that batches every waiting request into one forward pass of ``model``.

    model: ``model(x (B, width) float, legal (B, n_actions) bool) -> (logits (B, n_actions),
    values (B, n_values))``; illegal logits must be so negative that their softmax is exactly 0 (as
    ``blobnet.net.BlobNet``'s, the dtype's most negative finite value). The batcher owns it from now
    on: it is put in eval mode and moved to ``device``/``dtype``.
    width, n_actions, n_values: taken from the model's attributes of those names unless given.
    max_batch: rows per forward pass at most. mode: "auto", "inline" or "thread" (servers/backends.py).
    dtype: None (float32), torch.bfloat16/float16 or "bf16"/"fp16". max_wait: seconds a batch holding
    only ``submit_rows`` rows waits for more before its flush (None: flush when the loop is idle).
    max_inflight: batches launched and not finished at most (default 1 in-line, else 2).
    threads: torch intra-op threads on a CPU; None leaves torch's choice (every core) in-line, and
    gives each worker thread its share of the cores in thread mode. It is process-wide.
    engine: the CPU forward engine (``blobnet.net.ENGINES``: "onednn", "onnx", "eager", "compile"); sparse: its
    first layer over the rows' nonzero entries (``blobnet.stem``; the model must be a BlobNet). A
    CUDA device runs the model as it is and ignores both.
    Call every method from the event loop's thread; the batcher serves one event loop at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_batch: int = 1024,
        device: str | torch.device = "cpu",
        mode: str = "auto",
        dtype: torch.dtype | str | None = None,
        max_wait: float | None = None,
        max_inflight: int | None = None,
        threads: int | None = None,
        engine: str = "eager",
        sparse: bool = False,
        width: int | None = None,
        n_actions: int | None = None,
        n_values: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: must be at least 1")
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait={max_wait}: must be None or at least 0 seconds")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here")
        kind: type[InlineBackend] | type[CudaBackend] = CudaBackend if cuda else CPU_BACKENDS[mode]
        self.mode = mode
        self.dtype = resolve_dtype(dtype)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_inflight = kind.inflight if max_inflight is None else max_inflight
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight={self.max_inflight}: must be at least 1")
        if width is None and not hasattr(model, "width"):
            raise ValueError("the model has no `width` attribute: pass width= (features per row)")
        self.width = int(width if width is not None else model.width)  # type: ignore[arg-type]
        self.n_actions = int(n_actions if n_actions is not None else getattr(model, "n_actions", N_ACTIONS))
        self.n_values = int(n_values if n_values is not None else getattr(model, "n_values", N_VALUES))
        self.packs = self.width == WIDTH and self.n_actions == N_ACTIONS  # takes blobnet.compact rows
        self._backend: Backend = kind(
            self._deliver, device=self.device, dtype=self.dtype, threads=threads, max_inflight=self.max_inflight
        )
        self._model = self._prepare(model)
        if isinstance(self._backend, InlineBackend):
            self._backend.engine = make_engine(
                engine, self._model, dtype=self.dtype, threads=self._backend.threads, sparse=sparse
            )
        # stage the rows' nonzero entries, not the rows (module docstring)
        self.lists = isinstance(self._backend, InlineBackend) and sparse
        self._weights: dict[str, torch.Tensor] | None = None  # set_weights waiting for the next launch
        self.model_version = 0  # set_weights calls so far (blobnet.evaluator: what a cache may keep)
        self._free: list[Slot] = []
        self._open: Batch | None = None  # the batch taking rows now
        self._ready: deque[Batch] = deque()  # sealed, waiting for a launch slot
        self._inflight = 0
        self._pumping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._drained: asyncio.Future[None] | None = None  # aclose waits on it for in-flight batches
        self._stats = BatcherStats(max_batch)

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        """The evaluator protocol (``blobnet.evaluator.Evaluator``): features (k, width) float32 and
        legal (k, n_actions) bool, copied before the first await. Returns (priors (k, n_actions),
        values (k, n_values)), float32 slices of the batch's own result arrays (concatenated when the
        request spans batches). ValueError for arrays of the wrong shape or dtype, or a row with
        NaN/inf features or no legal id (the whole request fails; other requests in its batch go on);
        EvaluationError when the batch's forward pass failed; EvaluatorClosed after ``aclose``."""
        segments = self._place(features, legal, wait=False)
        if len(segments) == 1:
            b, start, count, row0 = segments[0]
            if not b.done:
                await wait(b)
            self._check(b, start, count, row0)
            return b.priors[row0 : row0 + count], b.values[row0 : row0 + count]  # type: ignore[index]
        if not segments:  # no rows
            return np.zeros((0, self.n_actions), np.float32), np.zeros((0, self.n_values), np.float32)
        priors: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for b, start, count, row0 in segments:
            if not b.done:
                await wait(b)
            self._check(b, start, count, row0)
            priors.append(b.priors[row0 : row0 + count])  # type: ignore[index]
            values.append(b.values[row0 : row0 + count])  # type: ignore[index]
        return np.concatenate(priors), np.concatenate(values)

    @staticmethod
    def _check(b: Batch, start: int, count: int, row0: int) -> None:
        """Raise what a request's rows ``row0 .. row0 + count - 1`` of ``b`` failed with, if anything."""
        if b.error is not None:
            raise _failure(b.error)
        if b.bad is not None:
            bad = {r - row0 + start: m for r, m in b.bad.items() if row0 <= r < row0 + count}
            if bad:
                raise row_errors(bad)

    async def aclose(self) -> None:
        """Stop intake, fail what has not been launched with EvaluatorClosed, let what is in flight
        finish, stop the backend's helper threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        err = EvaluatorClosed("the batcher is closed")
        pending = list(self._ready)
        self._ready.clear()
        if self._open is not None:
            pending.append(self._open)
            self._open = None
        for b in pending:
            b.error = err
            self._deliver(b, launched=False)
        if self._inflight and self._loop is not None:
            self._drained = self._loop.create_future()
            await self._drained
        await self._backend.aclose()

    def submit_rows(self, features: np.ndarray, legal: np.ndarray, on_done: RowsCallback, *, wait: bool = True) -> None:
        """Submit many rows at once without a coroutine (the socket front): features (R, width)
        float32, legal (R, n_actions) bool, both copied now. ``on_done`` is called on the loop thread
        once per batch the rows land in (rows past ``max_batch`` go to the next batch). wait: use the
        ``max_wait`` timer (rows from another process, whose next message cannot be seen from here).
        Bad rows fail alone, in ``row_errors``."""
        for b, start, count, row0 in self._place(features, legal, wait=wait):
            b.parts.append((on_done, start, count, row0))

    def submit_packed(self, rows: PackedRows, on_done: RowsCallback, *, wait: bool = True) -> None:
        """``submit_rows`` for rows in compact form (``blobnet.compact``: the shared-memory front's
        rows, read straight from its ring), copied packed into the staging buffers: a sparse CPU
        engine computes its first layer from the bits, a GPU unpacks them, other engines get them
        unpacked before the forward pass. ValueError when this batcher's rows are not
        ``blobnet.encode``'s (the compact form is theirs)."""
        if not self.packs:
            raise ValueError(
                f"packed rows need rows of width {WIDTH} and {N_ACTIONS} actions; this batcher's are "
                f"{self.width} and {self.n_actions}"
            )
        for b, start, take, row0 in self._segments(len(rows), wait):
            if self.lists:
                self._list_packed(b, rows[start : start + take], row0)
                b.parts.append((on_done, start, take, row0))
                continue
            staged = b.slot.packed
            assert staged is not None  # self.packs: every slot has them
            end = row0 + take
            staged.bits[row0:end] = rows.bits[start : start + take]
            staged.scalars[row0:end] = rows.scalars[start : start + take]
            staged.legal[row0:end] = rows.legal[start : start + take]
            b.packed.append((row0, take))
            b.parts.append((on_done, start, take, row0))

    def _place(self, features: np.ndarray, legal: np.ndarray, *, wait: bool) -> list[tuple[Batch, int, int, int]]:
        """Copy rows and masks into the open batch (and the next ones past max_batch). One segment
        per batch: (batch, first row of the request, rows, first row in the batch)."""
        r = check_request(features, legal, self.width, self.n_actions)
        segments = []
        for b, start, take, row0 in self._segments(r, wait):
            end = row0 + take
            if self.lists:
                self._list_rows(b, features[start : start + take], legal[start : start + take], row0)
            elif take == r:  # the whole request: no slicing of the caller's arrays
                b.feat[row0:end] = features
                b.mask[row0:end] = legal
            else:
                b.feat[row0:end] = features[start : start + take]
                b.mask[row0:end] = legal[start : start + take]
            segments.append((b, start, take, row0))
        return segments

    def _list_rows(self, b: Batch, features: np.ndarray, legal: np.ndarray, row0: int) -> None:
        """List rows (and copy their masks) into ``b`` from its row ``row0`` on: ``_place`` for a
        listed slot. A bad row lists nothing and is marked in ``b.bad``, its mask every id (as
        ``servers.batch.check_rows`` neutralises one)."""
        cols, vals, offsets = b.slot.entries  # type: ignore[misc]
        b.k, n_bad = list_rows(np.ascontiguousarray(features), legal, cols, vals, offsets, b.mask, row0, b.k)
        if n_bad:  # rare: name them as every evaluator does
            self._mark_bad(b, row0, bad_rows(features, legal))

    def _list_packed(self, b: Batch, rows: PackedRows, row0: int) -> None:
        """``_list_rows`` for rows packed by ``blobnet.compact``: their entries straight from their
        bits. A bad row (``servers.batch.packed_bad_rows``) lists nothing and is marked in ``b.bad``."""
        cols, vals, offsets = b.slot.entries  # type: ignore[misc]
        end = row0 + len(rows)
        bad = packed_bad_rows(rows)
        if bad:  # list zeros for them (a copy, on this rare path alone)
            idx = list(bad)
            rows = PackedRows(rows.bits.copy(), rows.scalars.copy(), rows.legal)
            rows.bits[idx] = 0
            rows.scalars[idx] = 0.0
        k = nonzero_packed(rows.bits, rows.scalars, SCALAR_AT, cols[b.k :], vals[b.k :], offsets[row0:end])
        offsets[row0:end] += b.k
        b.k += k
        b.mask[row0:end] = unpack_legal(rows)
        if bad:
            self._mark_bad(b, row0, bad)

    @staticmethod
    def _mark_bad(b: Batch, row0: int, bad: dict[int, str]) -> None:
        """Rows ``row0 + i`` of ``b`` failed alone (``bad``: i -> why): marked in ``b.bad``, their
        masks every id, so that the batch runs."""
        if b.bad is None:
            b.bad = {}
        for i, why in bad.items():
            b.bad[row0 + i] = why
            b.mask[row0 + i] = True

    def _segments(self, r: int, wait: bool) -> Iterator[tuple[Batch, int, int, int]]:
        """Where ``r`` rows go: (batch, first row of the request, rows, first row in the batch), in
        the open batch and the next ones past max_batch. The caller copies each segment before it
        asks for the next; a batch is counted full and sealed only then."""
        start = 0
        while start < r:
            b = self._batch_for(wait)
            row0 = b.n
            take = min(r - start, self.max_batch - row0)
            yield b, start, take, row0
            b.n = row0 + take
            start += take
            if b.n == self.max_batch:
                self._seal(b, full=True)

    def _batch_for(self, wait: bool) -> Batch:
        """The open batch (a new one if none), its flush scheduled: at once (call_soon), or after
        ``max_wait`` for rows from another process (``wait``)."""
        b = self._open
        if b is None:
            b = self._new_batch()
        if not b.soon:
            if wait and self.max_wait:
                if b.n == 0:
                    self._loop.call_later(self.max_wait, self._flush, b)  # type: ignore[union-attr]
            else:
                b.soon = True
                self._loop.call_soon(self._flush, b)  # type: ignore[union-attr]
        return b

    def set_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load ``state_dict`` into the model before the next batch launched (never inside one).
        The tensors are copied now: the caller may change its own afterwards. ValueError when the keys
        or shapes do not match the model."""
        own = self._model.state_dict()
        missing = own.keys() - state_dict.keys()
        extra = state_dict.keys() - own.keys()
        if missing or extra:
            raise ValueError(
                f"state_dict does not fit the model: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for k, v in state_dict.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}")
        self._weights = {k: v.detach().to(self.device, copy=True) for k, v in state_dict.items()}
        self.model_version += 1

    @property
    def model(self) -> nn.Module:
        """The model the next batch will use (weights from a pending ``set_weights`` not yet loaded)."""
        return self._model

    def stats(self) -> dict[str, Any]:
        """Batches, rows, batch-size mean/percentiles/histogram, queue wait, forward time, device idle time."""
        return self._stats.as_dict()

    def counts(self) -> tuple[int, int]:
        """Batches and rows since the last ``reset_stats``: ``stats()``'s first two, without the
        summaries it computes (a walk over every batch size: too slow to ask after every round)."""
        return self._stats.batches, self._stats.rows

    def reset_stats(self) -> None:
        self._stats.reset()

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.dtype is not None:
            model = model.to(self.dtype)
        return model.eval()

    def _new_batch(self) -> Batch:
        if self._closed:
            raise EvaluatorClosed("the batcher is closed: no evaluation after aclose()")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and (self._inflight or self._ready):
                raise RuntimeError("the batcher is in use on another event loop")
            self._loop = loop
        slot = self._free.pop() if self._free else Slot(
            self.max_batch, self.width, self.n_actions, self.n_values, pinned=self._backend.pinned,
            packed=self.packs and not self.lists, listed=self.lists,
        )  # fmt: skip
        b = Batch(loop.create_future(), slot, time.perf_counter())
        self._open = b
        return b

    def _seal(self, b: Batch, full: bool = False) -> None:
        """No more rows for ``b``: queue it for a launch slot. ``full``: it reached max_batch."""
        if self._open is b:
            self._open = None
        b.state = SEALED
        b.full = full
        self._ready.append(b)

    def _flush(self, b: Batch) -> None:
        """call_soon (or max_wait timer) callback of ``b``: launch it, unless it already went."""
        if b.state == OPEN:
            if b.n == 0:  # its only submit failed while copying: nothing to run, wait for the next
                b.soon = False
                return
            if self._inflight >= self.max_inflight:
                # Every slot is busy: let the open batch keep growing; _pump launches it when one frees.
                b.due = True
                return
            self._seal(b)
        self._pump()

    def _pump(self) -> None:
        """Launch sealed batches (then a held-back open one) while launch slots are free."""
        if self._pumping:  # an inline launch delivers and pumps again: the outer loop goes on instead
            return
        self._pumping = True
        try:
            while self._inflight < self.max_inflight and not self._closed:
                if self._weights is not None and self._inflight:
                    return  # new weights load into the model the batches in flight use: wait for them
                if self._ready:
                    b = self._ready.popleft()
                elif self._open is not None and self._open.due:
                    b = self._open
                    self._open = None
                    b.state = SEALED
                else:
                    return
                b.state = RUNNING
                b.t_launch = time.perf_counter()
                b.model = self._model
                b.weights, self._weights = self._weights, None
                self._inflight += 1
                self._backend.launch(b)
        finally:
            self._pumping = False

    def _deliver(self, b: Batch, launched: bool = True) -> None:
        """On the loop thread: wake the batch's waiters, call its callbacks, free its slot."""
        b.state = DONE
        st = self._stats
        if launched:
            st.record(b.n, b.t0, b.t_launch, time.perf_counter())
            if b.error is not None:
                st.failed_batches += 1
                log.warning("forward pass failed for a batch of %d rows: %r", b.n, b.error)
            elif b.bad is not None:
                st.failed_rows += len(b.bad)
        b.finish()
        for on_done, start, count, row0 in b.parts:
            self._call_part(b, on_done, start, count, row0)
        b.parts = []
        self._free.append(b.slot)
        if launched:
            self._inflight -= 1
            if self._drained is not None and not self._inflight and not self._drained.done():
                self._drained.set_result(None)
            self._pump()

    def _call_part(self, b: Batch, on_done: RowsCallback, start: int, count: int, row0: int) -> None:
        errors: dict[int, str] = {}
        if b.bad is not None:
            errors = {r - row0 + start: m for r, m in b.bad.items() if row0 <= r < row0 + count}
        if b.error is not None or b.priors is None or b.values is None:
            res = RowsResult(start, count, None, None, errors, b.error or EvaluatorClosed("no result"))
        else:
            res = RowsResult(start, count, b.priors[row0 : row0 + count], b.values[row0 : row0 + count], errors, None)
        try:
            on_done(res)
        except Exception:  # a callback's bug must not stop the other callbacks or the loop
            log.exception("submit_rows callback failed")


def _failure(err: BaseException) -> BaseException:
    """The exception a waiter of a failed batch raises: a fresh one per waiter, so that thousands of
    waiters do not all append their frames to one shared traceback."""
    if isinstance(err, EvaluatorClosed):
        return EvaluatorClosed(str(err))
    e = EvaluationError(f"the forward pass failed for this request's batch: {err!r}")
    e.__cause__ = err
    return e
