"""Who owns which table, and how many there may be: sessions, their tables, limits and expiry.

A session is a random token the server issues in a cookie; a table belongs to the session that
created it, and a request from any other session is answered as if the table did not exist (a
404: another browser learns nothing, not even that the id is taken). Sessions and tables left
idle for ``Limits.idle_s`` are dropped (looked at on every request: a few hundred entries at most,
so a sweep costs nothing next to a request). The server holds at most ``Limits.max_tables``
tables, ``Limits.per_session`` of them per session, and ``Limits.max_sessions`` sessions; past a
limit a new one is refused with a message saying which limit and how it frees.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clients.web.table import Table

__all__ = ["Full", "Limits", "NotFound", "Registry", "Session"]

TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): 256 random bits
TABLE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Full(Exception):
    """A limit is reached: ``status`` is 503 (the server's) or 429 (the session's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(LookupError):
    """No such table in this session."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How much the server holds, and for how long."""

    max_tables: int = 64  # tables held at once, all sessions together
    per_session: int = 4  # tables one session may hold at once
    max_sessions: int = 1024  # sessions held at once
    idle_s: float = 1800.0  # a table or a session unused this long is dropped

    def __post_init__(self) -> None:
        for name in ("max_tables", "per_session", "max_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: give at least 1")
        if self.idle_s <= 0:
            raise ValueError(f"idle_s={self.idle_s}: give a positive number of seconds")


@dataclass
class Session:
    token: str
    used: float  # the clock when a request last came with this token
    tables: set[str] = field(default_factory=set)


class Registry:
    """Sessions and their tables. ``clock`` (seconds, monotonic) is injected so tests can age them."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.tables: dict[str, Table] = {}

    def expire(self) -> None:
        """Drop the tables and sessions idle for longer than ``limits.idle_s``."""
        cutoff = self.clock() - self.limits.idle_s
        for table in [t for t in self.tables.values() if t.used < cutoff and not t.lock.locked()]:
            self._drop(table)
        for token in [k for k, s in self.sessions.items() if s.used < cutoff and not s.tables]:
            del self.sessions[token]

    def session(self, token: str | None) -> Session:
        """The session of ``token``, or a new one when the token is missing, malformed, unknown or
        expired. Full (503) when the server holds its most sessions."""
        now = self.clock()
        s = self.sessions.get(token) if token is not None and TOKEN.fullmatch(token) else None
        if s is None:
            if len(self.sessions) >= self.limits.max_sessions:
                raise Full(503, f"the server holds its most sessions ({self.limits.max_sessions}); "
                                f"idle ones expire after {self.limits.idle_s / 60:.0f} minutes")  # fmt: skip
            s = Session(token=secrets.token_urlsafe(32), used=now)
            self.sessions[s.token] = s
        s.used = now
        return s

    def new_id(self) -> str:
        """A fresh table id, hard to guess (ownership is checked anyway)."""
        while (tid := secrets.token_urlsafe(9)) in self.tables:
            pass
        return tid

    def check_room(self, session: Session) -> None:
        """Full unless ``session`` may add a table: 429 at its own limit, 503 at the server's."""
        if len(session.tables) >= self.limits.per_session:
            raise Full(429, f"this session holds its most games ({self.limits.per_session}); "
                            "delete one, or let it expire")  # fmt: skip
        if len(self.tables) >= self.limits.max_tables:
            raise Full(503, f"the server holds its most games ({self.limits.max_tables}); try again when idle "
                            f"ones expire ({self.limits.idle_s / 60:.0f} minutes unused)")  # fmt: skip

    def add(self, session: Session, table: Table) -> None:
        """Hold ``table`` for ``session`` (``check_room`` first)."""
        self.check_room(session)
        self.tables[table.id] = table
        session.tables.add(table.id)

    def get(self, session: Session, table_id: str) -> Table:
        """``session``'s table ``table_id``; ValueError for an id of the wrong form, NotFound when
        there is none, or it is another session's."""
        if not TABLE_ID.fullmatch(table_id):
            raise ValueError(f"game id {table_id!r}: expected 1 to 32 letters, digits, '-' or '_'")
        table = self.tables.get(table_id)
        if table is None or table.owner != session.token:
            raise NotFound(f"no game {table_id!r} in this session (it may have expired)")
        table.used = self.clock()  # looking at a game counts as using it
        return table

    def remove(self, session: Session, table_id: str) -> None:
        self._drop(self.get(session, table_id))

    def _drop(self, table: Table) -> None:
        del self.tables[table.id]
        owner = self.sessions.get(table.owner)
        if owner is not None:
            owner.tables.discard(table.id)
