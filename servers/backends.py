"""Where a batch's forward pass runs: one backend class per place, chosen once by the batcher.

- ``InlineBackend`` (mode "inline"): in the flush callback, on the event loop thread, with every
  torch thread; nothing else could run meanwhile anyway, since every requester is waiting. Which
  rows share a batch never depends on timing, so runs that must repeat exactly (training resumes,
  seeded matches) use it.
- ``AutoBackend`` (mode "auto", the CPU default): in-line, except a batch that filled up to
  ``max_batch`` while other requesters were still running: that one goes to a worker thread, so its
  forward pass overlaps with the requesters filling the next batch (one such batch at a time;
  another full one meanwhile runs in-line, which keeps both cores on forward passes). Which rows
  share a batch then depends on the thread's timing.
- ``ThreadBackend`` (mode "thread"): on worker threads, one per batch in flight (two by default),
  with the cores split between them, so the loop keeps running the requesters of one batch while
  the next is computed. The GIL is shared: tensor creation, ``tolist`` and the Python around each
  forward pass hold it.
- ``CudaBackend`` (a CUDA device, either mode): launched from the loop thread into pinned staging
  buffers (rows from the shared-memory front stay packed and are unpacked on the device),
  non-blocking copies on a copy stream, the forward on a compute stream, results copied
  back into pinned output buffers; a CUDA event per batch, waited on by a helper thread, hands the
  results back (copied once more, into arrays of the batch's own: the pinned buffers are reused);
  up to ``max_inflight`` (default 2) batches in flight while the loop goes on filling the next.

bench/batcher_speed.py measures the modes; its docstring says why the defaults are what they are.

A backend's whole surface (``Backend``): ``launch(batch)`` on the loop thread, which ends, on the
loop thread, in the ``deliver(batch)`` callback the batcher handed it (at once when in-line),
with the batch's results or its ``error`` set; ``aclose()`` stops its helper threads once nothing
is in flight. A backend never raises out of ``launch``: a failure is the batch's ``error``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch

from blobnet.cards import N_ACTIONS
from blobnet.compact import SCALAR_COLS, unpack_legal, unpack_rows
from blobnet.encode import WIDTH
from blobnet.net import Engine
from servers.batch import Batch, check_rows

__all__ = [
    "Backend",
    "Deliver",
    "InlineBackend",
    "AutoBackend",
    "ThreadBackend",
    "CudaBackend",
    "CPU_BACKENDS",
    "unpack_torch",
    "device_inputs",
]

Deliver = Callable[[Batch], None]  # the batcher's: wake a computed (or failed) batch's waiters, on the loop thread


class Backend(Protocol):
    pinned: bool  # the batcher's staging buffers must be page-locked (the device copies them asynchronously)

    def launch(self, b: Batch) -> None:
        """Start ``b``'s forward pass (its ``model`` and ``weights`` set); deliver it when done."""
        ...

    async def aclose(self) -> None:
        """Stop the helper threads; called once no batch is in flight."""
        ...


def cpu_forward(b: Batch, engine: Engine) -> None:
    """The CPU forward pass of ``b`` by ``engine`` (over ``b.model``), on the loop's thread or a
    worker's: sets its results (fresh arrays), or its ``error`` when the pass raised (the batch
    fails, the batcher goes on). Never raises."""
    try:
        n = b.n
        entries = b.slot.entries
        if entries is None:  # a listed slot's rows were checked as they were listed
            check_rows(b)
        model = b.model
        assert model is not None and engine.model is model
        if b.weights is not None:
            model.load_state_dict(b.weights)
            engine.reload()
        if entries is not None:
            cols, vals, offsets = entries
            priors, values = engine.listed(cols, vals, offsets[:n], b.k, b.mask[:n])
        elif b.packed:  # every row packed (check_rows unpacked a mixed batch)
            assert b.slot.packed is not None
            rows = b.slot.packed[:n]
            if engine.sparse:
                priors, values = engine.packed(rows, unpack_legal(rows))
            else:
                unpack_rows(rows, b.feat[:n], b.mask[:n])
                priors, values = engine(b.feat[:n], b.mask[:n])
        else:
            priors, values = engine(b.feat[:n], b.mask[:n])
        b.set_results(priors, values)
    except BaseException as e:  # noqa: BLE001 - the batch fails, the batcher goes on
        b.error = e


