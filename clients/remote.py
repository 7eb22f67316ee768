"""The Evaluator protocol over a socket: a self-play process that cannot tell it from a ``Batcher``.

``RemoteEvaluator`` batches the way the batcher does: every row submitted in one event-loop iteration
(``evaluate_many``, a wave at once) goes into one frame (the first submit schedules the send with
``call_soon``; a frame that reaches ``max_rows`` is sent at once), and every waiter of a frame
awaits one shared future (``servers.waiting.wait``). One exception to waiting for the iteration's
end: while the server has none of this client's rows to compute, a frame leaves as soon as it
holds ``eager_rows`` rows, so the server computes it while the rest of the iteration's rows are
staged, and those requesters wake (and stage their next rows) while the server computes the rest:
with few requesters, client and server then work at the same time instead of taking turns. The
server (``python -m servers``; servers/wire.py has the wire format) answers with one reply per
batch the rows landed in. Each reply's priors (rows, n_actions) and values are copied into the
frame's own result arrays, of which each request gets its slices.

Where the rows travel is chosen once, at ``connect``, one staging class each:
- ``_RingStage`` (a unix:PATH server, the default there): rows are packed (blobnet.compact, 267
  bytes a row with its mask) straight into a shared-memory ring (servers/shm.py) at submit; a frame
  is a run of ring slots, announced by a ``Rows`` notice; the answers come back in the ring's
  answer slots, announced by ``Done``. A frame never runs past the ring's end, and a request that
  finds the ring full sends what it has and waits for answers to free slots (copying the rest of
  its rows first: the caller may reuse its arrays once the call has started).
- ``_SocketStage`` (tcp:HOST:PORT, a server that refuses a ring, or ``shm=False``): rows and masks
  are copied into staging arrays and leave in the frame itself as raw bytes (the masks packed).
bench/batcher_speed.py measures both against the in-process batcher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import msgspec
import numpy as np

from blobnet.compact import pack_rows
from blobnet.evaluator import EvaluationError, EvaluatorClosed, Priors, check_request
from servers.shm import Ring
from servers.waiting import Shared, wait
from servers.wire import (
    DEFAULT_MAX_FRAME,
    F32,
    Done,
    Error,
    FrameError,
    FrameReader,
    Hello,
    Message,
    Reply,
    Request,
    Rows,
    ShmAsk,
    ShmAttached,
    ShmOffer,
    ShmRefused,
    StatsReply,
    StatsRequest,
    as_bytes,
    encode_frame,
    pack_legal,
    parse_address,
    tune_socket,
)

__all__ = ["RemoteEvaluator", "RING_ROWS", "EAGER_ROWS"]

RING_ROWS = 65536  # a client's shared-memory ring, slots: the rows of 2,700 searches' waves of 24 in flight
EAGER_ROWS = 128  # a frame leaves at this size when the server has nothing of ours (module docstring)


class _Frame(Shared):
    """Rows sent (or to be sent) in one Request, and their answers once ``done``."""

    __slots__ = ("id0", "n", "priors", "values", "errors", "left", "sent", "error")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        super().__init__(fut)
        self.id0 = 0  # id of row 0 (over a ring: its slot); row i has id id0 + i
        self.n = 0
        self.priors: np.ndarray | None = None  # (n, n_actions) float32 once sent: this frame's own answers
        self.values: np.ndarray | None = None  # (n, n_values) float32
        self.errors: dict[int, tuple[type[Exception], str]] = {}  # row -> (exception class, message)
        self.left = 0  # rows not yet answered
        self.sent = False
        self.error: BaseException | None = None  # the whole frame failed (connection lost, closed)


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, owner: RemoteEvaluator) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.owner._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.owner._reader.buffer_updated(nbytes)
        except FrameError as e:
            self.owner._abort(f"bad frame from the server: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class _SocketStage:
    """Rows staged in arrays here and sent inside the frame (module docstring)."""

    def __init__(self, owner: RemoteEvaluator) -> None:
        self.max_rows = owner.max_rows
        self.x = np.zeros((owner.max_rows, owner.width), dtype=F32)  # the open frame's rows
        self.m = np.zeros((owner.max_rows, owner.n_actions), dtype=np.bool_)  # and legal masks
        self.next_id = 0

    def room(self, f: _Frame | None) -> int:
        """Rows that ``f`` (None: a new frame) can still take."""
        return self.max_rows - (f.n if f is not None else 0)

    def begin(self, f: _Frame) -> None:
        return None

    def abandon(self, f: _Frame) -> None:
        return None

    def put(self, f: _Frame, features: np.ndarray, legal: np.ndarray, first: int) -> None:
        """Stage rows at the end of ``f`` (the request's rows first ..)."""
        i0 = f.n
        self.x[i0 : i0 + len(features)] = features
        self.m[i0 : i0 + len(features)] = legal

    def notice(self, f: _Frame) -> Message:
        f.id0 = self.next_id
        self.next_id += f.n
        n = f.n
        # msgspec copies the rows and masks into the frame: the staging arrays are free for the next frame at once.
        return Request(list(range(f.id0, f.id0 + n)), as_bytes(self.x[:n]), pack_legal(self.m[:n]))

    def release(self, f: _Frame) -> None:
        return None

    def close(self) -> None:
        return None


class _RingStage:
    """Rows packed into a shared-memory ring, announced by notices (module docstring). Slots are
    handed out in order from ``head``; ``used`` of them, ending at ``head``, belong to frames not
    yet answered (``frames``, in slot order), and are freed from the oldest as answers arrive."""

    def __init__(self, owner: RemoteEvaluator, ring: Ring) -> None:
        self.ring = ring
        self.max_rows = min(owner.max_rows, ring.rows)
        self.head = 0  # next slot to hand out
        self.used = 0  # slots of frames not yet released
        self.frames: deque[_Frame] = deque()  # frames holding slots, oldest first
        self.space: asyncio.Future[None] | None = None  # set when slots are freed

    def room(self, f: _Frame | None) -> int:
        """Rows that ``f`` (None: a new frame) can still take: up to max_rows, within the free slots
        that follow it without crossing the ring's end."""
        cap = self.ring.rows
        if self.used == 0:
            self.head = 0  # an empty ring (no frame open either): start again at slot 0
            return min(cap, self.max_rows)
        if self.used == cap:
            return 0
        head = self.head % cap
        if f is not None and head == 0:
            return 0  # f reached the ring's end: the next frame starts at slot 0
        tail = (head - self.used) % cap  # the oldest slot in use (used is 1 .. cap - 1 here)
        free = cap - head if tail < head else tail - head
        return min(free, self.max_rows - (f.n if f is not None else 0))

    def begin(self, f: _Frame) -> None:
        self.head %= self.ring.rows
        f.id0 = self.head
        self.frames.append(f)

    def abandon(self, f: _Frame) -> None:
        """Forget ``f``, the newest frame, which holds no rows."""
        assert self.frames and self.frames[-1] is f and f.n == 0
        self.frames.pop()

    def put(self, f: _Frame, features: np.ndarray, legal: np.ndarray, first: int) -> None:
        """Pack rows into the slots after ``f``'s; ValueError naming the request's row (``first`` is
        the request's index of ``features[0]``) that cannot travel packed."""
        k = len(features)
        pack_rows(features, legal, self.ring.request, f.id0 + f.n, first=first)
        self.head += k
        self.used += k

    def notice(self, f: _Frame) -> Message:
        return Rows(f.id0, f.n)

    def release(self, f: _Frame) -> None:
        """``f`` is answered: free the slots of the oldest frames that are, and wake who waits for room."""
        frames = self.frames
        while frames and frames[0].done:
            self.used -= frames.popleft().n
        if self.space is not None and not self.space.done():
            self.space.set_result(None)
        self.space = None

    async def room_freed(self) -> None:
        if self.space is None:
            self.space = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.space)

    def close(self) -> None:
        if self.space is not None and not self.space.done():
            self.space.set_result(None)
        self.ring.close()


