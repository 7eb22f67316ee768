"""Players built for the clients: from a command-line string, or from a seat spec sent to another process.

Network players made here share one ``servers.Batcher`` per player and event loop among all their
tables (``batched``), so a match's searches batch together. The batcher runs in-line: which rows
share a batch, and so the order in which tables draw from the player's generator, never depends
on a thread's timing, so a match with a seed is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from torch import nn

from blobnet.bots import HeuristicBot, RandomBot
from blobnet.config import CPU_SPARSE, PLAYER_ENGINE, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.ismcts import ISMCTSBot
from blobnet.net import make_net
from blobnet.player import EvaluatorFactory, NetworkPlayer, Player, load_player
from servers import Batcher

__all__ = [
    "BOTS", "BotSeat", "NetworkSeat", "SeatSpec", "arrays_of", "batched", "bot_maker", "bot_name", "build_seat",
    "make_bot", "model_with", "parse_player",
]  # fmt: skip


def _flag(raw: str) -> bool:
    """``true``/``false`` (or 1/0, yes/no); ValueError otherwise."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower())
    if value is None:
        raise ValueError(raw)
    return value


# How a setting of a player spec is read, and what it must be.
_Setting = tuple[Callable[[str], Any], str]
_INT: _Setting = (int, "an integer")
_NUMBER: _Setting = (float, "a number")

# The bots a player spec may name (``ismcts:sims=1000,c=10``): the class, and the settings it takes.
BOTS: dict[str, tuple[Callable[..., Player], dict[str, _Setting]]] = {
    "random": (RandomBot, {}),
    "heuristic": (HeuristicBot, {}),
    "ismcts": (ISMCTSBot, {"sims": _INT, "c": _NUMBER}),
}
# Search settings a network player's spec (``path:dets=3,sims=30``) may give.
_NETWORK_SETTINGS: dict[str, _Setting] = {
    "dets": _INT, "sims": _INT, "leaves": _INT, "c_puct": _NUMBER, "root_view": (_flag, "true or false"),
}  # fmt: skip


def _settings(spec: str, options: str, keys: dict[str, _Setting]) -> dict[str, Any]:
    """``options`` (``key=value,...``) read with ``keys``; ValueError naming the bad item."""
    settings: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in keys:
            allowed = f"write key=value with keys {', '.join(keys)}" if keys else "it takes no settings"
            raise ValueError(f"player {spec!r}: bad setting {item!r}; {allowed}")
        read, kind = keys[key]
        try:
            settings[key] = read(raw.strip())
        except ValueError:
            raise ValueError(f"player {spec!r}: {key}={raw.strip()!r} is not {kind}") from None
    return settings


def bot_name(spec: str) -> str | None:
    """The bot a player spec names (``ismcts`` for ``ismcts:sims=200``), None for anything else."""
    name = spec.strip().partition(":")[0].strip().lower()
    return name if name in BOTS else None


def make_bot(spec: str, seed: int | None = None) -> Player:
    """The bot of a spec: ``random``, ``heuristic``, ``ismcts`` or ``ismcts:sims=1000,c=10``, seeded
    with ``seed``. ValueError naming what is wrong."""
    return bot_maker(spec)(seed)


def bot_maker(spec: str) -> Callable[[int | None], Player]:
    """``make_bot`` with the spec read once: a function of the seed, for a caller that makes many
    bots of one spec. ValueError naming a bad name or setting now, a value the bot refuses when
    it is made."""
    name = bot_name(spec)
    if name is None:
        raise ValueError(f"bot {spec!r}: use one of {', '.join(BOTS)} (ismcts takes :sims=1000,c=10)")
    make, keys = BOTS[name]
    settings = _settings(spec, spec.partition(":")[2], keys)

    def build(seed: int | None) -> Player:
        try:
            return make(seed, **settings)
        except ValueError as e:
            raise ValueError(f"player {spec!r}: {e}") from None

    return build


def batched(device: str = "cpu") -> EvaluatorFactory:
    """An ``EvaluatorFactory`` making an in-line ``Batcher`` on ``device`` (module docstring)."""
    return partial(_batcher, device=device)


def _batcher(model: nn.Module, max_batch: int, *, device: str) -> Evaluator:
    return Batcher(model, device=device, max_batch=max_batch, mode="inline", engine=PLAYER_ENGINE, sparse=CPU_SPARSE)


class BotSeat(msgspec.Struct, tag="bot", frozen=True):
    """A bot that needs no network, by its spec (``make_bot``), seeded with ``seed``."""

    spec: str
    seed: int = 0


class NetworkSeat(msgspec.Struct, tag="network", frozen=True):
    """Network ``preset`` holding ``weights`` (arrays, from ``arrays_of``), searching with ``search``
    at temperature 0, seeded with ``seed``, its batcher on ``device``."""

    preset: str
    weights: dict[str, np.ndarray]
    search: SearchConfig
    seed: int = 0
    device: str = "cpu"


SeatSpec = BotSeat | NetworkSeat  # a player another process can build (``build_seat``)


def arrays_of(weights: dict[str, Any]) -> dict[str, np.ndarray]:
    """A state dict (tensors or arrays) as numpy arrays, to send to another process."""
    return {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in weights.items()}


def model_with(preset: str, weights: dict[str, np.ndarray] | None) -> nn.Module:
    """A fresh ``preset`` network holding ``weights`` (sent as arrays by ``arrays_of``)."""
    model = make_net(preset)
    if weights is not None:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return model


def build_seat(spec: SeatSpec) -> Player:
    """The player ``spec`` describes."""
    match spec:
        case BotSeat(spec=bot, seed=seed):
            return make_bot(bot, seed)
        case NetworkSeat():
            model = model_with(spec.preset, spec.weights)
            return NetworkPlayer(model, spec.search, seed=spec.seed, evaluator=batched(spec.device))
    raise TypeError(f"not a seat spec: {spec!r}")


def parse_player(spec: str, seed: int | None = None, *, device: str = "cpu") -> Player:
    """A player from a command-line string: a bot (``random``, ``heuristic``, ``ismcts`` or
    ``ismcts:sims=1000,c=10``; ``make_bot``), or a checkpoint path optionally followed by search
    settings, ``runs/x/best.pt:dets=3,sims=30`` (keys: dets, sims, leaves, c_puct, root_view).
    ``seed`` seeds the player's generator; a network player's tables share a batcher on
    ``device``. ValueError naming what is wrong."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty player: give random, heuristic, ismcts, or a checkpoint path (path:dets=3,sims=30)")
    if bot_name(spec) is not None:
        return make_bot(spec, seed)
    path, options = spec, ""
    head, sep, tail = spec.rpartition(":")
    # a ':' inside a path is kept when no settings follow it and the part before it is no file
    if sep and ("=" in tail or not tail or Path(head).is_file()):
        path, options = head, tail
    settings = _settings(spec, options, _NETWORK_SETTINGS)
    if not Path(path).is_file():
        raise ValueError(
            f"player {spec!r}: not a bot ({', '.join(BOTS)}), and no checkpoint file {path!r} exists "
            "(give a bot, or a checkpoint path optionally followed by :dets=3,sims=30)"
        )
    try:
        return load_player(path, seed=seed, evaluator=batched(device), **settings)
    except ValueError as e:
        raise ValueError(f"player {spec!r}: {e}") from None
