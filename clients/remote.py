"""The Evaluator protocol over a socket: a self-play process that cannot tell it from a ``Batcher``.

``RemoteEvaluator`` batches the way the batcher does: every row submitted in one event-loop iteration
(``evaluate_many``, a wave at once) goes into one frame (the first submit schedules the send with
``call_soon``; a frame that reaches ``max_rows`` is sent at once), and every waiter of a frame
awaits one shared future (``servers.waiting.wait``). The server (``python -m servers``;
servers/wire.py has the wire format) answers with one reply per batch the rows landed in, matched by
id. Rows, masks and answers stay arrays the whole way: the rows and masks are copied into staging
arrays at submit and leave as raw bytes (the masks packed eight ids a byte), and each reply's
priors (rows, n_actions) and values are copied into the frame's own result arrays, of which each
request gets its slices.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import msgspec
import numpy as np

from blobnet.evaluator import EvaluationError, EvaluatorClosed, Priors, check_request
from servers.waiting import Shared, wait
from servers.wire import (
    DEFAULT_MAX_FRAME,
    F32,
    Error,
    FrameError,
    FrameReader,
    Hello,
    Message,
    Reply,
    Request,
    StatsReply,
    StatsRequest,
    as_bytes,
    encode_frame,
    pack_legal,
    parse_address,
    tune_socket,
)

__all__ = ["RemoteEvaluator"]


class _Frame(Shared):
    """Rows sent (or to be sent) in one Request, and their answers once ``done``."""

    __slots__ = ("id0", "n", "priors", "values", "errors", "left", "sent", "error")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        super().__init__(fut)
        self.id0 = 0  # id of row 0; row i has id id0 + i
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


class RemoteEvaluator:
    """Evaluator client of ``python -m servers``. Make one with ``await RemoteEvaluator.connect(address)``.

    width, n_actions, n_values: the server's, from its greeting. max_rows: rows per frame at most."""

    width: int
    n_actions: int
    n_values: int
    model_version = 0  # a server keeps its model for life (blobnet.evaluator)

    def __init__(self, *, max_rows: int = 1024, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows}: must be at least 1")
        self.max_rows = max_rows
        self._reader = FrameReader(self._on_frame, max_frame)
        self._decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)  # type: ignore[arg-type]
        self._encoder = msgspec.msgpack.Encoder()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._hello: asyncio.Future[Hello] = self._loop.create_future()
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._open: _Frame | None = None
        self._inflight: dict[int, _Frame] = {}  # id0 -> frame sent and not fully answered
        self._stats: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._next_id = 0
        self._reason: str | None = None  # set once the connection is unusable, and why
        self._x = np.zeros((0, 0), dtype=F32)  # staging rows of the open frame
        self._m = np.zeros((0, 0), dtype=np.bool_)  # staging legal masks of the open frame

    @classmethod
    async def connect(
        cls, address: str, *, max_rows: int = 1024, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> RemoteEvaluator:
        """Connect to "unix:PATH" or "tcp:HOST:PORT" and wait for the server's greeting."""
        kind, host, port = parse_address(address)
        self = cls(max_rows=max_rows, max_frame=max_frame)
        loop = self._loop
        async with asyncio.timeout(timeout):
            if kind == "unix":
                transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), host)
            else:
                transport, _ = await loop.create_connection(lambda: _Protocol(self), host, port)
            tune_socket(transport.get_extra_info("socket"))
            try:
                hello = await self._hello
            except BaseException:
                await self.aclose()
                raise
        self.width, self.n_actions, self.n_values = hello.width, hello.n_actions, hello.n_values
        self._x = np.zeros((max_rows, self.width), dtype=F32)
        self._m = np.zeros((max_rows, self.n_actions), dtype=np.bool_)
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
        segments = []
        start = 0
        while start < k:
            f = self._open
            if f is None:
                f = self._new_frame()
            i0 = f.n
            take = min(k - start, self.max_rows - i0)
            if take == k:  # the whole request: no slicing of the caller's arrays
                self._x[i0 : i0 + take] = features
                self._m[i0 : i0 + take] = legal
            else:
                self._x[i0 : i0 + take] = features[start : start + take]
                self._m[i0 : i0 + take] = legal[start : start + take]
            f.n = i0 + take
            segments.append((f, start, i0, take))
            start += take
            if f.n == self.max_rows:
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
        f.id0 = self._next_id
        self._next_id += n
        f.left = n
        try:
            # msgspec copies the rows and masks into the frame: the staging arrays are free for the next frame at once.
            self._write(Request(list(range(f.id0, f.id0 + n)), as_bytes(self._x[:n]), pack_legal(self._m[:n])))
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
        if isinstance(msg, Reply):
            self._on_reply(msg)
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
        first = rep.ids[0]
        f = self._inflight.get(first)
        if f is None:  # a later part of a frame the server split over two batches
            f = next((g for g in self._inflight.values() if g.id0 <= first < g.id0 + g.n), None)
        if f is None or first + c > f.id0 + f.n or rep.ids[-1] != first + c - 1:
            self._abort(f"reply for unknown or non-contiguous ids {rep.ids[:3]}...")
            return
        s = first - f.id0
        if rep.fail:
            failed = (EvaluationError, f"the server's forward pass failed for this request's batch: {rep.fail}")
            for pos in range(s, s + c):
                f.errors.setdefault(pos, failed)
        else:
            a, nv = self.n_actions, self.n_values
            if len(rep.p) != 4 * c * a or len(rep.v) != 4 * c * nv:
                self._abort(f"reply of {len(rep.p)} + {len(rep.v)} bytes for {c} rows of {a} priors and {nv} values")
                return
            assert f.priors is not None and f.values is not None
            # Two copies per reply, none per row: slices of the frame's arrays are the answers.
            f.priors[s : s + c] = np.frombuffer(rep.p, dtype=F32).reshape(c, a)
            f.values[s : s + c] = np.frombuffer(rep.v, dtype=F32).reshape(c, nv)
            for j, msg in rep.err:
                if 0 <= j < c:
                    f.errors.setdefault(s + j, (ValueError, msg))
        f.left -= c
        if f.left <= 0:
            del self._inflight[f.id0]
            f.finish()

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
