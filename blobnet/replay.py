"""The replay buffer: the most recent self-play examples, kept on disk with the run.

Each iteration's examples are one segment file ``replay/iter_NNNNNN.npz`` written atomically
once. The buffer is the newest ``capacity`` examples over the segments up to an iteration, so a
checkpoint only has to name its iteration to restore the buffer exactly, and a run killed at any
moment finds either a whole segment or none.

The buffer keeps rows compact (``PackedExamples``), in memory and on disk: features and legal
masks as ``blobnet.compact`` packs them (a bit per column, the scalar fields as float32: 267 bytes
against 2,686), exact, unpacked only for the minibatch a learner step draws (``take``). An example
is then 587 bytes instead of 3,006 (its policy target, 70 float32, is most of the rest): the 2
million rows of configs/gpu.toml take 1.2 GB, not 6. A segment written before (features as
float16 and legal masks as bools) still loads: its rows are packed as they are read.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.compact import BIT_BYTES, LEGAL_BYTES, N_SCALARS, PackedRows, pack_rows, unpack_rows
from blobnet.encode import WIDTH, value_scale
from blobnet.features import encode_state
from blobnet.files import atomic_write_bytes
from blobnet.position import pack
from blobnet.rules import Round

__all__ = ["Examples", "PackedExamples", "ReplayBuffer", "RoundRecord"]

_SEGMENT = re.compile(r"iter_(\d{6})\.npz$")


@dataclass(slots=True)
class Examples:
    """Training examples, two rows per searched decision (``RoundRecord``): the acting seat's, and
    the same position seen by another seat, a value-only row.

    features (n, WIDTH) float32; legal (n, N_ACTIONS) bool; policy (n, N_ACTIONS) float32, the
    search's policy target (``search.policy_target``; all 0 in a value-only row); value (n,
    N_VALUES) float32, the round's final scores of every seat relative to the viewing seat (index
    0 = the viewing seat), divided by ``value_scale(cards)``; value_mask (n, N_VALUES) bool, True
    for the seats at the table (the padding seats past the table's size carry no target)."""

    features: np.ndarray
    legal: np.ndarray
    policy: np.ndarray
    value: np.ndarray
    value_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    @staticmethod
    def empty(k: int = 0) -> Examples:
        """``k`` rows of zeros (no legal id, no target)."""
        return Examples(
            np.zeros((k, WIDTH), np.float32),
            np.zeros((k, N_ACTIONS), bool),
            np.zeros((k, N_ACTIONS), np.float32),
            np.zeros((k, N_VALUES), np.float32),
            np.zeros((k, N_VALUES), bool),
        )

    def take(self, index: Any) -> Examples:
        """The rows ``index`` selects (an index array or a slice), every field alike. (Not
        ``dataclasses.astuple``: it deep-copies every array first, the whole buffer at each step.)"""
        return Examples(*(getattr(self, f.name)[index] for f in fields(self)))

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
        ex = Examples.empty(k)
        if k:
            ex.features[:] = np.stack(features)
        ex.value_mask[:, :n] = True
        scale = value_scale(r.cards)
        for j in range(k):
            ex.legal[j, legals[j]] = True
            ex.policy[j, policies[j][0]] = policies[j][1]
            ex.value[j, :n] = [scores[(seats[j] + rel) % n] / scale for rel in range(n)]
        return ex

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        if not parts:
            return Examples.empty()
        return Examples(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Examples)))


@dataclass(slots=True)
class PackedExamples:
    """``Examples`` with features and legal masks packed (``blobnet.compact``): rows, n of them;
    policy, value and value_mask as in ``Examples``."""

    rows: PackedRows
    policy: np.ndarray
    value: np.ndarray
    value_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.policy)

    @staticmethod
    def pack(ex: Examples) -> PackedExamples:
        """``ex`` packed; ValueError naming a row that is not an encoded position (a flag column
        holding anything but 0 or 1, a scalar that is not finite)."""
        rows = PackedRows.empty(len(ex))
        pack_rows(ex.features, ex.legal, rows, need_legal=False)
        return PackedExamples(rows, ex.policy, ex.value, ex.value_mask)

    def take(self, index: Any) -> Examples:
        """The rows ``index`` selects (an index array or a slice), unpacked: a learner's minibatch."""
        rows = self.rows[index]
        features = np.empty((len(rows), WIDTH), np.float32)
        legal = np.empty((len(rows), N_ACTIONS), np.bool_)
        unpack_rows(rows, features, legal)
        return Examples(features, legal, self.policy[index], self.value[index], self.value_mask[index])

    def cut(self, start: int) -> PackedExamples:
        """The rows from ``start`` on (views)."""
        return PackedExamples(self.rows[start:], self.policy[start:], self.value[start:], self.value_mask[start:])

    @staticmethod
    def concat(parts: list[PackedExamples]) -> PackedExamples:
        if not parts:
            return PackedExamples.pack(Examples.empty())
        rows = PackedRows(*(np.concatenate([getattr(p.rows, k) for p in parts]) for k in ("bits", "scalars", "legal")))
        return PackedExamples(
            rows, *(np.concatenate([getattr(p, k) for p in parts]) for k in ("policy", "value", "value_mask"))
        )


