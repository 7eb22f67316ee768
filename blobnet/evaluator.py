"""The evaluator protocol: what a search awaits from a network, local or remote, and its errors.

``servers.Batcher`` (in-process), ``clients.remote.RemoteEvaluator`` (over a socket) and
``blobnet.net.DirectEvaluator`` (one forward pass per call, no batching) implement it, so a
self-play process cannot tell them apart; ``FreeEvaluator`` here costs nothing and measures the
search alone. This module imports numpy and asyncio alone, so every layer can name the protocol.

Everything crosses the protocol as arrays, k rows a request, no Python object per row:

    features (k, WIDTH) float32       the caller's; copied before the first await, so the caller may
                                      overwrite it as soon as the call has started
    legal    (k, N_ACTIONS) bool      the caller's, as features; True where the action id is legal
    ->
    priors   (k, N_ACTIONS) float32   the softmax of the policy over each row's legal ids, exactly 0
                                      at the illegal ones
    values   (k, N_VALUES) float32    every relative seat's expected normalised score

The answers are the caller's from then on: an evaluator never hands out a buffer it will reuse
(one fresh array per batch, sliced per request, is how the batcher does it).

An evaluator whose answers may be kept says which model gives them: ``model_version``, a value that
changes whenever the model does (the batcher counts its ``set_weights``; an evaluator over a model
that never changes says 0). A search keeps answers in its network cache (``blobnet.netcache``) only
from an evaluator that has one, and empties the cache when it changes.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from blobnet.cards import N_ACTIONS, N_VALUES

__all__ = [
    "Evaluator", "EvaluatorClosed", "EvaluationError", "FreeEvaluator", "Priors", "check_request", "bad_rows",
    "row_errors", "NO_LEGAL", "NOT_FINITE",
]  # fmt: skip

# why a row cannot be evaluated, wherever it is found (here, the batcher, a packed batch)
NO_LEGAL = "legal holds no legal id: a position to evaluate has at least one legal action"
NOT_FINITE = "features hold NaN or inf"

# (priors (k, N_ACTIONS) float32, values (k, N_VALUES) float32)
Priors = tuple[np.ndarray, np.ndarray]


class EvaluatorClosed(RuntimeError):
    """The evaluator was closed (or its connection lost): no evaluation was or will be made."""


class EvaluationError(RuntimeError):
    """The forward pass failed for the whole batch holding this request; ``__cause__`` is why."""


class Evaluator(Protocol):
    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        """features: (k, WIDTH) float32; legal: (k, N_ACTIONS) bool; both copied before the first
        await (the caller reuses them). Returns (priors (k, N_ACTIONS) float32, values (k, N_VALUES)
        float32), the caller's to keep (module docstring). ValueError for arrays of the wrong shape or
        dtype, or a row with NaN/inf features or no legal id (the whole request fails); EvaluationError
        when the forward pass failed; EvaluatorClosed after ``aclose``."""
        ...

    async def aclose(self) -> None:
        """Stop: later calls raise, pending ones fail with a clear error."""
        ...


_F32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)


def check_request(features: object, legal: object, width: int | None, n_actions: int = N_ACTIONS) -> int:
    """The number of rows k of a request, after checking that ``features`` is a (k, width) float32
    array and ``legal`` a (k, n_actions) bool array (``width`` None: any width); ValueError naming the
    expected shape otherwise. Every request pays it: about 1 us (numpy's own dtypes are singletons,
    so ``is`` settles the usual case before ``==`` is asked)."""
    try:
        k, w = features.shape  # type: ignore[attr-defined]
        fd, ld = features.dtype, legal.dtype  # type: ignore[attr-defined]
        if (
            (fd is _F32 or fd == _F32) and (ld is _BOOL or ld == _BOOL) and (width is None or w == width)
            and legal.shape == (k, n_actions)  # type: ignore[attr-defined]
        ):  # fmt: skip
            return int(k)  # shape entries are ints already; int() tells mypy
    except (AttributeError, TypeError, ValueError):  # not an array, or not two-dimensional
        pass
    shape = getattr(features, "shape", None)
    if (
        shape is None or len(shape) != 2 or (width is not None and shape[1] != width)
        or getattr(features, "dtype", None) != _F32
    ):  # fmt: skip
        wanted = "width" if width is None else width
        raise ValueError(f"features are {_described(features)}: expected a (k, {wanted}) float32 array")
    raise ValueError(
        f"legal is {_described(legal)}: expected a ({shape[0]}, {n_actions}) bool array, True at each legal id"
    )


def _described(a: object) -> str:
    """'(3, 16) float64 array', or the type of what is not an array."""
    shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
    return f"a {shape} {dtype} array" if shape is not None and dtype is not None else f"a {type(a).__name__}"


def bad_rows(features: np.ndarray, legal: np.ndarray) -> dict[int, str]:
    """Row -> why, for the rows that cannot be evaluated: NaN or inf features, or no legal id.
    Vectorised over the whole array (about 0.06 us a row, against 1.5 us for one row at a time)."""
    bad: dict[int, str] = {}
    if not legal.any(axis=1).all():
        for r in np.flatnonzero(~legal.any(axis=1)).tolist():
            bad[r] = NO_LEGAL
    if not np.isfinite(features).all():
        for r in np.flatnonzero(~np.isfinite(features).all(axis=1)).tolist():
            bad[r] = f"{NOT_FINITE} (row of width {features.shape[1]})"
    return bad


def row_errors(bad: dict[int, str]) -> ValueError:
    """The ValueError of a request whose rows ``bad`` (row within the request -> why) failed."""
    return ValueError("; ".join(f"row {r}: {m}" for r, m in sorted(bad.items())))


class FreeEvaluator:
    """An evaluator that costs nothing: uniform priors over the legal ids, equal values ``value``.
    It measures the search-only ceiling and serves tests. It gives the event loop one turn per
    request, as a batcher does, so the games interleave instead of playing one after another
    (``yield_each`` False: never). width: the features' width it insists on (None: any)."""

    model_version = 0  # its answers never change

    def __init__(self, value: float = 0.5, *, width: int | None = None, yield_each: bool = True) -> None:
        self.value = value
        self.width = width
        self.yield_each = yield_each

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        k = check_request(features, legal, self.width)
        bad = bad_rows(features, legal)
        if bad:
            raise row_errors(bad)
        priors = legal.astype(np.float32)
        priors /= priors.sum(axis=1, keepdims=True)
        values = np.full((k, N_VALUES), self.value, dtype=np.float32)
        if self.yield_each:
            await asyncio.sleep(0)
        return priors, values

    async def aclose(self) -> None:
        return None
