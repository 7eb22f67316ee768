"""Players: the protocol, the network player (search + network), and loading players by name.

Every player has ``act(view) -> action id`` (synchronous, INTERFACES.md), given only
``Round.view(seat)``. A player may also have ``async aact(view) -> action id``: the arena awaits
that, so many tables share one event loop and the network players' evaluations batch together.
``act_async(player, view)`` uses ``aact`` where there is one and ``act`` otherwise, so the bots of
``blobnet.bots`` need no adapter. A player holding resources on an event loop has ``aclose()``.

``NetworkPlayer`` searches every decision (``blobnet.search``) at temperature 0 without root
noise: its strongest play. Its ``aact`` asks a ``servers.batcher.Batcher`` created on first use
on the running loop (one per player and loop, shared by all its tables); its ``act`` runs one
search on a private event loop with a private batcher, so any program can call it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
import numpy as np

from blobnet.bots import HeuristicBot, RandomBot
from blobnet.config import SearchConfig
from blobnet.rules import View
from blobnet.search import Search, choose_action

if TYPE_CHECKING:  # torch is imported by the first network player, not by a match of bots
    from torch import nn

__all__ = [
    "Player",
    "AsyncPlayer",
    "act_async",
    "aclose_player",
    "describe_player",
    "NetworkPlayer",
    "load_player",
    "parse_player",
    "BOTS",
]

BOTS: dict[str, Callable[[int | None], Any]] = {"random": RandomBot, "heuristic": HeuristicBot}


def _flag(raw: str) -> bool:
    """``true``/``false`` (or 1/0, yes/no); ValueError otherwise."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower())
    if value is None:
        raise ValueError(raw)
    return value


# Search settings a player spec (``path:dets=3,sims=30``) may give: how each is read, and what it must be.
_SPEC_KEYS: dict[str, Callable[[str], Any]] = {
    "dets": int, "sims": int, "leaves": int, "c_puct": float, "root_view": _flag,
}  # fmt: skip
_SPEC_KINDS = {"dets": "an integer", "sims": "an integer", "leaves": "an integer", "c_puct": "a number",
               "root_view": "true or false"}  # fmt: skip


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


def _legal(view: View) -> list[int]:
    legal = view.legal_actions()
    if not legal:
        raise ValueError(f"seat {view.seat} has no legal action: to_play={view.to_play}, phase={view.phase!r}")
    return legal


