"""The replay buffer: the most recent self-play examples, kept on disk with the run.

Each iteration's examples are one segment file ``replay/iter_NNNNNN.npz`` written atomically
once. The buffer is the newest ``capacity`` examples over the segments up to an iteration, so a
checkpoint only has to name its iteration to restore the buffer exactly, and a run killed at any
moment finds either a whole segment or none. Features are stored as float16: every feature is a
0/1 flag or a small ratio, and half precision halves the memory and the disk.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blobnet.cards import N_ACTIONS
from blobnet.checkpoint import atomic_write_bytes
from blobnet.encode import WIDTH, value_scale
from blobnet.rules import Round

__all__ = ["Examples", "ReplayBuffer"]

_SEGMENT = re.compile(r"iter_(\d{6})\.npz$")


@dataclass(slots=True)
class Examples:
    """Training examples, one row per searched decision.

    features (n, WIDTH) float32; legal (n, 70) bool; policy (n, 70) float32, the root visit
    shares; value (n, 8) float32, the round's final scores of every seat relative to the acting
    seat (index 0 = the acting seat), divided by ``value_scale(cards)``."""

    features: np.ndarray
    legal: np.ndarray
    policy: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    @staticmethod
    def from_round(
        r: Round,
        features: list[np.ndarray],
        legals: list[list[int]],
        policies: list[tuple[list[int], list[float]]],
        seats: list[int],
    ) -> Examples:
        """One finished round's examples: per decision its features, legal ids, (actions, target
        shares) and the acting seat; the value targets come from the round's scores."""
        scores = r.scores()
        n, k = r.players, len(features)
        ex = Examples(
            np.stack(features) if k else np.zeros((0, WIDTH), np.float32),
            np.zeros((k, N_ACTIONS), bool),
            np.zeros((k, N_ACTIONS), np.float32),
            np.zeros((k, 8), np.float32),
        )
        scale = value_scale(r.cards)
        for j in range(k):
            ex.legal[j, legals[j]] = True
            ex.policy[j, policies[j][0]] = policies[j][1]
            ex.value[j, :n] = [scores[(seats[j] + rel) % n] / scale for rel in range(n)]
        return ex

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        if not parts:
            return Examples(
                np.zeros((0, WIDTH), np.float32),
                np.zeros((0, N_ACTIONS), bool),
                np.zeros((0, N_ACTIONS), np.float32),
                np.zeros((0, 8), np.float32),
            )
        return Examples(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("features", "legal", "policy", "value"))
        )


class ReplayBuffer:
    """The newest ``capacity`` examples; ``sample`` draws minibatches with the caller's rng."""

    def __init__(self, folder: str | Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity={capacity}: keep at least 1 example")
        self.folder = Path(folder)
        self.capacity = capacity
        self._parts: list[tuple[int, Examples]] = []  # (iteration, examples), oldest first

    def __len__(self) -> int:
        """Examples the learner draws from: the newest ``capacity`` (whole segments are kept, so the
        files may hold a few more)."""
        return min(self._held(), self.capacity)

    def _held(self) -> int:
        return sum(len(e) for _, e in self._parts)

    def add(self, iteration: int, examples: Examples) -> None:
        """Save ``examples`` as iteration's segment and add them, dropping the oldest beyond capacity."""
        buf = io.BytesIO()
        np.savez(
            buf,
            features=examples.features.astype(np.float16),
            legal=examples.legal,
            policy=examples.policy,
            value=examples.value,
        )
        atomic_write_bytes(self.folder / f"iter_{iteration:06d}.npz", buf.getvalue())
        self._append(iteration, examples)

    def _append(self, iteration: int, examples: Examples) -> None:
        self._parts.append((iteration, examples))
        while len(self._parts) > 1 and self._held() - len(self._parts[0][1]) >= self.capacity:
            self._parts.pop(0)

    def restore(self, upto: int) -> None:
        """Rebuild the buffer from the segments of iterations ``<= upto``; later ones (from an
        iteration that was interrupted) are deleted."""
        self._parts = []
        segments = []
        for path in sorted(self.folder.glob("iter_*.npz")):
            m = _SEGMENT.search(path.name)
            if not m:
                continue
            it = int(m.group(1))
            if it > upto:
                path.unlink()
            else:
                segments.append((it, path))
        kept = []
        total = 0
        for it, path in reversed(segments):  # newest first, until the capacity is covered
            if total >= self.capacity:
                break
            with np.load(path) as z:
                ex = Examples(z["features"].astype(np.float32), z["legal"], z["policy"], z["value"])
            kept.append((it, ex))
            total += len(ex)
        for it, ex in reversed(kept):
            self._append(it, ex)

    def prune(self) -> None:
        """Delete segment files no longer in the buffer."""
        live = {it for it, _ in self._parts}
        for path in self.folder.glob("iter_*.npz"):
            m = _SEGMENT.search(path.name)
            if m and int(m.group(1)) not in live:
                path.unlink()

    def arrays(self) -> Examples:
        """The buffer's newest ``capacity`` examples as one Examples."""
        ex = Examples.concat([e for _, e in self._parts])
        if len(ex) > self.capacity:
            cut = len(ex) - self.capacity
            ex = Examples(ex.features[cut:], ex.legal[cut:], ex.policy[cut:], ex.value[cut:])
        return ex
