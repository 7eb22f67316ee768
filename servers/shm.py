"""A shared-memory ring of packed rows and their answers: one per local client of the socket front.

The server creates a ``Ring`` for each client that asks (servers/wire.py: ``ShmAsk``), the client
maps it (``Ring.attach``) and says so, and the server unlinks its name at once: from then on the
memory belongs to the two mappings and goes with the last of them, so neither a crash nor a kill
of either side can leave it behind. (Only a server killed in the moment between creating a ring and
the client's ``ShmAttached`` leaves a file, ``/dev/shm/blobnet-PID-*``; the next server started on
this machine removes those of dead processes.)

The ring is one file of ``rows`` slots, five arrays laid end to end (each 64-byte aligned):

    bits     (rows, BIT_BYTES)  uint8     the request rows, packed (blobnet.compact)
    scalars  (rows, N_SCALARS)  float32
    legal    (rows, LEGAL_BYTES) uint8
    priors   (rows, n_actions)  float32   the answers, written by the server in the same slots
    values   (rows, n_values)   float32

The client writes rows into free slots and sends ``Rows(slot, n)``; the server reads them (the
batcher copies them, still packed, into its staging buffers), writes each row's answer into the same slot of
``priors`` and ``values`` and sends ``Done(slot, n)``; the client copies the answers out and the
slots are free again. A slot is written by one side at a time, and the notices on the socket order
the hand-overs, so no lock is needed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from pathlib import Path

import numpy as np

from blobnet.compact import BIT_BYTES, LEGAL_BYTES, N_SCALARS, PackedRows

__all__ = ["Ring", "SHM_DIR", "MAX_RING_ROWS", "remove_stale_rings"]

SHM_DIR = Path("/dev/shm")  # memory-backed files (Linux); without it, clients stay on the socket
MAX_RING_ROWS = 1 << 20  # slots a client may ask for at most: 640 MB of ring
_PREFIX = "blobnet-"


def _align(n: int) -> int:
    return (n + 63) & ~63


class Ring:
    """A mapped ring of ``rows`` slots (module docstring). ``create`` makes the file (the server),
    ``attach`` maps an existing one (the client); ``close`` unmaps and, for the creator, unlinks."""

    def __init__(self, path: Path, rows: int, n_actions: int, n_values: int, *, create: bool) -> None:
        if not 1 <= rows <= MAX_RING_ROWS:
            raise ValueError(f"a ring of {rows} rows: use 1 to {MAX_RING_ROWS}")
        self.path = path
        self.rows = rows
        sizes = (rows * BIT_BYTES, rows * N_SCALARS * 4, rows * LEGAL_BYTES, rows * n_actions * 4, rows * n_values * 4)
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + _align(s))
        self.nbytes = offsets[-1]
        self._owner = create
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, self.nbytes)
            elif os.fstat(fd).st_size != self.nbytes:
                raise ValueError(
                    f"ring {path} holds {os.fstat(fd).st_size} bytes: {self.nbytes} expected for {rows} rows"
                )
            self._mm: mmap.mmap | None = mmap.mmap(fd, self.nbytes)
        except BaseException:
            if create:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise
        finally:
            os.close(fd)
        buf = np.frombuffer(self._mm, dtype=np.uint8)

        def part(i: int, dtype: type, width: int) -> np.ndarray:
            return buf[offsets[i] : offsets[i] + sizes[i]].view(dtype).reshape(rows, width)

        self.request = PackedRows(
            part(0, np.uint8, BIT_BYTES), part(1, np.float32, N_SCALARS), part(2, np.uint8, LEGAL_BYTES)
        )
        self.priors = part(3, np.float32, n_actions)  # (rows, n_actions)
        self.values = part(4, np.float32, n_values)  # (rows, n_values)

    @classmethod
    def create(cls, rows: int, n_actions: int, n_values: int) -> Ring:
        """A fresh ring under ``SHM_DIR``, named after this process and a random token."""
        path = SHM_DIR / f"{_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        return cls(path, rows, n_actions, n_values, create=True)

    @classmethod
    def attach(cls, path: str, rows: int, n_actions: int, n_values: int) -> Ring:
        """Map the ring another process created at ``path``; ValueError when it is not one (a path
        outside ``SHM_DIR``, or a size that does not fit ``rows``)."""
        p = Path(path)
        if p.parent != SHM_DIR or not p.name.startswith(_PREFIX):
            raise ValueError(f"ring path {path!r}: expected {SHM_DIR}/{_PREFIX}...")
        return cls(p, rows, n_actions, n_values, create=False)

    def unlink(self) -> None:
        """Remove the ring's name (the creator's; the mappings stay valid). Idempotent."""
        if self._owner:
            self._owner = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def close(self) -> None:
        """Unlink (the creator) and unmap. Views handed out keep the memory alive until they go."""
        self.unlink()
        mm, self._mm = self._mm, None
        if mm is not None:
            del self.request, self.priors, self.values  # the views this ring holds itself
            with contextlib.suppress(BufferError):  # arrays still view it: it is unmapped when they go
                mm.close()


def remove_stale_rings() -> None:
    """Remove ring files left by processes that no longer run (a server killed between creating a
    ring and its client's attach)."""
    if not SHM_DIR.is_dir():
        return
    for p in SHM_DIR.glob(f"{_PREFIX}*-*"):
        pid = p.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                p.unlink()
        except PermissionError:  # another user's live process
            pass
