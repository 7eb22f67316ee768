"""The predecessor's designs, kept as the baselines the sweep measures the product against.

They run the product's own pieces (the network's forward pass ``blobnet.net.DirectEvaluator``, the
search, the engine's round: ``GameConfig.deal_round``, ``blobnet.rules.choices``,
``blobnet.replay.RoundRecord``); what they keep of the predecessor is only how the pieces are driven:

- ``RowByRow``: no batching at all, every row its own forward pass of batch one ("direct", and each
  "processes" worker);
- ``ThreadBatcher``: games played synchronously in OS threads around a lock-guarded batcher with a
  timeout ("threads");
- ``SyncPlayer`` and ``drive``: rounds played one after another on the caller's thread, without an
  event loop, over an evaluator that never suspends ("threads", "processes").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from torch import nn

from blobnet.config import GameConfig
from blobnet.evaluator import Priors, check_request
from blobnet.net import DirectEvaluator
from blobnet.replay import RoundRecord
from blobnet.rules import choices
from blobnet.search import Search, choose_action

__all__ = ["RowByRow", "ThreadBatcher", "SyncPlayer", "drive"]


class RowByRow(DirectEvaluator):
    """``DirectEvaluator`` with every row of a request its own forward pass of batch one, run the
    moment it is asked for. ``yield_each`` as there: one event-loop turn per request, so the games of
    an asyncio engine interleave; False when the search is driven without a loop (``drive``)."""

    def run_rows(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        one = super().run_rows
        parts = [one(features[i : i + 1], legal[i : i + 1]) for i in range(len(legal))]
        if not parts:
            return one(features, legal)  # no rows: the checks and the empty answer
        return np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts])

    def stats(self) -> dict[str, Any]:
        """Every forward pass holds one row (the ``servers.Batcher.stats`` keys the sweep reads)."""
        return {"mean_batch": 1.0, "p10_batch": 1, "p50_batch": 1, "p90_batch": 1}

    def reset_stats(self) -> None:
        return None


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (a search over a blocking evaluator) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the coroutine suspended: an evaluator driven without a loop must not await anything")


class _Batch:
    __slots__ = ("rows", "legal", "n", "requests", "running", "done", "priors", "values", "error")

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []  # each request's (k, width) features, copied
        self.legal: list[np.ndarray] = []  # each request's (k, n_actions) legal mask, copied
        self.n = 0  # rows
        self.requests = 0
        self.running = False  # a requester has taken it to run the forward pass
        self.done = False
        self.priors: np.ndarray | None = None  # (n, n_actions), the batch's own
        self.values: np.ndarray | None = None  # (n, n_values)
        self.error: BaseException | None = None


class ThreadBatcher:
    """A lock-guarded batcher for games running synchronously in threads (the predecessor's design).

    A request adds its rows to the open batch under the lock. When ``fill`` requests are in, or when
    the first waiter's ``timeout`` (seconds) expires, one requester takes the batch, runs the forward
    pass outside the lock and wakes every waiter with ``notify_all``. ``evaluate_many`` is a coroutine
    only in name: it blocks and never suspends, so each thread drives its search with ``drive``.
    ``sizes``: the rows of every batch run so far, in order."""

    model_version = 0  # its model never changes (blobnet.evaluator)

    def __init__(self, model: nn.Module, *, fill: int, timeout: float) -> None:
        if fill < 1 or timeout <= 0:
            raise ValueError(f"fill={fill}, timeout={timeout}: fill >= 1 and timeout > 0")
        self.direct = DirectEvaluator(model, yield_each=False)
        self.fill = fill
        self.timeout = timeout
        self.sizes: list[int] = []
        self._cond = threading.Condition()
        self._open = _Batch()

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        t0 = time.perf_counter()
        k = check_request(features, legal, self.direct.width, self.direct.n_actions)
        cond = self._cond
        with cond:
            b = self._open
            start = b.n
            b.rows.append(features.copy())
            b.legal.append(legal.copy())
            b.n += k
            b.requests += 1
            run = b.requests >= self.fill
            if not run:
                deadline = t0 + self.timeout
                while not (b.done or b.running):
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        run = True  # timed out and nobody has taken the batch: take it
                        break
                    cond.wait(left)
            if run:
                b.running = True
                if self._open is b:
                    self._open = _Batch()
        if run:
            priors: np.ndarray | None = None
            values: np.ndarray | None = None
            try:
                priors, values = self.direct.run_rows(np.concatenate(b.rows), np.concatenate(b.legal))
            except BaseException as e:  # noqa: BLE001 - every waiter of the batch sees it
                b.error = e
            with cond:
                b.priors, b.values, b.done = priors, values, True
                self.sizes.append(b.n)
                cond.notify_all()
        else:
            with cond:
                while not b.done:
                    cond.wait()
        if b.error is not None:
            raise RuntimeError(f"the forward pass failed: {b.error!r}") from b.error
        assert b.priors is not None and b.values is not None
        return b.priors[start : start + k], b.values[start : start + k]

    async def aclose(self) -> None:
        return None


class SyncPlayer:
    """Plays rounds one after another on the caller's thread, the engine's round
    (``clients.selfplay.SelfPlayEngine``) without its event loop: a deal from ``game``, each real
    choice searched with root noise, a visit-count move at the search's temperature, the round's
    examples made at its end. The search's evaluator must never suspend (``drive`` runs it)."""

    def __init__(self, search: Search, rng: np.random.Generator, game: GameConfig) -> None:
        self.search = search
        self.rng = rng
        self.game = game
        self.decisions = 0  # searched
        self.rounds = 0  # finished

    def play_round(self, stop: Callable[[], bool], on_decision: Callable[[], None] | None = None) -> None:
        """One round, abandoned (not counted) as soon as ``stop()`` says so before a decision."""
        rng = self.rng
        temperature = self.search.config.temperature
        r = self.game.deal_round(rng)
        record = RoundRecord()
        for seat in choices(r):
            if stop():
                return
            result = drive(self.search.run(r.view(seat), rng, noise=True))
            assert result.features is not None  # a searched decision carries its root features
            record.add(r, result.features, result.actions, result.policy())
            r.apply(choose_action(result, temperature, rng))
            self.decisions += 1
            if on_decision is not None:
                on_decision()
        record.examples(r)
        self.rounds += 1