class _Helpers:
    """Daemon threads taking jobs in order from one queue: ``work(job)`` runs on a thread and returns
    the job's batch, then ``done(batch)`` runs on the batch's event loop."""

    def __init__(self, name: str, work: Callable[[Any], Batch], done: Deliver) -> None:
        self.name = name
        self.work = work
        self.done = done
        self.threads: list[threading.Thread] = []
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def submit(self, job: Any, *, threads: int) -> None:
        """Queue ``job``, first starting another thread while fewer than ``threads`` run."""
        if len(self.threads) < threads:
            t = threading.Thread(target=self._run, name=f"{self.name}-{len(self.threads)}", daemon=True)
            t.start()
            self.threads.append(t)
        self.jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            b = self.work(job)
            try:
                b.fut.get_loop().call_soon_threadsafe(self.done, b)
            except RuntimeError:  # the loop is closed: nobody is left to wake
                return

    async def aclose(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            await asyncio.to_thread(t.join)
        self.threads = []


class InlineBackend:
    """Mode "inline": every forward pass on the event loop thread (module docstring). The threaded
    CPU backends build on it: its buffers, its torch thread count and, for AutoBackend, its launch.
    ``engine``: the forward engine over the batcher's model (``blobnet.net.make_engine``), set by
    the batcher once the model is in place."""

    pinned = False
    inflight: ClassVar[int] = 1  # batches in flight at most unless the batcher is told otherwise
    split_cores: ClassVar[bool] = False  # threads=None: give each worker thread its share of the cores

    def __init__(
        self,
        deliver: Deliver,
        *,
        device: torch.device,
        dtype: torch.dtype | None,
        threads: int | None,
        max_inflight: int,
    ) -> None:
        if threads is None and self.split_cores:
            # The workers' forward passes and the event loop share the cores: split them.
            threads = max(1, (os.cpu_count() or 2) // max_inflight)
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide
        self.deliver = deliver
        self.dtype = dtype
        self.threads = threads
        self.engine: Engine | None = None

    def launch(self, b: Batch) -> None:
        assert self.engine is not None
        cpu_forward(b, self.engine)
        self.deliver(b)

    async def aclose(self) -> None:
        return None


class ThreadBackend(InlineBackend):
    """Mode "thread": every forward pass on a worker thread, one worker per batch in flight."""

    # Two forward passes at once, one per worker thread, so a round larger than max_batch keeps both cores busy.
    inflight = 2
    split_cores = True

    def __init__(self, deliver: Deliver, **settings: Any) -> None:
        super().__init__(deliver, **settings)
        self.busy = 0  # batches on a worker thread now
        self._helpers = _Helpers("batcher-forward", self._work, self._done)

    def launch(self, b: Batch) -> None:
        self.busy += 1
        self._helpers.submit(b, threads=self.busy)

    def _work(self, b: Batch) -> Batch:
        assert self.engine is not None
        cpu_forward(b, self.engine)
        return b

    def _done(self, b: Batch) -> None:
        self.busy -= 1
        self.deliver(b)

    async def aclose(self) -> None:
        await self._helpers.aclose()


class AutoBackend(ThreadBackend):
    """Mode "auto": in-line, except a full batch while no other is on the worker thread (module docstring)."""

    split_cores = False  # in-line passes use every core; threads=None leaves torch's choice

    def launch(self, b: Batch) -> None:
        if b.full and not self.busy:
            super().launch(b)  # to the worker (at most one: busy is 0 or 1)
        else:
            InlineBackend.launch(self, b)


# mode -> backend on a CPU; the first is the default
CPU_BACKENDS: dict[str, type[InlineBackend]] = {"auto": AutoBackend, "inline": InlineBackend, "thread": ThreadBackend}


_UNPACK: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (bit shifts, scalar columns)


def unpack_torch(bits: torch.Tensor, scalars: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``blobnet.compact.unpack_rows`` in torch ops on the tensors' device, so that a GPU unpacks
    rows that crossed the bus packed (267 bytes a row instead of 2,686): bits (n, BIT_BYTES) uint8,
    scalars (n, N_SCALARS) float32, legal (n, LEGAL_BYTES) uint8 -> features (n, WIDTH) float32,
    legal (n, N_ACTIONS) bool."""
    n, dev = bits.shape[0], bits.device
    if dev not in _UNPACK:  # once per device, not a host-to-device copy per batch
        # a packed byte's bits, first column in the high bit; the columns the scalars go to
        _UNPACK[dev] = (torch.arange(7, -1, -1, dtype=torch.uint8, device=dev), torch.from_numpy(SCALAR_COLS).to(dev))
    shifts, scalar_cols = _UNPACK[dev]
    x = ((bits.unsqueeze(-1) >> shifts) & 1).reshape(n, -1)[:, :WIDTH].float()
    x[:, scalar_cols] = scalars
    mask = ((legal.unsqueeze(-1) >> shifts) & 1).reshape(n, -1)[:, :N_ACTIONS].bool()
    return x, mask


def device_inputs(b: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's features and legal mask on ``device``, copied without blocking from its pinned
    slot: packed and unpacked there when ``check_rows`` left every row packed, else as they are."""
    n, slot = b.n, b.slot
    if b.packed:
        assert slot.packed_t is not None
        bits, scalars, legal = (t[:n].to(device, non_blocking=True) for t in slot.packed_t)
        return unpack_torch(bits, scalars, legal)
    return slot.feat_t[:n].to(device, non_blocking=True), slot.mask_t[:n].to(device, non_blocking=True)


class CudaBackend:
    """A CUDA device: batches launched on streams from the loop thread, their events waited on by one
    helper thread (module docstring). ``threads`` is ignored: the CPU does no forward pass."""

    pinned = True
    inflight: ClassVar[int] = 2  # launch the next batch while one runs

    def __init__(
        self,
        deliver: Deliver,
        *,
        device: torch.device,
        dtype: torch.dtype | None,
        threads: int | None,
        max_inflight: int,
    ) -> None:
        self.deliver = deliver
        self.device = device
        self.dtype = dtype
        self._copy_stream = torch.cuda.Stream(device)
        self._compute_stream = torch.cuda.Stream(device)
        self._helpers = _Helpers("batcher-cuda-events", self._wait, self._finish)

    def launch(self, b: Batch) -> None:
        try:
            self._launch_cuda(b)
        except BaseException as e:  # noqa: BLE001 - a failed launch fails its batch, never the loop
            b.error = e
            self.deliver(b)

    def _launch_cuda(self, b: Batch) -> None:
        """Queue b's copies and forward pass on the device; the helper thread waits for its event."""
        n = b.n
        slot = b.slot
        check_rows(b)
        model = b.model
        assert model is not None
        cs = self._compute_stream
        if b.weights is not None:
            # Queued on the compute stream after the batches already launched, before this one.
            cs.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(cs):
                model.load_state_dict(b.weights)
        with torch.inference_mode():
            # The copy stream waits for whatever the default stream queued (weights copied in by
            # set_weights, the model's own move to the device).
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._copy_stream):
                x, m = device_inputs(b, self.device)
                copied = torch.cuda.Event()
                copied.record()
            cs.wait_event(copied)
            with torch.cuda.stream(cs):
                # Allocated on the copy stream, used on this one: keep the allocator from reusing them early.
                for t in (x, m):
                    t.record_stream(cs)
                if self.dtype is not None:
                    x = x.to(self.dtype)
                logits, values = model(x, m)
                slot.priors_out[:n].copy_(torch.softmax(logits.float(), dim=1), non_blocking=True)
                slot.values_out[:n].copy_(values.float(), non_blocking=True)
                done = torch.cuda.Event()
                done.record()
        self._helpers.submit((b, done), threads=1)

    @staticmethod
    def _wait(job: tuple[Batch, torch.cuda.Event]) -> Batch:
        """On the helper thread: until the batch's results are in the pinned output buffers."""
        b, event = job
        try:
            event.synchronize()
        except BaseException as e:  # noqa: BLE001
            b.error = e
        return b

    def _finish(self, b: Batch) -> None:
        """On the loop thread: copy the results out of the pinned buffers (the slot's, reused by a
        later batch) into the batch's own arrays, then deliver."""
        if b.error is None:
            n = b.n
            b.set_results(b.slot.priors_out[:n].numpy().copy(), b.slot.values_out[:n].numpy().copy())
        self.deliver(b)

    async def aclose(self) -> None:
        await self._helpers.aclose()
