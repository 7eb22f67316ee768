"""The batcher: one model, many waiting coroutines, one forward pass per batch.

A game coroutine that needs the network awaits ``batcher.evaluate(row, legal)`` (one position) or
``batcher.evaluate_many(rows, legals)`` (a wave of leaves, the search's way: one await for many
rows). Submitting is synchronous and cheap (ray serve's ``_BatchQueue.put``): the rows are copied
into a preallocated staging buffer, the legal ids appended to the batch, the first submit of a batch
schedules its flush with ``loop.call_soon``, and every requester awaits the batch's one shared
future. ``call_soon`` puts the flush behind every callback already ready to run, so by the time it
runs every coroutine that could run has run: it either submitted or waits on something else. That
is the flush rule "flush when every live requester is waiting", without a timer. A batch that
reaches ``max_batch`` is sealed at once and the next submit opens a new one. ``max_wait`` (a timer)
is only for rows that come from other processes (``submit_rows``, the socket front), whose next
frame cannot be seen from here.

The forward pass runs

- ``mode="inline"``: in the flush callback, on the event loop thread, with every torch thread;
  nothing else could run meanwhile anyway, since every requester is waiting.
- ``mode="auto"`` (the CPU default): in-line, except a batch that filled up to ``max_batch`` while
  other requesters were still running: that one goes to a worker thread, so its forward pass
  overlaps with the requesters filling the next batch (one such batch at a time; another full one
  meanwhile runs in-line, which keeps both cores on forward passes). Which rows share a batch
  then depends on the thread's timing; in-line, it never does, so runs that must repeat exactly
  (training resumes, seeded matches) use "inline".
- ``mode="thread"``: on worker threads, two batches at a time with the cores split between them,
  so the loop keeps running the requesters of one batch while the next is computed. The GIL is
  shared: tensor creation, ``tolist`` and the Python around each forward pass hold it.
- on CUDA (either mode): launched from the loop thread into pinned staging buffers, non-blocking
  copies on a copy stream, the forward on a compute stream, results copied back into pinned output
  buffers; a CUDA event per batch, waited on by a helper thread, hands the results back; up to
  ``max_inflight`` (default 2) batches in flight while the loop goes on filling the next.

bench/batcher_speed.py measures the modes (and the ways to wake waiters, below); its docstring says
why the defaults are what they are.

Every requester of a batch awaits the batch's one shared future (servers/waiting.py says why and
how a cancelled waiter leaves the rest of its batch undisturbed).

Bad rows are found per batch, vectorised (``np.isfinite`` over the whole batch costs about 0.06 us
a row against 1.5 us for one row at a time): a row holding NaN or inf, or legal ids outside
``0..n_actions-1``, fails only its own request with a ValueError. A forward pass that raises fails
every waiter of that batch with ``EvaluationError`` (its ``__cause__`` is the original error); the
batcher goes on serving. Results become Python lists once per batch (one ``tolist`` of the priors of
every legal id and one of the values), and each request takes its slices.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import nn

from blobnet.evaluator import Evaluator
from servers.stats import BatcherStats
from servers.waiting import Shared, collateral, rewait

__all__ = [
    "Evaluator",
    "Batcher",
    "BatcherStats",
    "RowsResult",
    "EvaluationError",
    "EvaluatorClosed",
    "MODES",
]

log = logging.getLogger(__name__)

MODES = ("auto", "inline", "thread")
_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


class EvaluatorClosed(RuntimeError):
    """The evaluator was closed (or its connection lost): no evaluation was or will be made."""


class EvaluationError(RuntimeError):
    """The forward pass failed for the whole batch holding this request; ``__cause__`` is why."""


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


class _Slot:
    """Staging buffers for one batch: features (max_batch, width) float32 and legal mask
    (max_batch, n_actions) bool; on CUDA pinned, plus pinned index and output buffers."""

    __slots__ = ("feat", "mask", "feat_t", "mask_t", "idx", "idx_t", "flat_out", "values_out")

    def __init__(self, max_batch: int, width: int, n_actions: int, n_values: int, cuda: bool) -> None:
        if cuda:
            self.feat_t = torch.zeros((max_batch, width), dtype=torch.float32).pin_memory()
            self.mask_t = torch.zeros((max_batch, n_actions), dtype=torch.bool).pin_memory()
            self.idx_t = torch.zeros(max_batch * n_actions, dtype=torch.int64).pin_memory()
            self.flat_out = torch.zeros(max_batch * n_actions, dtype=torch.float32).pin_memory()
            self.values_out = torch.zeros((max_batch, n_values), dtype=torch.float32).pin_memory()
            self.feat = self.feat_t.numpy()
            self.mask = self.mask_t.numpy()
            self.idx = self.idx_t.numpy()
        else:
            self.feat = np.zeros((max_batch, width), dtype=np.float32)
            self.mask = np.zeros((max_batch, n_actions), dtype=np.bool_)


_OPEN, _SEALED, _RUNNING, _DONE = range(4)


class _Batch(Shared):
    """One batch: the rows copied so far, their legal ids (flat, copied at submit), then the results."""

    __slots__ = (
        "slot", "feat", "n", "flat_legal", "lens", "part_rows", "parts", "soon", "due", "state", "full", "threaded",
        "t0", "t_launch", "model", "weights", "error", "bad", "flat", "values", "flat_np", "values_np",
    )  # fmt: skip

    def __init__(self, fut: asyncio.Future[None], slot: _Slot, t0: float) -> None:
        super().__init__(fut)
        self.slot = slot
        self.feat = slot.feat  # (max_batch, width) float32
        self.n = 0  # rows so far
        self.flat_legal: list[int] = []  # every row's legal ids, concatenated
        self.lens: list[int] = []  # len(legal) of each row
        self.part_rows = 0  # rows from submit_rows; the others came from evaluate() and want Python lists
        self.parts: list[tuple[RowsCallback, int, int, int, int]] = []  # (callback, start, count, row0, flat0)
        self.soon = False  # a call_soon flush is scheduled (a max_wait timer may be too)
        self.due = False  # its flush came while every launch slot was busy: launch it when one frees
        self.state = _OPEN
        self.full = False  # sealed at max_batch while its requesters' neighbours still ran
        self.threaded = False  # computed on a worker thread
        self.t0 = t0  # perf_counter of the first submit
        self.t_launch = 0.0
        self.model: nn.Module | None = None  # the model at launch
        self.weights: dict[str, torch.Tensor] | None = None  # loaded into it just before this batch
        self.error: BaseException | None = None
        self.bad: dict[int, str] | None = None  # row -> why it failed alone
        self.flat: list[float] = []  # the legal ids' priors, in flat_legal order
        self.values: list[list[float]] = []  # (n, n_values)
        self.flat_np: np.ndarray | None = None
        self.values_np: np.ndarray | None = None


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None, a torch dtype, or one of "bf16", "fp16", "fp32" (and their long names); fp32 means None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    try:
        d = _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(_DTYPES)} or None") from None
    return None if d == torch.float32 else d


class Batcher:
    """Evaluator that batches every waiting request into one forward pass of ``model``.

    model: ``model(x (B, width) float, legal (B, n_actions) bool) -> (logits (B, n_actions),
    values (B, n_values))``; illegal logits must be very negative (``blobnet.net.BlobNet`` is such a
    model). The batcher owns it from now on: it is put in eval mode and moved to ``device``/``dtype``.
    width, n_actions, n_values: taken from the model's attributes of those names unless given.
    max_batch: rows per forward pass at most. mode: "auto", "inline" or "thread" (module docstring).
    dtype: None (float32), torch.bfloat16/float16 or "bf16"/"fp16". max_wait: seconds a batch holding
    only ``submit_rows`` rows waits for more before its flush (None: flush when the loop is idle).
    max_inflight: batches launched and not finished at most (default 1 in-line, else 2).
    threads: torch intra-op threads; None leaves torch's choice (every core) in-line, and
    gives each worker thread its share of the cores in thread mode. It is process-wide.
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
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here")
        self.mode = mode
        self.dtype = resolve_dtype(dtype)
        self.max_batch = max_batch
        self.max_wait = max_wait
        if max_inflight is None:
            # CUDA: launch the next batch while one runs. Thread mode: two forward passes at once, one
            # per worker thread, so a round larger than max_batch keeps both cores busy.
            max_inflight = 2 if self.cuda or mode != "inline" else 1
        self.max_inflight = max_inflight
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight={self.max_inflight}: must be at least 1")
        if width is None and not hasattr(model, "width"):
            raise ValueError("the model has no `width` attribute: pass width= (features per row)")
        self.width = int(width if width is not None else model.width)  # type: ignore[arg-type]
        self.n_actions = int(n_actions if n_actions is not None else getattr(model, "n_actions", 70))
        self.n_values = int(n_values if n_values is not None else getattr(model, "n_values", 8))
        if not self.cuda:
            if threads is None and mode == "thread":
                # The workers' forward passes and the event loop share the cores: split them.
                threads = max(1, (os.cpu_count() or 2) // self.max_inflight)
            if threads is not None:
                torch.set_num_threads(threads)
        self._model = self._prepare(model)
        self._weights: dict[str, torch.Tensor] | None = None  # set_weights waiting for the next launch
        self._shape = (self.width,)
        self._arange = np.arange(max_batch)
        self._free: list[_Slot] = []
        self._open: _Batch | None = None  # the batch taking rows now
        self._ready: deque[_Batch] = deque()  # sealed, waiting for a launch slot
        self._inflight = 0
        self._threaded = 0  # batches on a worker thread now (auto mode)
        self._pumping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._drained: asyncio.Future[None] | None = None  # aclose waits on it for in-flight batches
        self._stats = BatcherStats(max_batch)
        self._workers: list[threading.Thread] = []  # thread mode: one per launch slot; CUDA: one event waiter
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        if self.cuda:
            self._copy_stream = torch.cuda.Stream(self.device)
            self._compute_stream = torch.cuda.Stream(self.device)

    async def evaluate(self, features: np.ndarray, legal: Sequence[int]) -> tuple[list[float], list[float]]:
        """See ``Evaluator.evaluate``. ValueError for a row of the wrong width, NaN/inf features or
        bad legal ids (this request only); EvaluationError when the batch's forward pass failed;
        EvaluatorClosed after ``aclose``."""
        try:
            if features.shape != self._shape:
                raise ValueError(f"features have shape {features.shape}: expected ({self.width},)")
        except AttributeError:
            raise ValueError(f"features must be a numpy array of shape ({self.width},)") from None
        k = len(legal)
        if k == 0:
            raise ValueError("legal is empty: a position to evaluate has at least one legal action")
        b = self._open
        if b is None:
            b = self._new_batch()
        if not b.soon:
            b.soon = True
            self._loop.call_soon(self._flush, b)  # type: ignore[union-attr]
        i = b.n
        b.feat[i] = features  # the copy the protocol promises: the caller overwrites its row next
        off = len(b.flat_legal)
        b.flat_legal.extend(legal)  # not +=: a numpy array on the right would be added elementwise
        b.lens.append(k)
        b.n = i + 1
        if i + 1 == self.max_batch:
            self._seal(b, full=True)
        fut = b.fut
        try:
            await fut
        except asyncio.CancelledError:
            if not collateral(fut):
                raise
            await rewait(b)
        if b.error is not None:
            raise _failure(b.error)
        if b.bad is not None and i in b.bad:
            raise ValueError(b.bad[i])
        priors = [0.0] * self.n_actions
        try:
            for a, p in zip(legal, b.flat[off : off + k], strict=False):
                priors[a] = p
        except TypeError:  # numpy read a float or a string as an id: this requester's mistake alone
            raise ValueError(f"legal ids must be ints in 0..{self.n_actions - 1}, got {list(legal)!r}") from None
        return priors, b.values[i]

    async def aclose(self) -> None:
        """Stop intake, fail what has not been launched with EvaluatorClosed, let what is in flight
        finish, stop the helper thread. Idempotent."""
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
        for _ in self._workers:
            self._jobs.put(None)
        for w in self._workers:
            await asyncio.to_thread(w.join)
        self._workers = []

    async def evaluate_many(
        self, features: np.ndarray, legal: Sequence[Sequence[int]]
    ) -> tuple[list[float], list[list[float]]]:
        """Many rows in one request (the search's protocol, ``blobnet.search.Evaluator``): features
        (k, width) float32, copied before the first await; legal: k lists of ids. Returns (priors,
        values): priors, each row's prior of each of its legal ids, flat in row order
        (``sum(len(l) for l in legal)`` floats); values, k lists of ``n_values`` floats. A bad row
        fails the whole request with ValueError (other requests in its batch go on)."""
        if not legal:
            return [], []
        if 0 in map(len, legal):
            raise ValueError("a row's legal list is empty: a position to evaluate has at least one legal action")
        segments = self._place(features, legal, wait=False)
        priors: list[float] = []
        values: list[list[float]] = []
        for b, start, count, row0, flat0, nl in segments:
            fut = b.fut
            if not b.done:
                try:
                    await fut
                except asyncio.CancelledError:
                    if not collateral(fut):
                        raise
                    await rewait(b)
            if b.error is not None:
                raise _failure(b.error)
            if b.bad is not None:
                bad = [f"row {r - row0 + start}: {m}" for r, m in sorted(b.bad.items()) if row0 <= r < row0 + count]
                if bad:
                    raise ValueError("; ".join(bad))
            if len(segments) == 1:
                return b.flat[flat0 : flat0 + nl], b.values[row0 : row0 + count]
            priors += b.flat[flat0 : flat0 + nl]
            values += b.values[row0 : row0 + count]
        return priors, values

    def submit_rows(
        self, features: np.ndarray, legal: Sequence[Sequence[int]], on_done: RowsCallback, *, wait: bool = True
    ) -> None:
        """Submit many rows at once without a coroutine (the socket front): features (R, width), legal
        R lists of ids. ``on_done`` is called on the loop thread once per batch the rows land in (rows
        past ``max_batch`` go to the next batch). wait: use the ``max_wait`` timer (rows from another
        process, whose next message cannot be seen from here). Bad rows fail alone, in ``row_errors``."""
        for b, start, count, row0, flat0, _ in self._place(features, legal, wait=wait):
            b.parts.append((on_done, start, count, row0, flat0))
            b.part_rows += count

    def _place(
        self, features: np.ndarray, legal: Sequence[Sequence[int]], *, wait: bool
    ) -> list[tuple[_Batch, int, int, int, int, int]]:
        """Copy rows into the open batch (and the next ones past max_batch). One segment per batch:
        (batch, first row of the request, rows, first row in the batch, first flat id, flat ids)."""
        shape = getattr(features, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.width or shape[0] != len(legal):
            raise ValueError(f"features have shape {shape}: expected ({len(legal)}, {self.width}), a row per legal")
        r = shape[0]
        lens = list(map(len, legal))
        segments = []
        start = 0
        while start < r:
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
            take = min(r - start, self.max_batch - b.n)
            row0 = b.n
            flat0 = len(b.flat_legal)
            b.feat[row0 : row0 + take] = features[start : start + take]
            b.flat_legal.extend(chain.from_iterable(legal[start : start + take]))
            b.lens += lens[start : start + take]
            b.n = row0 + take
            segments.append((b, start, take, row0, flat0, len(b.flat_legal) - flat0))
            start += take
            if b.n == self.max_batch:
                self._seal(b, full=True)
        return segments

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

    def swap_model(self, model: nn.Module) -> None:
        """Use ``model`` from the next batch launched on; batches in flight finish on the old one.
        Drops a ``set_weights`` not yet taken (it was meant for the old model)."""
        self._model = self._prepare(model)
        self._weights = None

    @property
    def model(self) -> nn.Module:
        """The model the next batch will use (weights from a pending ``set_weights`` not yet loaded)."""
        return self._model

    def stats(self) -> dict[str, Any]:
        """Batches, rows, batch-size mean/percentiles/histogram, queue wait, forward time, device idle time."""
        return self._stats.as_dict()

    def reset_stats(self) -> None:
        self._stats.reset()

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.dtype is not None:
            model = model.to(self.dtype)
        return model.eval()

    def _new_batch(self) -> _Batch:
        if self._closed:
            raise EvaluatorClosed("the batcher is closed: evaluate() after aclose()")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and (self._inflight or self._ready):
                raise RuntimeError("the batcher is in use on another event loop")
            self._loop = loop
        slot = self._free.pop() if self._free else _Slot(
            self.max_batch, self.width, self.n_actions, self.n_values, self.cuda
        )  # fmt: skip
        b = _Batch(loop.create_future(), slot, time.perf_counter())
        self._open = b
        return b

    def _seal(self, b: _Batch, full: bool = False) -> None:
        """No more rows for ``b``: queue it for a launch slot. ``full``: it reached max_batch."""
        if self._open is b:
            self._open = None
        b.state = _SEALED
        b.full = full
        self._ready.append(b)

    def _flush(self, b: _Batch) -> None:
        """call_soon (or max_wait timer) callback of ``b``: launch it, unless it already went."""
        if b.state == _OPEN:
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
                    b.state = _SEALED
                else:
                    return
                self._launch(b)
        finally:
            self._pumping = False

    def _launch(self, b: _Batch) -> None:
        b.state = _RUNNING
        b.t_launch = time.perf_counter()
        b.model = self._model
        b.weights, self._weights = self._weights, None
        self._inflight += 1
        if self.cuda:
            try:
                self._launch_cuda(b)
            except BaseException as e:  # noqa: BLE001 - a failed launch fails its batch, never the loop
                b.error = e
                self._deliver(b)
        elif self.mode == "inline" or (self.mode == "auto" and (not b.full or self._threaded)):
            self._compute(b)
            self._deliver(b)
        else:
            b.threaded = True
            self._threaded += 1
            if len(self._workers) < (1 if self.mode == "auto" else self._inflight):
                self._start_worker("batcher-forward")
            self._jobs.put(b)

    def _start_worker(self, name: str) -> None:
        w = threading.Thread(target=self._work, name=f"{name}-{len(self._workers)}", daemon=True)
        w.start()
        self._workers.append(w)

    def _work(self) -> None:
        """Helper thread: CPU forward passes (thread mode) or waits on CUDA events, in launch order."""
        loop = self._loop
        assert loop is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.cuda:
                b, event = job
                try:
                    event.synchronize()
                except BaseException as e:  # noqa: BLE001
                    b.error = e
            else:
                b = job
                self._compute(b)
            try:
                loop.call_soon_threadsafe(self._deliver, b)
            except RuntimeError:  # the loop is closed: nobody is left to wake
                return

    def _index(self, b: _Batch) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of every legal id in the batch, flat; marks rows with bad ids or NaN/inf
        features in ``b.bad`` and neutralises them (zero features, id 0) so the batch can run."""
        n = b.n
        a = self.n_actions
        lens = np.fromiter(b.lens, np.intp, n)
        try:
            cols = np.fromiter(b.flat_legal, np.intp, len(b.flat_legal))
        except (TypeError, ValueError, OverflowError):
            cols = np.array([_as_id(x) for x in b.flat_legal], dtype=np.intp)
        rows = np.repeat(self._arange[:n], lens)
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
                bad[r] = f"features hold NaN or inf (row of width {self.width})"
            feats[nonfinite] = 0.0
        if bad:
            b.bad = bad
        return rows, cols

    def _compute(self, b: _Batch) -> None:
        """CPU forward pass of ``b``, on the loop's thread or a worker thread (see ``_launch``)."""
        try:
            n = b.n
            rows, cols = self._index(b)
            mask = b.slot.mask[:n]
            mask.fill(False)
            mask[rows, cols] = True
            x = torch.from_numpy(b.feat[:n])
            if self.dtype is not None:
                x = x.to(self.dtype)
            if b.weights is not None:
                b.model.load_state_dict(b.weights)  # type: ignore[union-attr]
            with torch.inference_mode():
                logits, values = b.model(x, torch.from_numpy(mask))  # type: ignore[misc]
                probs = torch.softmax(logits.float(), dim=1).numpy()
                b.values_np = values.float().numpy()
            b.flat_np = probs[rows, cols]
            if b.n > b.part_rows:
                # One conversion per batch; per row it would cost a call each.
                b.flat = b.flat_np.tolist()
                b.values = b.values_np.tolist()
        except BaseException as e:  # noqa: BLE001 - the batch fails, the batcher goes on
            b.error = e

    def _launch_cuda(self, b: _Batch) -> None:
        """Queue b's copies and forward pass on the device; a helper thread waits for its event."""
        n = b.n
        slot = b.slot
        rows, cols = self._index(b)
        nl = len(cols)
        if nl > slot.idx.shape[0]:  # rows listing more ids than there are actions (duplicates): grow
            slot.idx_t = torch.zeros(nl, dtype=torch.int64).pin_memory()
            slot.flat_out = torch.zeros(nl, dtype=torch.float32).pin_memory()
            slot.idx = slot.idx_t.numpy()
        mask = slot.mask[:n]
        mask.fill(False)
        mask[rows, cols] = True
        np.multiply(rows, self.n_actions, out=slot.idx[:nl])
        slot.idx[:nl] += cols
        cs = self._compute_stream
        if b.weights is not None:
            # Queued on the compute stream after the batches already launched, before this one.
            cs.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(cs):
                b.model.load_state_dict(b.weights)  # type: ignore[union-attr]
        with torch.inference_mode():
            # The copy stream waits for whatever the default stream queued (weights copied in by
            # set_weights, the model's own move to the device).
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._copy_stream):
                x = slot.feat_t[:n].to(self.device, non_blocking=True)
                m = slot.mask_t[:n].to(self.device, non_blocking=True)
                idx = slot.idx_t[:nl].to(self.device, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
            cs.wait_event(copied)
            with torch.cuda.stream(cs):
                # Allocated on the copy stream, used on this one: keep the allocator from reusing them early.
                for t in (x, m, idx):
                    t.record_stream(cs)
                if self.dtype is not None:
                    x = x.to(self.dtype)
                logits, values = b.model(x, m)  # type: ignore[misc]
                flat = torch.softmax(logits.float(), dim=1).view(-1).index_select(0, idx)
                slot.flat_out[:nl].copy_(flat, non_blocking=True)
                slot.values_out[:n].copy_(values.float(), non_blocking=True)
                done = torch.cuda.Event()
                done.record()
        if not self._workers:
            self._start_worker("batcher-cuda-events")
        self._jobs.put((b, done))

    def _deliver(self, b: _Batch, launched: bool = True) -> None:
        """On the loop thread: wake the batch's waiters, call its callbacks, free its slot."""
        if self.cuda and launched and b.error is None:
            nl = len(b.flat_legal)
            b.flat_np = b.slot.flat_out[:nl].numpy()
            b.values_np = b.slot.values_out[: b.n].numpy()
            if b.n > b.part_rows:
                b.flat = b.flat_np.tolist()
                b.values = b.values_np.tolist()
        b.state = _DONE
        st = self._stats
        if launched:
            st.record(b.n, b.t0, b.t_launch, time.perf_counter())
            if b.error is not None:
                st.failed_batches += 1
                log.warning("forward pass failed for a batch of %d rows: %r", b.n, b.error)
            elif b.bad is not None:
                st.failed_rows += len(b.bad)
        b.finish()
        for on_done, start, count, row0, flat0 in b.parts:
            self._call_part(b, on_done, start, count, row0, flat0)
        b.parts = []
        self._free.append(b.slot)
        if launched:
            self._inflight -= 1
            self._threaded -= b.threaded
            if self._drained is not None and not self._inflight and not self._drained.done():
                self._drained.set_result(None)
            self._pump()

    def _call_part(self, b: _Batch, on_done: RowsCallback, start: int, count: int, row0: int, flat0: int) -> None:
        errors: dict[int, str] = {}
        if b.bad is not None:
            errors = {r - row0 + start: m for r, m in b.bad.items() if row0 <= r < row0 + count}
        if b.error is not None or b.flat_np is None or b.values_np is None:
            res = RowsResult(start, count, None, None, errors, b.error or EvaluatorClosed("no result"))
        else:
            nl = sum(b.lens[row0 : row0 + count])
            res = RowsResult(
                start, count, b.flat_np[flat0 : flat0 + nl], b.values_np[row0 : row0 + count], errors, None
            )
        try:
            on_done(res)
        except Exception:  # a callback's bug must not stop the other callbacks or the loop
            log.exception("submit_rows callback failed")


def _as_id(x: object) -> int:
    """An action id as a Python int, or -1 (rejected later as out of range) when it is not a small integer."""
    try:
        a = operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        return -1
    return a if -(1 << 62) < a < 1 << 62 else -1


def _failure(err: BaseException) -> BaseException:
    """The exception a waiter of a failed batch raises: a fresh one per waiter, so that thousands of
    waiters do not all append their frames to one shared traceback."""
    if isinstance(err, EvaluatorClosed):
        return EvaluatorClosed(str(err))
    e = EvaluationError(f"the forward pass failed for this request's batch: {err!r}")
    e.__cause__ = err
    return e
