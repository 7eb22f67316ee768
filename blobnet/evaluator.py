"""The evaluator protocol: what a search awaits from a network, local or remote, and its errors.

``servers.Batcher`` (in-process), ``clients.remote.RemoteEvaluator`` (over a socket) and
``blobnet.net.DirectEvaluator`` (one forward pass per call, no batching) implement it, so a
self-play process cannot tell them apart; ``FreeEvaluator`` here costs nothing and measures the
search alone. This module imports numpy and asyncio alone, so every layer can name the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from blobnet.cards import N_VALUES

__all__ = ["Evaluator", "EvaluatorClosed", "EvaluationError", "FreeEvaluator", "Priors"]

# (priors flat over each row's legal ids, in row order; per row N_VALUES values)
Priors = tuple[list[float], list[list[float]]]


class EvaluatorClosed(RuntimeError):
    """The evaluator was closed (or its connection lost): no evaluation was or will be made."""


class EvaluationError(RuntimeError):
    """The forward pass failed for the whole batch holding this request; ``__cause__`` is why."""


class Evaluator(Protocol):
    async def evaluate_many(self, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
        """features: (k, WIDTH) float32, copied before the first await (the caller reuses it);
        legal: k lists of legal action ids. Returns (priors, values): priors, the softmax of the
        policy over each row's legal ids, flat in row order (``sum(len(l) for l in legal)``
        floats); values, k lists of N_VALUES floats, every relative seat's expected normalised score."""
        ...

    async def aclose(self) -> None:
        """Stop: later calls raise, pending ones fail with a clear error."""
        ...


class FreeEvaluator:
    """An evaluator that costs nothing: uniform priors over the legal actions, equal values.
    It measures the search-only ceiling and serves tests. It gives the event loop one turn per
    request, as a batcher does, so the games interleave instead of playing one after another."""

    def __init__(self, value: float = 0.5) -> None:
        self.values = [value] * N_VALUES

    async def evaluate_many(self, features: np.ndarray, legal: Sequence[Sequence[int]]) -> Priors:
        priors: list[float] = []
        for ids in legal:
            priors += [1.0 / len(ids)] * len(ids)
        await asyncio.sleep(0)
        return priors, [self.values] * len(legal)

    async def aclose(self) -> None:
        return None
