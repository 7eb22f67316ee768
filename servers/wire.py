"""The socket front's wire format, shared by the server (servers/socket.py) and its client
(clients/remote.py).

Framing: every message is a 4-byte big-endian length, then that many bytes of msgpack (msgspec),
one of the tagged structs below. A client sends many rows in one ``Request`` (DESIGN.md: one
message per request costs 50 to 90 us, 64 requests per message about 3 us each); the server
answers with one ``Reply`` per batch the rows landed in, matched by the ids the client chose.

    server -> client  Hello(width, n_actions, n_values, max_frame)     once, on connect
    client -> server  Request(ids, x: float32 (R, width), legal: uint8 (R, ceil(n_actions / 8)))
    server -> client  Reply(ids, p: float32 (rows, n_actions) priors, v: float32 (rows, n_values),
                            err: [(index in ids, message)], fail: str)
    client -> server  StatsRequest(reset)  ->  StatsReply(stats)

A local client (unix:PATH) may move its rows into shared memory instead (servers/shm.py): then only
small notices cross the socket, and a row travels packed (blobnet.compact, 267 bytes, not 2,616).

    client -> server  ShmAsk(rows)          a ring of that many rows, please
    server -> client  ShmOffer(path, rows)  created at path (a file under /dev/shm); or
                      ShmRefused(reason)    this server cannot (the client goes on over the socket)
    client -> server  ShmAttached()         mapped: the server unlinks the path, so that no crash can
                                            leave it behind
    client -> server  Rows(slot, n)         packed rows slot .. slot + n - 1 of the request ring are
                                            ready (they never run past the ring's end)
    server -> client  Done(slot, n, err, fail)  their priors and values are in the answer ring at
                                            the same slots; err and fail as in Reply, err's indices
                                            counted from slot
    server -> client  Error(message)       a malformed, truncated or oversized frame: sent, then
                                           that connection (only that one) is closed

Arrays travel as raw bytes, row-major, with no Python object per row: floats are little-endian
float32; ``legal`` is each row's (n_actions,) bool mask packed eight ids a byte, first id in the
high bit (``np.packbits(mask, axis=1)``; ``pack_legal`` and ``unpack_legal``). ``p`` holds every id's
prior, 0 at the illegal ones. A row that fails alone (NaN features, no legal id) is listed in
``err``; ``fail`` (non-empty) means the whole batch's forward pass failed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

__all__ = [
    "Hello",
    "Request",
    "Reply",
    "StatsRequest",
    "StatsReply",
    "Error",
    "ShmAsk",
    "ShmOffer",
    "ShmRefused",
    "ShmAttached",
    "Rows",
    "Done",
    "Message",
    "FrameError",
    "FrameReader",
    "encode_frame",
    "as_bytes",
    "pack_legal",
    "unpack_legal",
    "legal_bytes",
    "parse_address",
    "tune_socket",
    "DEFAULT_MAX_FRAME",
    "F32",
    "EMPTY",
]

# 64 MiB: room for 16k rows of 654 float32 features (43 MB) and their legal masks in one frame.
DEFAULT_MAX_FRAME = 64 << 20
F32 = np.dtype("<f4")  # the wire's floats
EMPTY = memoryview(b"")  # an empty bin field (a failed batch's Reply)


class Hello(msgspec.Struct, tag="hello", array_like=True, frozen=True):
    width: int  # features per row
    n_actions: int  # policy width: legal ids are 0 .. n_actions - 1
    n_values: int  # values per row
    max_frame: int  # longest frame the server accepts, in bytes after the length prefix


class Request(msgspec.Struct, tag="req", array_like=True):
    ids: list[int]  # one per row, chosen by the client, echoed in the replies
    x: memoryview  # len(ids) * width float32 features, row-major (decoded as a view, not a copy)
    legal: memoryview  # len(ids) * legal_bytes(n_actions) bytes: each row's legal mask, packed (pack_legal)


class Reply(msgspec.Struct, tag="rep", array_like=True):
    ids: list[int]  # the rows answered here, in the request's order
    p: memoryview  # float32 (len(ids), n_actions) priors, 0 at each row's illegal ids
    v: memoryview  # float32 (len(ids), n_values) values
    err: list[tuple[int, str]] = []  # (index into ids, why) for rows that failed alone
    fail: str = ""  # non-empty: the whole batch failed, every row here with it


class StatsRequest(msgspec.Struct, tag="stats", array_like=True):
    reset: bool = False  # reset the batcher's statistics after reading them


class StatsReply(msgspec.Struct, tag="stats_reply", array_like=True):
    stats: dict[str, Any]


class Error(msgspec.Struct, tag="error", array_like=True):
    message: str  # why the connection is being closed


class ShmAsk(msgspec.Struct, tag="shm_ask", array_like=True, frozen=True):
    rows: int  # ring capacity wanted, in rows


class ShmOffer(msgspec.Struct, tag="shm_offer", array_like=True, frozen=True):
    path: str  # the ring's file, to map (servers.shm.Ring.attach)
    rows: int  # its capacity in rows (the server may grant fewer than asked)


class ShmRefused(msgspec.Struct, tag="shm_refused", array_like=True, frozen=True):
    reason: str  # why this server serves this client over the socket only


class ShmAttached(msgspec.Struct, tag="shm_attached", array_like=True, frozen=True):
    pass


class Rows(msgspec.Struct, tag="rows", array_like=True, frozen=True):
    slot: int  # first ring slot of the rows
    n: int  # rows, all before the ring's end


class Done(msgspec.Struct, tag="done", array_like=True, frozen=True):
    slot: int  # first ring slot answered
    n: int  # rows answered, slot .. slot + n - 1
    err: list[tuple[int, str]] = []  # (index from slot, why) for rows that failed alone
    fail: str = ""  # non-empty: the whole batch failed, every row here with it


Message = (
    Hello | Request | Reply | StatsRequest | StatsReply | Error
    | ShmAsk | ShmOffer | ShmRefused | ShmAttached | Rows | Done
)  # fmt: skip


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
    return a.data.cast("B") if a.size else EMPTY


def legal_bytes(n_actions: int) -> int:
    """Bytes of one row's packed legal mask."""
    return (n_actions + 7) // 8


def pack_legal(mask: np.ndarray) -> memoryview:
    """A (rows, n_actions) bool mask as a flat byte view for a bin field: each row packed eight ids a
    byte (``np.packbits``, first id in the high bit), ``legal_bytes(n_actions)`` bytes a row."""
    packed = np.packbits(mask, axis=1)
    return packed.data.cast("B") if packed.size else EMPTY


def unpack_legal(data: memoryview | bytes, rows: int, n_actions: int) -> np.ndarray:
    """``pack_legal``'s bytes back as a (rows, n_actions) bool array; ValueError when the length is
    not ``rows * legal_bytes(n_actions)``. Bits past n_actions in each row's last byte are ignored."""
    if len(data) != rows * legal_bytes(n_actions):
        raise ValueError(f"{len(data)} bytes of legal masks: expected {rows * legal_bytes(n_actions)}")
    packed = np.frombuffer(data, dtype=np.uint8).reshape(rows, legal_bytes(n_actions))
    return np.unpackbits(packed, axis=1, count=n_actions).view(np.bool_)


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
