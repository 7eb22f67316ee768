"""The socket front: the same batcher served to other processes over a Unix socket or TCP.

One ``_Connection`` per client parses its frames (servers/wire.py has the format), hands its rows
and unpacked legal masks to ``Batcher.submit_rows`` (which copies them into its staging buffers)
and writes one ``Reply`` per batch they landed in: the rows' priors (rows, n_actions) and values
as raw float32 bytes. A client on the same machine (unix:PATH) may ask for a shared-memory ring
instead (servers/shm.py): its rows arrive packed in the ring, announced by small ``Rows`` notices,
go to ``Batcher.submit_packed``, and their answers are written back into the ring, announced by
``Done``. A client that goes away with rows pending loses only its own: the batch runs and its
replies are dropped. A bad frame or notice gets an ``Error`` and closes that connection only; its
ring goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import cast

import msgspec
import numpy as np

from blobnet.cards import N_ACTIONS
from blobnet.encode import WIDTH
from servers.batcher import Batcher, RowsResult
from servers.shm import MAX_RING_ROWS, SHM_DIR, Ring, remove_stale_rings
from servers.wire import (
    DEFAULT_MAX_FRAME,
    EMPTY,
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
    legal_bytes,
    parse_address,
    tune_socket,
    unpack_legal,
)

__all__ = ["Server"]

log = logging.getLogger(__name__)


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
        self.ring: Ring | None = None  # the client's shared-memory ring, once it asked for one
        self.busy = np.zeros(0, dtype=np.bool_)  # ring slots announced and not yet answered

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
        self.drop_ring()

    def drop_ring(self) -> None:
        """Unlink and unmap the client's ring (rows of it still in the batcher are dropped). Idempotent."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None

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
        self.drop_ring()
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
        if isinstance(msg, Rows):
            self._on_rows_notice(msg)
        elif isinstance(msg, Request):
            self._on_request(msg)
        elif isinstance(msg, ShmAsk):
            self._on_shm_ask(msg)
        elif isinstance(msg, ShmAttached):
            if self.ring is None:
                self.fail("malformed notice: ShmAttached without a ring offered")
            else:
                self.ring.unlink()
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
        a = self.batcher.n_actions
        if len(req.legal) != r * legal_bytes(a) or len(req.x) != r * self.width * 4:
            self.fail(
                f"malformed request: {r} ids, {len(req.legal)} bytes of legal masks and {len(req.x)} bytes of "
                f"features (expected {r * legal_bytes(a)}: {r} masks of {a} bits packed, and "
                f"{r * self.width * 4}: {r} rows of {self.width} float32)"
            )
            return
        feats = np.frombuffer(req.x, dtype=F32).reshape(r, self.width)
        if feats.dtype != np.float32:  # a big-endian machine: the wire's floats are little-endian
            feats = feats.astype(np.float32)
        legal = unpack_legal(req.legal, r, a)
        ids = req.ids
        self.pending_rows += r
        try:
            self.batcher.submit_rows(feats, legal, lambda res: self._on_rows(ids, res))
        except Exception as e:  # the batcher is closed, or refused the rows
            self.pending_rows -= r
            self.fail(f"request refused: {e}")

    def _on_shm_ask(self, ask: ShmAsk) -> None:
        """Make the client's ring, or say why not (the client then stays on the socket)."""
        why = ""
        if self.server.kind != "unix":
            why = "shared memory is for clients on this machine (unix:PATH)"
        elif not self.batcher.packs:
            why = f"rows of width {self.width} and {self.batcher.n_actions} actions are not blobnet.encode's"
            why += f" ({WIDTH}, {N_ACTIONS}): the ring carries only those"
        elif not SHM_DIR.is_dir():
            why = f"no {SHM_DIR} here"
        elif self.ring is not None:
            why = "this connection has a ring already"
        if why:
            self._send(ShmRefused(why))
            return
        if not 1 <= ask.rows <= MAX_RING_ROWS:
            self.fail(f"malformed notice: a ring of {ask.rows} rows asked for (1 to {MAX_RING_ROWS})")
            return
        try:
            self.ring = Ring.create(ask.rows, self.batcher.n_actions, self.batcher.n_values)
        except OSError as e:
            self._send(ShmRefused(f"the ring could not be made: {e}"))
            return
        self.busy = np.zeros(ask.rows, dtype=np.bool_)
        self._send(ShmOffer(str(self.ring.path), ask.rows))

    def _on_rows_notice(self, note: Rows) -> None:
        """Packed rows note.slot .. note.slot + note.n - 1 of the ring are ready: to the batcher."""
        ring = self.ring
        if ring is None:
            self.fail("malformed notice: Rows before a ring was made (send ShmAsk first)")
            return
        slot, n = note.slot, note.n
        if n < 1 or slot < 0 or slot + n > ring.rows:
            self.fail(f"malformed notice: rows {slot} .. {slot + n - 1} of a ring of {ring.rows} rows")
            return
        busy = self.busy[slot : slot + n]
        if busy.any():
            self.fail(f"malformed notice: rows {slot} .. {slot + n - 1} overlap rows not yet answered")
            return
        busy[:] = True
        self.pending_rows += n
        try:
            self.batcher.submit_packed(ring.request[slot : slot + n], lambda res: self._on_done(slot, res))
        except Exception as e:  # the batcher is closed
            self.pending_rows -= n
            self.fail(f"request refused: {e}")

    def _on_done(self, slot: int, res: RowsResult) -> None:
        """Write the answers of rows slot + res.start .. into the ring and say so."""
        self.pending_rows -= res.count
        ring = self.ring
        if self.closed or ring is None:
            return  # the client went away
        s = slot + res.start
        e = s + res.count
        self.busy[s:e] = False
        err = [(i - res.start, m) for i, m in res.row_errors.items()]
        if res.error is not None or res.priors is None or res.values is None:
            self._send(Done(s, res.count, err, fail=repr(res.error)))
        else:
            ring.priors[s:e] = res.priors
            ring.values[s:e] = res.values
            self._send(Done(s, res.count, err))
        self._close_if_answered()

    def _on_rows(self, ids: list[int], res: RowsResult) -> None:
        self.pending_rows -= res.count
        if self.closed:
            return  # the client went away: its rows were computed with the others, nobody wants them
        s = res.start
        rep_ids = ids[s : s + res.count]
        err = [(i - s, m) for i, m in res.row_errors.items()]
        if res.error is not None or res.priors is None or res.values is None:
            self._send(Reply(rep_ids, EMPTY, EMPTY, err, fail=repr(res.error)))
        else:
            self._send(Reply(rep_ids, as_bytes(res.priors), as_bytes(res.values), err))
        self._close_if_answered()

    def _close_if_answered(self) -> None:
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
            remove_stale_rings()
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
                conn.drop_ring()
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
        if self.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.host)
