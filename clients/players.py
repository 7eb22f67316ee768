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
from blobnet.config import CPU_ENGINE, CPU_SPARSE, SearchConfig
from blobnet.evaluator import Evaluator
from blobnet.net import make_net
from blobnet.player import EvaluatorFactory, NetworkPlayer, Player, load_player
from servers import Batcher

__all__ = [
    "BOTS", "BotSeat", "NetworkSeat", "SeatSpec", "arrays_of", "batched", "build_seat", "model_with", "parse_player",
]  # fmt: skip

BOTS: dict[str, Callable[[int | None], Player]] = {"random": RandomBot, "heuristic": HeuristicBot}


def batched(device: str = "cpu") -> EvaluatorFactory:
    """An ``EvaluatorFactory`` making an in-line ``Batcher`` on ``device`` (module docstring)."""
    return partial(_batcher, device=device)


def _batcher(model: nn.Module, max_batch: int, *, device: str) -> Evaluator:
    return Batcher(model, device=device, max_batch=max_batch, mode="inline", engine=CPU_ENGINE, sparse=CPU_SPARSE)


class BotSeat(msgspec.Struct, tag="bot", frozen=True):
    """A rule-based bot, by name (a key of ``BOTS``), seeded with ``seed``."""

    name: str
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
        case BotSeat(name=name, seed=seed):
            if name not in BOTS:
                raise ValueError(f"bot {name!r}: use one of {', '.join(BOTS)}")
            return BOTS[name](seed)
        case NetworkSeat():
            model = model_with(spec.preset, spec.weights)
            return NetworkPlayer(model, spec.search, seed=spec.seed, evaluator=batched(spec.device))
    raise TypeError(f"not a seat spec: {spec!r}")


def _flag(raw: str) -> bool:
    """``true``/``false`` (or 1/0, yes/no); ValueError otherwise."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower())
    if value is None:
        raise ValueError(raw)
    return value


# Search settings a player spec (``path:dets=3,sims=30``) may give: how each is read, and what it must be.
_SPEC_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    "dets": (int, "an integer"), "sims": (int, "an integer"), "leaves": (int, "an integer"),
    "c_puct": (float, "a number"), "root_view": (_flag, "true or false"),
}  # fmt: skip


def parse_player(spec: str, seed: int | None = None, *, device: str = "cpu") -> Player:
    """A player from a command-line string: ``random``, ``heuristic``, or a checkpoint path
    optionally followed by search settings, ``runs/x/best.pt:dets=3,sims=30`` (keys: dets, sims,
    leaves, c_puct, root_view). ``seed`` seeds the player's generator; a network player's tables
    share a batcher on ``device``. ValueError naming what is wrong."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty player: give random, heuristic, or a checkpoint path (path:dets=3,sims=30)")
    if spec.lower() in BOTS:
        return BOTS[spec.lower()](seed)
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
        read, kind = _SPEC_KEYS[key]
        try:
            settings[key] = read(raw.strip())
        except ValueError:
            raise ValueError(f"player {spec!r}: {key}={raw.strip()!r} is not {kind}") from None
    if not Path(path).is_file():
        raise ValueError(
            f"player {spec!r}: not random or heuristic, and no checkpoint file {path!r} exists "
            "(give random, heuristic, or a checkpoint path optionally followed by :dets=3,sims=30)"
        )
    try:
        return load_player(path, seed=seed, evaluator=batched(device), **settings)
    except ValueError as e:
        raise ValueError(f"player {spec!r}: {e}") from None
