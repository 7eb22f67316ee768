"""The evaluator protocol: what a search awaits from a network, local or remote.

``servers.Batcher`` (in-process) and ``clients.remote.RemoteEvaluator`` (over a socket) implement
it, so a self-play process cannot tell them apart; ``clients.selfplay.FreeEvaluator`` is the free
one that measures the search alone. Both real ones also offer ``evaluate(row, legal)`` for one
position at a time. This module imports numpy alone, so the batcher can name the protocol
without importing the game.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["Evaluator"]


class Evaluator(Protocol):
    async def evaluate_many(
        self, features: np.ndarray, legal: Sequence[Sequence[int]]
    ) -> tuple[list[float], list[list[float]]]:
        """features: (k, WIDTH) float32, copied before the first await (the caller reuses it);
        legal: k lists of legal action ids. Returns (priors, values): priors, the softmax of the
        policy over each row's legal ids, flat in row order (``sum(len(l) for l in legal)``
        floats); values, k lists of 8 floats, every relative seat's expected normalised score."""
        ...

    async def aclose(self) -> None:
        """Stop: later calls raise, pending ones fail with a clear error."""
        ...
