"""Running coroutines: the event loop every command uses, and the collector held back while games run."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["quiet_gc", "run_loop", "run_now"]

T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop where it can be had, else on asyncio's own loop."""
    try:
        import uvloop  # optional: not built for every platform
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``, which must never wait, to its end on this thread, outside any event loop (so
    also from a callback of a running one); RuntimeError if it waits after all."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("run_now: the coroutine waited")


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Python's cyclic collector would walk every live tree node again and again; the trees make
    no reference cycles, so collect rarely while games run (DESIGN.md: its largest cost)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