class NetworkPlayer:
    """Plays with the search over ``model`` at temperature 0 and without root noise.

    ``search`` sets determinizations, simulations, leaves in flight and c_puct (its temperature
    and noise settings are ignored). ``seed`` seeds the player's own generator
    (``numpy.random.default_rng(seed)``), which draws the determinizations. ``device`` and
    ``max_batch`` go to the batcher. ``name`` is used in reports.
    """

    def __init__(
        self,
        model: nn.Module,
        search: SearchConfig | None = None,
        seed: int | None = None,
        *,
        device: str = "cpu",
        max_batch: int = 1024,
        name: str | None = None,
    ) -> None:
        search = SearchConfig() if search is None else search
        self.model = model.eval()
        self.search = msgspec.structs.replace(search, temperature=0.0)
        self.rng = np.random.default_rng(seed)
        self.device = device
        self.max_batch = max_batch
        self.name = name or f"NetworkPlayer({search.dets}x{search.sims})"
        self.decisions = 0  # searched decisions (forced moves are not searched)
        self.evaluations = 0  # network evaluations asked for by those searches
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Any = None

    def _new_batcher(self, max_batch: int) -> Any:
        from servers.batcher import Batcher

        # In-line: which rows share a batch, and so the order in which tables draw from self.rng,
        # never depends on a thread's timing, so a match with a seed is repeatable.
        return Batcher(self.model, device=self.device, max_batch=max_batch, mode="inline")

    def _batcher_on_running_loop(self) -> Any:
        """This loop's batcher, made on first use; a batcher left on a finished loop is dropped."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._batcher is None:
            self._batcher = self._new_batcher(self.max_batch)
            self._loop = loop
        return self._batcher

    async def _decide(self, evaluator: Any, view: View) -> int:
        # A Search per decision: its counters then count this decision alone (searches interleave).
        result = await Search(evaluator, self.search).run(view, self.rng, noise=False)
        self.decisions += 1
        self.evaluations += result.evaluations
        return choose_action(result, 0.0, self.rng)

    async def aact(self, view: View) -> int:
        """The most visited action of a search of ``view``; a forced move is not searched."""
        legal = _legal(view)
        if len(legal) == 1:
            return legal[0]
        return await self._decide(self._batcher_on_running_loop(), view)

    def act(self, view: View) -> int:
        """``aact`` on a private event loop with a private batcher, closed before returning.

        Called from inside a running loop it runs in a helper thread (the caller's loop blocks
        meanwhile: use ``await aact`` there instead)."""
        legal = _legal(view)
        if len(legal) == 1:
            return legal[0]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._act_private(view))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._act_private(view)).result()

    async def _act_private(self, view: View) -> int:
        # One search asks at most Search.rows_per_wave evaluations at once: a batch buffer of that size.
        batcher = self._new_batcher(Search.rows_per_wave(self.search))
        try:
            return await self._decide(batcher, view)
        finally:
            await batcher.aclose()

    async def aclose(self) -> None:
        """Close the batcher of the running loop, if this player made one; using the player
        again makes a new one. A batcher left on a loop that has finished is just dropped."""
        batcher, loop = self._batcher, self._loop
        self._batcher = self._loop = None
        if batcher is not None and loop is asyncio.get_running_loop():
            await batcher.aclose()

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
    device: str = "cpu",
    max_batch: int = 1024,
) -> NetworkPlayer:
    """A ``NetworkPlayer`` over the network in checkpoint ``path`` (``blobnet.checkpoint.load_model``)
    searching ``dets`` determinizations x ``sims`` simulations; ``leaves``, ``c_puct`` and
    ``root_view`` default to ``SearchConfig``'s. A missing or foreign file raises
    ``CheckpointError`` (a ValueError)."""
    from blobnet.checkpoint import load_model

    fields: dict[str, Any] = {"dets": dets, "sims": sims}
    for key, value in (("leaves", leaves), ("c_puct", c_puct), ("root_view", root_view)):
        if value is not None:
            fields[key] = value
    search = SearchConfig(**fields)  # ConfigError (a ValueError) names a bad value
    model = load_model(path)
    name = f"{path} ({search.dets}x{search.sims})"
    return NetworkPlayer(model, search, seed, device=device, max_batch=max_batch, name=name)


def parse_player(spec: str, seed: int | None = None, *, device: str = "cpu") -> Player:
    """A player from a command-line string: ``random``, ``heuristic``, or a checkpoint path
    optionally followed by search settings, ``runs/x/best.pt:dets=3,sims=30`` (keys: dets, sims,
    leaves, c_puct, root_view). ``seed`` seeds the player's generator. ValueError naming what is wrong."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty player: give random, heuristic, or a checkpoint path (path:dets=3,sims=30)")
    if spec.lower() in BOTS:
        return BOTS[spec.lower()](seed)  # type: ignore[no-any-return]
    path, options = spec, ""
    head, sep, tail = spec.rpartition(":")
    # a ':' inside a path is kept when no settings follow it and the part before it is no file
    if sep and ("=" in tail or not tail or Path(head).is_file()):
        path, options = head, tail
    settings: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in _SPEC_KEYS:
            raise ValueError(
                f"player {spec!r}: bad setting {item!r}; write key=value with keys {', '.join(_SPEC_KEYS)}"
            )
        try:
            settings[key] = _SPEC_KEYS[key](raw.strip())
        except ValueError:
            raise ValueError(f"player {spec!r}: {key}={raw.strip()!r} is not {_SPEC_KINDS[key]}") from None
    if not Path(path).is_file():
        raise ValueError(
            f"player {spec!r}: not random or heuristic, and no checkpoint file {path!r} exists "
            "(give random, heuristic, or a checkpoint path optionally followed by :dets=3,sims=30)"
        )
    try:
        return load_player(path, seed=seed, device=device, **settings)
    except ValueError as e:
        raise ValueError(f"player {spec!r}: {e}") from None