class RemoteEvaluator:
    """Evaluator client of ``python -m servers``. Make one with ``await RemoteEvaluator.connect(address)``.

    width, n_actions, n_values: the server's, from its greeting. max_rows: rows per frame at most;
    eager_rows: the size at which a frame leaves early while the server has none of ours (module docstring).
    transport: "shm" or "socket", where the rows travel (module docstring); ring_rows: the ring's
    slots (0 on the socket)."""

    width: int
    n_actions: int
    n_values: int
    model_version = 0  # a server keeps its model for life (blobnet.evaluator)

    def __init__(
        self, *, max_rows: int = 1024, eager_rows: int = EAGER_ROWS, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows}: must be at least 1")
        if eager_rows < 1:
            raise ValueError(f"eager_rows={eager_rows}: must be at least 1")
        self.max_rows = max_rows
        self.eager_rows = eager_rows
        self._reader = FrameReader(self._on_frame, max_frame)
        self._decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)  # type: ignore[arg-type]
        self._encoder = msgspec.msgpack.Encoder()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._hello: asyncio.Future[Hello] = self._loop.create_future()
        self._shm: asyncio.Future[ShmOffer | ShmRefused] | None = None  # the answer to ShmAsk, while awaited
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._open: _Frame | None = None
        self._inflight: dict[int, _Frame] = {}  # id0 -> frame sent and not fully answered
        self._stats: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._reason: str | None = None  # set once the connection is unusable, and why
        self._stage: _SocketStage | _RingStage | None = None
        self.transport = "socket"
        self.ring_rows = 0

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        max_rows: int = 1024,
        eager_rows: int = EAGER_ROWS,
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        shm: bool | None = None,
        ring_rows: int = RING_ROWS,
    ) -> RemoteEvaluator:
        """Connect to "unix:PATH" or "tcp:HOST:PORT" and wait for the server's greeting. shm: rows
        through a shared-memory ring of ``ring_rows`` slots (579 bytes each, memory taken as the
        slots are first used; the default holds the rows of 2,700 searches' waves of 24 in flight,
        and a request that finds the ring full waits for room): None asks for
        one over unix:PATH and stays on the socket if the server refuses; True insists (EvaluatorClosed
        saying why when refused); False keeps the socket."""
        kind, host, port = parse_address(address)
        if shm and kind != "unix":
            raise ValueError(f"shm=True needs a unix:PATH server, not {address!r}")
        self = cls(max_rows=max_rows, eager_rows=eager_rows, max_frame=max_frame)
        loop = self._loop
        async with asyncio.timeout(timeout):
            if kind == "unix":
                transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), host)
            else:
                transport, _ = await loop.create_connection(lambda: _Protocol(self), host, port)
            tune_socket(transport.get_extra_info("socket"))
            try:
                hello = await self._hello
                self.width, self.n_actions, self.n_values = hello.width, hello.n_actions, hello.n_values
                if kind == "unix" and shm is not False:
                    self._shm = loop.create_future()
                    self._write(ShmAsk(ring_rows))
                    answer = await self._shm
                    if isinstance(answer, ShmOffer):
                        ring = Ring.attach(answer.path, answer.rows, self.n_actions, self.n_values)
                        self._write(ShmAttached())
                        self._stage = _RingStage(self, ring)
                        self.transport, self.ring_rows = "shm", answer.rows
                    elif shm:
                        raise EvaluatorClosed(f"the server serves no shared memory here: {answer.reason}")
            except BaseException:
                await self.aclose()
                raise
        if self._stage is None:
            self._stage = _SocketStage(self)
        return self

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        """The evaluator protocol (``blobnet.evaluator.Evaluator``, as ``servers.Batcher.evaluate_many``):
        features (k, width) float32 and legal (k, n_actions) bool, copied before the first await ->
        (priors (k, n_actions), values (k, n_values)) float32, slices of the frame's own answers
        (concatenated when the request spans frames). ValueError for arrays of the wrong shape or
        dtype or a bad row (NaN features, no legal id: the whole request fails), EvaluationError when
        the server's forward pass failed, EvaluatorClosed once the connection is closed or lost."""
        k = check_request(features, legal, self.width, self.n_actions)
        if k == 0:
            return np.zeros((0, self.n_actions), np.float32), np.zeros((0, self.n_values), np.float32)
        stage = self._stage
        assert stage is not None
        segments = []
        start = 0
        off = 0  # rows of the request before ``features[0]`` (once the rest is copied)
        copied = False
        while start < k:
            f = self._open
            room = stage.room(f)
            if room == 0:
                if f is not None and f.n:
                    self._send(f)  # it cannot grow: let it go, and take a new frame
                    continue
                assert isinstance(stage, _RingStage)  # a socket frame always has room
                if not copied:  # the caller may reuse its arrays once this call awaits
                    features, legal = features[start:].copy(), legal[start:].copy()
                    off, k, start, copied = start, k - start, 0, True
                await stage.room_freed()
                self._check_open()
                continue
            if f is None:
                f = self._new_frame()
            i0 = f.n
            take = min(k - start, room)
            try:
                if take == k:  # the whole request: no slicing of the caller's arrays
                    stage.put(f, features, legal, off)
                else:
                    stage.put(f, features[start : start + take], legal[start : start + take], off + start)
            except ValueError:  # a row that cannot travel: the request fails, rows staged before it go on
                if f.n == 0:  # nothing in the frame: it goes, its slots stay free
                    self._open = None
                    f.sent = True
                    stage.abandon(f)
                raise
            f.n = i0 + take
            segments.append((f, off + start, i0, take))
            start += take
            if f.n == self.max_rows or (f.n >= self.eager_rows and not self._inflight):
                self._send(f)
        priors: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for f, start, i0, take in segments:
            if not f.done:
                await wait(f)
            if f.error is not None:
                raise EvaluatorClosed(str(f.error))
            if f.errors:
                bad = [(i, f.errors[i]) for i in range(i0, i0 + take) if i in f.errors]
                if bad:
                    cls = EvaluationError if any(c is EvaluationError for _, (c, _) in bad) else ValueError
                    raise cls("; ".join(f"row {i - i0 + start}: {m}" for i, (_, m) in bad))
            assert f.priors is not None and f.values is not None
            if len(segments) == 1:
                return f.priors[i0 : i0 + take], f.values[i0 : i0 + take]
            priors.append(f.priors[i0 : i0 + take])
            values.append(f.values[i0 : i0 + take])
        return np.concatenate(priors), np.concatenate(values)

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        """The server batcher's statistics (``Batcher.stats``); reset them after reading when ``reset``."""
        self._check_open()
        self._write(StatsRequest(reset))
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._stats.append(fut)  # replies come back in the order of the requests
        return await fut

    async def aclose(self) -> None:
        """Fail what is pending with EvaluatorClosed and close the connection. Idempotent."""
        if self._reason is None:
            self._fail_all("the remote evaluator is closed")
        if self._transport is not None:
            self._transport.close()
            await asyncio.shield(self._closed_fut)

    def _check_open(self) -> None:
        if self._reason is not None:
            raise EvaluatorClosed(self._reason)

    def _new_frame(self) -> _Frame:
        self._check_open()
        f = _Frame(self._loop.create_future())
        assert self._stage is not None
        self._stage.begin(f)
        self._open = f
        self._loop.call_soon(self._send, f)
        return f

    def _send(self, f: _Frame) -> None:
        """Send ``f`` (once): at its call_soon, or when it reaches max_rows."""
        if self._open is f:
            self._open = None
        if f.sent or f.done:
            return
        f.sent = True
        n = f.n
        if n == 0:
            f.finish()
            return
        f.left = n
        assert self._stage is not None
        try:
            self._write(self._stage.notice(f))
        except EvaluatorClosed as e:  # the connection went away before this frame could leave
            f.error = e
            f.finish()
            return
        f.priors = np.empty((n, self.n_actions), dtype=np.float32)
        f.values = np.empty((n, self.n_values), dtype=np.float32)
        self._inflight[f.id0] = f

    def _write(self, msg: Message) -> None:
        if self._transport is None or self._transport.is_closing():
            raise EvaluatorClosed(self._reason or "the connection is closed")
        self._transport.write(encode_frame(self._encoder, msg))

    def _on_frame(self, payload: memoryview) -> None:
        try:
            msg = self._decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._abort(f"malformed frame from the server: {e}")
            return
        if isinstance(msg, Done):
            self._on_done(msg)
        elif isinstance(msg, Reply):
            self._on_reply(msg)
        elif isinstance(msg, (ShmOffer, ShmRefused)) and self._shm is not None and not self._shm.done():
            self._shm.set_result(msg)
        elif isinstance(msg, StatsReply):
            if self._stats:
                fut = self._stats.popleft()
                if not fut.done():
                    fut.set_result(msg.stats)
        elif isinstance(msg, Hello):
            if not self._hello.done():
                self._hello.set_result(msg)
        elif isinstance(msg, Error):
            self._abort(f"the server closed the connection: {msg.message}")
        else:
            self._abort(f"unexpected {type(msg).__name__} from the server")

    def _on_reply(self, rep: Reply) -> None:
        c = len(rep.ids)
        if c == 0:
            return
        if rep.ids[-1] != rep.ids[0] + c - 1:
            self._abort(f"reply for non-contiguous ids {rep.ids[:3]}...")
            return
        a, nv = self.n_actions, self.n_values
        if not rep.fail and (len(rep.p) != 4 * c * a or len(rep.v) != 4 * c * nv):
            self._abort(f"reply of {len(rep.p)} + {len(rep.v)} bytes for {c} rows of {a} priors and {nv} values")
            return
        p = np.frombuffer(rep.p, dtype=F32).reshape(c, a) if not rep.fail else None
        v = np.frombuffer(rep.v, dtype=F32).reshape(c, nv) if not rep.fail else None
        self._answered(rep.ids[0], c, p, v, rep.err, rep.fail)

    def _on_done(self, done: Done) -> None:
        stage = self._stage
        if not isinstance(stage, _RingStage) or done.n < 1 or not 0 <= done.slot <= stage.ring.rows - done.n:
            self._abort(f"notice Done({done.slot}, {done.n}) for no rows of this client's ring")
            return
        s, e = done.slot, done.slot + done.n
        self._answered(s, done.n, stage.ring.priors[s:e], stage.ring.values[s:e], done.err, done.fail)

    def _answered(
        self, first: int, c: int, p: np.ndarray | None, v: np.ndarray | None, err: list[tuple[int, str]], fail: str
    ) -> None:
        """Rows with ids first .. first + c - 1 are answered: priors ``p`` (c, n_actions) and values
        ``v`` (c, n_values), copied into their frame's arrays (None and ``fail``: their batch failed);
        ``err``: (index from first, why) of rows that failed alone."""
        f = self._inflight.get(first)
        if f is None:  # a later part of a frame the server split over two batches
            f = next((g for g in self._inflight.values() if g.id0 <= first < g.id0 + g.n), None)
        if f is None or first + c > f.id0 + f.n:
            self._abort(f"answers for unknown rows {first} .. {first + c - 1}")
            return
        s = first - f.id0
        if fail or p is None or v is None:
            failed = (EvaluationError, f"the server's forward pass failed for this request's batch: {fail}")
            for pos in range(s, s + c):
                f.errors.setdefault(pos, failed)
        else:
            assert f.priors is not None and f.values is not None
            # Two copies per answer, none per row: slices of the frame's arrays are the answers.
            f.priors[s : s + c] = p
            f.values[s : s + c] = v
            for j, msg in err:
                if 0 <= j < c:
                    f.errors.setdefault(s + j, (ValueError, msg))
        f.left -= c
        if f.left <= 0:
            del self._inflight[f.id0]
            f.finish()
            assert self._stage is not None
            self._stage.release(f)

    def _fail_all(self, reason: str) -> None:
        """Mark the connection unusable and fail every pending waiter with EvaluatorClosed(reason)."""
        if self._reason is None:
            self._reason = reason
        err = EvaluatorClosed(self._reason)
        frames = list(self._inflight.values())
        self._inflight.clear()
        if self._open is not None:
            frames.append(self._open)
            self._open = None
        for f in frames:
            f.error = err
            f.finish()
        while self._stats:
            fut = self._stats.popleft()
            if not fut.done():
                fut.set_exception(EvaluatorClosed(self._reason))
        if not self._hello.done():
            self._hello.set_exception(EvaluatorClosed(self._reason))
        if self._shm is not None and not self._shm.done():
            self._shm.set_exception(EvaluatorClosed(self._reason))
        if self._stage is not None:
            self._stage.close()

    def _abort(self, reason: str) -> None:
        self._fail_all(reason)
        self._reader.stopped = True
        if self._transport is not None:
            self._transport.close()

    def _lost(self, exc: Exception | None) -> None:
        self._fail_all(f"the connection to the server was lost{f': {exc}' if exc else ''}")
        self._reader.stopped = True
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