class RoundRecord:
    """One round's examples as its decisions are made. Each decision adds the acting seat's row
    (features, policy target) and a value-only row: the same position seen by another seat, in
    turn each of the others, because the search values a seat's moves from its own view of
    positions where another seat acts (``blobnet.search``)."""

    def __init__(self) -> None:
        self.features: list[np.ndarray] = []
        self.legals: list[list[int]] = []
        self.policies: list[tuple[list[int], list[float]]] = []
        self.seats: list[int] = []

    def add(self, r: Round, features: np.ndarray, actions: list[int], shares: list[float]) -> None:
        """The decision of the seat to act in ``r`` (before its move): its root ``features`` and
        the target ``shares`` over the legal ``actions``."""
        seat: int = r.to_play  # type: ignore[assignment]
        n = r.players
        onlooker = (seat + 1 + len(self.seats) // 2 % (n - 1)) % n  # len(seats) // 2: decisions so far
        row = np.empty(WIDTH, np.float32)
        encode_state(pack(r), onlooker, row)  # the compiled encoder: encode_rounds' numbers, in half the time
        # the onlooker's row keeps the acting seat's legal ids only so its (unused) logits stay finite
        self.features += (features, row)
        self.legals += (actions, actions)
        self.policies += ((actions, shares), (actions, [0.0] * len(actions)))
        self.seats += (seat, onlooker)

    def examples(self, r: Round) -> Examples:
        """The examples, once ``r`` is over."""
        return Examples.from_round(r, self.features, self.legals, self.policies, self.seats)


class ReplayBuffer:
    """The newest ``capacity`` examples; ``sample`` draws minibatches with the caller's rng."""

    def __init__(self, folder: str | Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity={capacity}: keep at least 1 example")
        self.folder = Path(folder)
        self.capacity = capacity
        self._parts: list[tuple[int, PackedExamples]] = []  # (iteration, examples), oldest first

    def __len__(self) -> int:
        """Examples the learner draws from: the newest ``capacity`` (whole segments are kept, so the
        files may hold a few more)."""
        return min(self._held(), self.capacity)

    def _held(self) -> int:
        return sum(len(e) for _, e in self._parts)

    def add(self, iteration: int, examples: Examples) -> None:
        """Save ``examples`` as iteration's segment and add them, dropping the oldest beyond capacity.
        ValueError (before anything is written) for rows that are not encoded positions."""
        packed = PackedExamples.pack(examples)
        buf = io.BytesIO()
        r = packed.rows
        np.savez(
            buf, bits=r.bits, scalars=r.scalars, legal_bits=r.legal, policy=packed.policy, value=packed.value,
            value_mask=packed.value_mask,
        )  # fmt: skip
        atomic_write_bytes(self.folder / f"iter_{iteration:06d}.npz", buf.getvalue())
        self._append(iteration, packed)

    def _append(self, iteration: int, examples: PackedExamples) -> None:
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
            ex = _read_segment(path)
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

    def arrays(self) -> PackedExamples:
        """The buffer's newest ``capacity`` examples, packed (``take`` unpacks a minibatch)."""
        ex = PackedExamples.concat([e for _, e in self._parts])
        if len(ex) > self.capacity:
            ex = ex.cut(len(ex) - self.capacity)
        return ex


_PACKED = ("bits", "scalars", "legal_bits", "policy", "value", "value_mask")  # a segment's arrays
_PLAIN = tuple(f.name for f in fields(Examples))  # those of a segment written before rows were packed


def _read_segment(path: Path) -> PackedExamples:
    """One segment file, as ``ReplayBuffer.add`` writes it or as it wrote it before rows were packed
    (features float16, legal masks bool: packed now); ValueError naming what does not fit."""
    with np.load(path) as z:
        if set(_PACKED) <= set(z.files):
            rows = PackedRows(z["bits"], z["scalars"], z["legal_bits"])
            shapes = (rows.bits.shape[1:], rows.scalars.shape[1:], rows.legal.shape[1:])
            if shapes != ((BIT_BYTES,), (N_SCALARS,), (LEGAL_BYTES,)) or len(rows) != len(z["policy"]):
                raise ValueError(f"replay segment {path}: packed rows of shapes {shapes}, written by another version")
            return PackedExamples(rows, z["policy"], z["value"], z["value_mask"])
        missing = [k for k in _PLAIN if k not in z.files]
        if missing:
            raise ValueError(
                f"replay segment {path} holds {', '.join(sorted(z.files))}: neither packed rows "
                f"({', '.join(_PACKED)}) nor the earlier plain ones (it lacks {', '.join(missing)})"
            )
        ex = Examples(**{k: z[k] for k in _PLAIN})
    if ex.features.shape[1:] != (WIDTH,) or ex.legal.shape[1:] != (N_ACTIONS,):
        raise ValueError(
            f"replay segment {path}: rows of {ex.features.shape[1:]} features and {ex.legal.shape[1:]} legal ids, "
            f"this version's are ({WIDTH},) and ({N_ACTIONS},): written by another version"
        )
    ex.features = ex.features.astype(np.float32)
    try:
        return PackedExamples.pack(ex)
    except ValueError as e:
        raise ValueError(f"replay segment {path}: {e}") from e
