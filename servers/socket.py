"""The socket front: the same batcher served to other processes over a Unix socket or TCP.

Framing: every message is a 4-byte big-endian length, then that many bytes of msgpack (msgspec),
one of the tagged structs below. A client sends many rows in one ``Request`` (DESIGN.md: one
message per request costs 50 to 90 us, 64 requests per message about 3 us each); the server
answers with one ``Reply`` per batch the rows landed in, matched by the ids the client chose.

    server -> client  Hello(width, n_actions, n_values, max_frame)     once, on connect
    client -> server  Request(ids, x: R*width float32 bytes, legal: R lists of ids)
    server -> client  Reply(ids, p: float32 priors of each row's legal ids concatenated,
                            v: float32 (rows, n_values), err: [(index in ids, message)], fail: str)
    client -> server  StatsRequest(reset)  ->  StatsReply(stats)
    server -> client  Error(message)       a malformed, truncated or oversized frame: sent, then
                                           that connection (only that one) is closed

Floats are little-endian float32. A row that fails alone (NaN features, a bad legal id) is listed
in ``err``; ``fail`` (non-empty) means the whole batch's forward pass failed. A client that goes
away with rows pending loses only its own: the batch runs and its replies are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, cast

import msgspec
import numpy as np

from servers.batcher import Batcher, RowsResult

__all__ = [
    "Hello",
    "Request",
    "Reply",
    "StatsRequest",
    "StatsReply",
    "Error",
    "Message",
    "FrameError",
    "FrameReader",
    "encode_frame",
    "as_bytes",
    "parse_address",
    "tune_socket",
    "Server",
    "DEFAULT_MAX_FRAME",
]

log = logging.getLogger(__name__)

# 64 MiB: room for 16k rows of 654 float32 features (43 MB) and their legal ids in one frame.
DEFAULT_MAX_FRAME = 64 << 20
F32 = np.dtype("<f4")
_EMPTY = memoryview(b"")


class Hello(msgspec.Struct, tag="hello", array_like=True, frozen=True):
    width: int  # features per row
    n_actions: int  # policy width: legal ids are 0 .. n_actions - 1
    n_values: int  # values per row
    max_frame: int  # longest frame the server accepts, in bytes after the length prefix


class Request(msgspec.Struct, tag="req", array_like=True):
    ids: list[int]  # one per row, chosen by the client, echoed in the replies
    x: memoryview  # len(ids) * width float32 features, row-major (decoded as a view, not a copy)
    legal: list[list[int]]  # each row's legal action ids


class Reply(msgspec.Struct, tag="rep", array_like=True):
    ids: list[int]  # the rows answered here, in the request's order
    p: memoryview  # float32 priors of each row's legal ids, rows concatenated in order
    v: memoryview  # float32 (len(ids), n_values) values
    err: list[tuple[int, str]] = []  # (index into ids, why) for rows that failed alone
    fail: str = ""  # non-empty: the whole batch failed, every row here with it


class StatsRequest(msgspec.Struct, tag="stats", array_like=True):
    reset: bool = False  # reset the batcher's statistics after reading them


class StatsReply(msgspec.Struct, tag="stats_reply", array_like=True):
    stats: dict[str, Any]


class Error(msgspec.Struct, tag="error", array_like=True):
    message: str  # why the connection is being closed


Message = Hello | Request | Reply | StatsRequest | StatsReply | Error


class FrameError(ValueError):
    """The byte stream is not a sequence of well-formed frames (oversized, truncated, undecodable)."""


class FrameReader:
    """Splits a byte stream into frames, reading straight into its own buffer (``asyncio.BufferedProtocol``:
    ``get_buffer``/``buffer_updated``; ``feed`` for plain bytes). ``on_frame(payload)`` is called for each
    whole frame with a memoryview into the buffer, valid only during the call.

    The buffer grows to hold the frame in progress, so the kernel copies a large frame into place in
    a few reads; there is no second copy to join pieces."""

    READ_AHEAD = 1 << 16  # bytes offered to the kernel beyond the frame in progress

    def __init__(self, on_frame: Callable[[memoryview], None], max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.on_frame = on_frame
        self.max_frame = max_frame
        self._buf = bytearray(self.READ_AHEAD)
        self._start = 0  # first byte not yet consumed
        self._end = 0  # one past the last byte received
        self.stopped = False

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Room for the rest of the frame in progress (and some read-ahead) at the end of the buffer."""
        avail = self._end - self._start
        need = self.READ_AHEAD
        if avail >= 4:
            size = int.from_bytes(self._buf[self._start : self._start + 4], "big")
            if size <= self.max_frame:
                need = max(need, 4 + size - avail)
        if len(self._buf) - self._end < need:
            if len(self._buf) - avail >= need:
                # Equal-length slice assignment: moves the bytes without resizing (views may be alive).
                self._buf[:avail] = self._buf[self._start : self._end]
            else:
                grown = bytearray(max(2 * len(self._buf), avail + need))
                grown[:avail] = self._buf[self._start : self._end]
                self._buf = grown  # never resized in place: a view handed out earlier may still exist
            self._start, self._end = 0, avail
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived in the last buffer handed out; raises FrameError for an oversized frame."""
        self._end += nbytes
        buf = self._buf
        start, end = self._start, self._end
        try:
            while end - start >= 4 and not self.stopped:
                size = int.from_bytes(buf[start : start + 4], "big")
                if size > self.max_frame:
                    raise FrameError(f"frame of {size} bytes is over the limit of {self.max_frame}")
                if end - start - 4 < size:
                    break
                self.on_frame(memoryview(buf)[start + 4 : start + 4 + size])
                start += 4 + size
        finally:
            if start == end:
                start = end = 0
            self._start, self._end = start, end

    def feed(self, data: bytes) -> None:
        """Take ``data`` as if read from the stream."""
        view = memoryview(data)
        while len(view) and not self.stopped:
            room = self.get_buffer()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            del room
            self.buffer_updated(n)
            view = view[n:]

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return self._end - self._start


def as_bytes(a: np.ndarray) -> memoryview:
    """A float32 array as a flat byte view for a bin field (msgspec copies it into the frame)."""
    a = np.ascontiguousarray(a, dtype=F32)
    return a.data.cast("B") if a.size else _EMPTY


def encode_frame(encoder: msgspec.msgpack.Encoder, msg: Message) -> bytearray:
    """Length prefix + msgpack payload, in one buffer (no second copy to join them)."""
    buf = bytearray(4)
    encoder.encode_into(msg, buf, 4)
    buf[:4] = (len(buf) - 4).to_bytes(4, "big")
    return buf


SOCKET_BUFFER = 4 << 20  # bytes; Linux caps it at net.core.wmem_max / rmem_max (4 MiB here)


def tune_socket(sock: socket.socket | None) -> None:
    """Large kernel buffers (a frame of 1024 rows is 2.6 MB: with the default 208 kB it crosses in
    a dozen wake-ups of each side) and, on TCP, no Nagle delay."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def parse_address(address: str) -> tuple[str, str, int]:
    """Split an address: unix:PATH -> ("unix", PATH, 0); tcp:HOST:PORT -> ("tcp", HOST, PORT); tcp::PORT is loopback."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, 0
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if port.isdigit():
            return "tcp", host, int(port)
    raise ValueError(f"address {address!r}: use unix:PATH or tcp:HOST:PORT")


class _Connection(asyncio.BufferedProtocol):
    """One client: parses its frames, submits its rows, writes its replies."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.batcher = server.batcher
        self.width = server.batcher.width
        self.encoder = msgspec.msgpack.Encoder()
        self.reader = FrameReader(self._on_frame, server.max_frame)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending_rows = 0  # rows submitted and not yet answered
        self.eof = False  # the client half-closed its side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.server.connections.add(self)
        tune_socket(transport.get_extra_info("socket"))
        b = self.batcher
        self._send(Hello(b.width, b.n_actions, b.n_values, self.server.max_frame))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        try:
            self.reader.buffer_updated(nbytes)
        except FrameError as e:
            self.fail(str(e))

    def eof_received(self) -> bool:
        if self.reader.pending and not self.closed:
            self.fail(f"truncated frame: the stream ended {self.reader.pending} bytes into a frame")
            return False
        # A half-closed client may still be reading: keep the connection until its rows are answered.
        self.eof = True
        return self.pending_rows > 0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reader.stopped = True
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop taking its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def fail(self, message: str) -> None:
        """Send Error(message) and close this connection; rows still in the batcher are dropped."""
        if self.closed:
            return
        log.info("closing a connection: %s", message)
        self._send(Error(message))
        self.closed = True
        self.reader.stopped = True
        if self.transport is not None:
            self.transport.close()  # after the buffered error frame is written

    def _send(self, msg: Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(self.encoder, msg))

    def _on_frame(self, payload: memoryview) -> None:
        try:
            msg = self.server.decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.fail(f"malformed frame: {e}")
            return
        if isinstance(msg, Request):
            self._on_request(msg)
        elif isinstance(msg, StatsRequest):
            stats = self.batcher.stats()
            if msg.reset:
                self.batcher.reset_stats()
            self._send(StatsReply(stats))
        else:
            self.fail(f"unexpected message {type(msg).__name__} from a client")

    def _on_request(self, req: Request) -> None:
        r = len(req.ids)
        if r == 0:
            self.fail("malformed request: no rows")
            return
        if len(req.legal) != r or len(req.x) != r * self.width * 4:
            self.fail(
                f"malformed request: {r} ids, {len(req.legal)} legal lists and {len(req.x)} bytes of features "
                f"(expected {r * self.width * 4}: {r} rows of {self.width} float32)"
            )
            return
        feats = np.frombuffer(req.x, dtype=F32).reshape(r, self.width)
        ids = req.ids
        self.pending_rows += r
        try:
            self.batcher.submit_rows(feats, req.legal, lambda res: self._on_rows(ids, res))
        except Exception as e:  # the batcher is closed, or refused the rows
            self.pending_rows -= r
            self.fail(f"request refused: {e}")

    def _on_rows(self, ids: list[int], res: RowsResult) -> None:
        self.pending_rows -= res.count
        if self.closed:
            return  # the client went away: its rows were computed with the others, nobody wants them
        s = res.start
        rep_ids = ids[s : s + res.count]
        err = [(i - s, m) for i, m in res.row_errors.items()]
        if res.error is not None or res.probs is None or res.values is None:
            self._send(Reply(rep_ids, _EMPTY, _EMPTY, err, fail=repr(res.error)))
        else:
            self._send(Reply(rep_ids, as_bytes(res.probs), as_bytes(res.values), err))
        if self.eof and self.pending_rows == 0 and self.transport is not None:
            self.transport.close()  # a half-closed client has every answer it asked for


def _remove_stale_socket(path: str) -> None:
    """Unlink a Unix socket left by a server that died; refuse one that a live server still answers on."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"unix:{path} is in use by a running server")


class Server:
    """Serves ``batcher`` on ``address`` ("unix:PATH" or "tcp:HOST:PORT"; port 0 picks a free one).

    ``await start()``, then ``await aclose()`` (closes the listener and every connection; the batcher
    stays the caller's to close)."""

    def __init__(self, batcher: Batcher, address: str, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.batcher = batcher
        self.kind, self.host, self.port = parse_address(address)
        self.max_frame = max_frame
        self.decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)  # type: ignore[arg-type]
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.address = address  # the address actually bound, once started

    async def start(self) -> str:
        """Bind and listen; returns the bound address (with the real port for tcp port 0)."""
        loop = asyncio.get_running_loop()
        if self.kind == "unix":
            path = self.host
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    _remove_stale_socket(path)
            self._server = await loop.create_unix_server(lambda: _Connection(self), path)
            self.address = f"unix:{path}"
        else:
            self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
            sock = self._server.sockets[0]
            host, port = sock.getsockname()[:2]
            self.address = f"tcp:{host}:{port}"
        return self.address

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
        if self.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.host)
