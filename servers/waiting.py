"""Waking a batch's waiters: one future shared by all of them, and what to do when one is cancelled.

One shared future per batch, not one per request (bench/batcher_speed.py --futures: with uvloop
0.8 to 1.1 us per request where a future per request costs 1.1 to 1.4 us and ``asyncio.shield``
around the shared one 2.5 to 3 us). A waiter that is cancelled cancels that shared future; the other
waiters see a CancelledError that is not theirs (``Task.cancelling() == 0``), make a fresh future
for the batch and wait again (``rewait``), so a cancellation never disturbs the rest of its batch.
``wait`` is that whole idiom in one call; used by ``servers.Batcher`` and
``clients.remote.RemoteEvaluator``.
"""

from __future__ import annotations

import asyncio

__all__ = ["Shared", "wait", "collateral", "rewait"]


class Shared:
    """One future shared by every waiter of a batch; ``done`` is set before the future completes."""

    __slots__ = ("fut", "done")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut
        self.done = False

    def finish(self) -> None:
        self.done = True
        # A waiter's cancellation may have cancelled the future: never set a result on a done future.
        if not self.fut.done():
            self.fut.set_result(None)


async def wait(s: Shared) -> None:
    """Wait until ``s`` is finished. This task's own cancellation propagates (and cancels the shared
    future); another waiter's does not disturb this one. The extra coroutine call costs 0.2 to 0.36
    us a request over the idiom written in line (bench/batcher_speed.py --futures, "shared_helper"
    against "shared", on a busy 2-core machine where "shared" itself took 1.9 to 2.7 us)."""
    fut = s.fut
    try:
        await fut
    except asyncio.CancelledError:
        if not collateral(fut):
            raise
        await rewait(s)


def collateral(fut: asyncio.Future[None]) -> bool:
    """True when the CancelledError just caught while awaiting ``fut`` was another waiter's: ``fut`` (a
    shared future) was cancelled and this task has no cancellation of its own pending."""
    if not fut.cancelled():
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


async def rewait(s: Shared) -> None:
    """Wait for ``s`` on a fresh future after another waiter's cancellation cancelled the shared one
    (the cold path of ``wait``: it costs nothing while nobody is cancelled)."""
    while not s.done:
        fut = s.fut
        if fut.done():  # still the cancelled one: the first waiter back makes the replacement
            fut = s.fut = asyncio.get_running_loop().create_future()
        try:
            await fut
        except asyncio.CancelledError:
            if not collateral(fut):
                raise
