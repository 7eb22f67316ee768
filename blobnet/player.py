"""Players: the protocol, the network player (search + network), and loading players by name.

Every player has ``act(view) -> action id`` (synchronous, INTERFACES.md), given only
``Round.view(seat)``. A player may also have ``async aact(view) -> action id``: the arena awaits
that, so many tables share one event loop and the network players' evaluations batch together.
``act_async(player, view)`` uses ``aact`` where there is one and ``act`` otherwise, so the bots of
``blobnet.bots`` need no adapter. A player holding resources on an event loop has ``aclose()``.

``NetworkPlayer`` searches every decision (``blobnet.search``) at temperature 0 without root
noise: its strongest play. It asks an evaluator made by its ``evaluator`` factory: on first use on
the running loop for ``aact`` (one per player and loop, with one ``Search`` over it that every table
shares, so its trees and its network cache last from one decision to the next), and a private one
on a private event loop for ``act``, so any program can call it (kept between calls likewise,
until ``close()``). The default factory makes a
``blobnet.net.DirectEvaluator`` (one forward pass per wave of one search); ``clients.players``
makes players whose tables share a batcher (``servers.Batcher``), as the arena and the trainer do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import numpy as np
from torch import nn

from blobnet.checkpoint import load_model
from blobnet.config import PLAYER_ENGINE, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.net import BlobNet, DirectEvaluator
from blobnet.rules import View
from blobnet.search import Search, choose_action

__all__ = [
    "Player", "AsyncPlayer", "EvaluatorFactory", "act_async", "aclose_player", "describe_player", "NetworkPlayer",
    "load_player",
]  # fmt: skip

# (model, max_batch) -> an evaluator of that model on the running loop, taking up to max_batch rows at once
EvaluatorFactory = Callable[[nn.Module, int], Evaluator]
T = TypeVar("T")


def direct(model: nn.Module, max_batch: int) -> Evaluator:
    """The default ``EvaluatorFactory``: a ``DirectEvaluator`` (no batching across searches). A
    ``BlobNet`` runs on a lone player's engine (``PLAYER_ENGINE``), dense: a lone search's forward
    passes then use no torch thread pool, whose threads stall a pass while another process holds a
    core."""
    if isinstance(model, BlobNet):
        return DirectEvaluator(model, engine=PLAYER_ENGINE)
    return DirectEvaluator(model)


@runtime_checkable
class Player(Protocol):
    """Anything that answers ``act(view)`` with one of ``view.legal_actions()``."""

    def act(self, view: View) -> int: ...


@runtime_checkable
class AsyncPlayer(Player, Protocol):
    """A player that can also wait for its answer on the running event loop."""

    async def aact(self, view: View) -> int: ...


async def act_async(player: Player, view: View) -> int:
    """``await player.aact(view)`` when the player has it, else ``player.act(view)``."""
    aact = getattr(player, "aact", None)
    if aact is not None:
        return int(await aact(view))
    return int(player.act(view))


async def aclose_player(player: Player) -> None:
    """Release what ``player`` holds on the running loop (its batcher); nothing for a bot."""
    aclose = getattr(player, "aclose", None)
    if aclose is not None:
        await aclose()


def describe_player(player: Player) -> str:
    """A short name for messages: ``RandomBot``, ``NetworkPlayer(runs/x/best.pt, 3x30)``."""
    name = getattr(player, "name", None)
    return str(name) if name else type(player).__name__


class NetworkPlayer:
    """Plays with the search over ``model`` at temperature 0 and without root noise.

    ``search`` sets determinizations, simulations, leaves in flight and c_puct (its temperature
    and noise settings are ignored). ``seed`` seeds the player's own generator
    (``numpy.random.default_rng(seed)``), which draws the determinizations. ``evaluator`` makes the
    evaluators (module docstring); ``max_batch`` is the largest batch of the shared one. ``name``
    is used in reports.
    """

    def __init__(
        self,
        model: nn.Module,
        search: SearchConfig | None = None,
        seed: int | None = None,
        *,
        evaluator: EvaluatorFactory = direct,
        max_batch: int = 1024,
        name: str | None = None,
    ) -> None:
        search = SearchConfig() if search is None else search
        self.model = model.eval()
        self.search = msgspec.structs.replace(search, temperature=0.0)
        self.rng = np.random.default_rng(seed)
        self.factory = evaluator
        self.max_batch = max_batch
        self.name = name or f"NetworkPlayer({search.dets}x{search.sims})"
        self.decisions = 0  # searched decisions (forced moves are not searched)
        self.evaluations = 0  # network evaluations asked for by those searches
        self._loop: asyncio.AbstractEventLoop | None = None
        self._evaluator: Evaluator | None = None
        self._search: Search | None = None  # over self._evaluator
        # act's own event loop, with its evaluator and search, kept between calls (``close``)
        self._runner: asyncio.Runner | None = None
        self._private: tuple[Evaluator, Search] | None = None
        self._private_lock = threading.RLock()  # close() holds it around _on_private_loop
        self._finalizer: weakref.finalize | None = None

    def _search_on_running_loop(self) -> Search:
        """This loop's search over its evaluator, made on first use (one Search serves every table
        at once, keeping its trees and its network cache from one decision to the next); one left
        on a finished loop is dropped."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._search is None:
            self._evaluator = self.factory(self.model, self.max_batch)
            self._search = Search(self._evaluator, self.search)
            self._loop = loop
        return self._search

    async def _decide(self, search: Search, view: View) -> int:
        # the result's own counters: searches of other tables interleave on the same Search
        result = await search.run(view, self.rng, noise=False)
        self.decisions += 1
        self.evaluations += result.evaluations
        return choose_action(result, 0.0, self.rng)

    async def aact(self, view: View) -> int:
        """The most visited action of a search of ``view``; a forced move is not searched."""
        legal = view.legal_or_raise()
        if len(legal) == 1:
            return legal[0]
        return await self._decide(self._search_on_running_loop(), view)

    def act(self, view: View) -> int:
        """``aact`` on the player's private event loop, which keeps its evaluator and its search
        (trees and network cache) from one call to the next until ``close()``.

        Called from inside a running loop it runs in a helper thread (the caller's loop blocks
        meanwhile: use ``await aact`` there instead). Calls from several threads take turns."""
        legal = view.legal_or_raise()
        if len(legal) == 1:
            return legal[0]
        return self._on_private_loop(lambda: self._act_private(view))

    async def _act_private(self, view: View) -> int:
        if self._private is None:
            # One search asks at most Search.rows_per_wave evaluations at once: a batch of that size.
            evaluator = self.factory(self.model, Search.rows_per_wave(self.search))
            self._private = (evaluator, Search(evaluator, self.search))
        return await self._decide(self._private[1], view)

    def _on_private_loop(self, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``coro()`` to its end on the private loop (made on first use), from this thread or,
        when this thread runs a loop already, from a helper thread."""
        with self._private_lock:
            if self._runner is None:
                self._runner = asyncio.Runner()
                # a player dropped without close() still ends its loop
                self._finalizer = weakref.finalize(self, self._runner.close)
            runner = self._runner
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return runner.run(coro())
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                return pool.submit(lambda: runner.run(coro())).result()

    def close(self) -> None:
        """Close the evaluator of ``act`` and end its private loop (``act`` again makes new ones).
        Idempotent; ``aact``'s evaluators are ``aclose``'s."""
        with self._private_lock:  # a call of act in another thread finishes first
            private, self._private = self._private, None
            try:
                if private is not None:
                    self._on_private_loop(private[0].aclose)
            finally:
                if self._finalizer is not None:
                    self._finalizer()  # closes the runner, once
                self._runner = self._finalizer = None

    async def aclose(self) -> None:
        """Close the evaluator of the running loop, if this player made one; using the player
        again makes a new one. An evaluator left on a loop that has finished is just dropped."""
        evaluator, loop = self._evaluator, self._loop
        self._evaluator = self._loop = self._search = None
        if evaluator is not None and loop is asyncio.get_running_loop():
            await evaluator.aclose()

    def __repr__(self) -> str:
        return f"<{self.name}>"


def load_player(
    path: str | Path,
    dets: int = 3,
    sims: int = 30,
    *,
    leaves: int | None = None,
    c_puct: float | None = None,
    root_view: bool | None = None,
    seed: int | None = None,
    evaluator: EvaluatorFactory = direct,
    max_batch: int = 1024,
) -> NetworkPlayer:
    """A ``NetworkPlayer`` over the network in checkpoint ``path`` (``blobnet.checkpoint.load_model``)
    searching ``dets`` determinizations x ``sims`` simulations; ``leaves``, ``c_puct`` and
    ``root_view`` default to ``SearchConfig``'s. A missing or foreign file raises
    ``CheckpointError`` (a ValueError)."""
    fields: dict[str, Any] = {"dets": dets, "sims": sims}
    for key, value in (("leaves", leaves), ("c_puct", c_puct), ("root_view", root_view)):
        if value is not None:
            fields[key] = value
    search = SearchConfig(**fields)  # ConfigError (a ValueError) names a bad value
    model = load_model(path)
    name = f"{path} ({search.dets}x{search.sims})"
    return NetworkPlayer(model, search, seed, evaluator=evaluator, max_batch=max_batch, name=name)
