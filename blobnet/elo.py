"""Elo arithmetic and a ladder of ratings fitted to match results.

Scores are expected scores in 0..1 (1 = always beats the other, 0.5 = even); ratings are Elo
points, where a difference of ``d`` means an expected score of ``1 / (1 + 10 ** (-d / 400))``.

``EloLadder`` records results between named players (``"iter_3"``, ``"heuristic"``, ``"random"``)
and fits Bradley-Terry strengths ``p_i = 10 ** (R_i / 400)`` by the minorization-maximization
iteration of Hunter (2004), "MM algorithms for generalized Bradley-Terry models": ties count as
half a win each way, so a result is a fractional score with a weight (how many comparisons it
rests on). Ratings are anchored: ``random`` is 0 when it is on the ladder, else the first player.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_ELO", "elo_from_score", "score_from_elo", "LadderResult", "EloLadder"]

# An expected score of 0 or 1 is an infinite rating difference; it is held to this many points
# (an expected score of about 0.001 / 0.999), which no real match between our players reaches.
MAX_ELO = 1200.0


def elo_from_score(score: float, comparisons: int | None = None) -> float:
    """Elo difference from an expected score ``score`` in 0..1: ``400 * log10(E / (1 - E))``.

    ``comparisons``, when given, is how many comparisons ``score`` averages: a clean sweep is then
    read as half a comparison short of one (``E`` is held inside ``[0.5/n, 1 - 0.5/n]``), so the
    rating says how much the data can show rather than infinity. The result is within
    ``+-MAX_ELO``."""
    if not 0.0 <= score <= 1.0 or math.isnan(score):
        raise ValueError(f"score={score!r}: an expected score lies in 0..1")
    if comparisons is not None:
        if comparisons < 1:
            raise ValueError(f"comparisons={comparisons}: at least 1 comparison is needed for a rating")
        eps = 0.5 / comparisons
        score = min(max(score, eps), 1.0 - eps)
    lim = score_from_elo(MAX_ELO)
    score = min(max(score, 1.0 - lim), lim)
    return 400.0 * math.log10(score / (1.0 - score))


def score_from_elo(diff: float) -> float:
    """Expected score of the side ``diff`` Elo points stronger: ``1 / (1 + 10 ** (-diff / 400))``."""
    return 1.0 / (1.0 + 10.0 ** (-diff / 400.0))


@dataclass(frozen=True, slots=True)
class LadderResult:
    """One recorded result: ``a`` scored ``score`` (0..1) against ``b`` over ``weight`` comparisons."""

    a: str
    b: str
    score: float
    weight: float


class EloLadder:
    """Ratings of named players fitted to every recorded result (Bradley-Terry, MM iterations).

    ``prior`` adds, for every player, that many comparisons drawn against a virtual player rated 0:
    it keeps a player who won or lost everything finite and players never compared with each
    other near each other. With results weighted by rounds (hundreds), 1 comparison is negligible.
    """

    def __init__(self, *, anchor: str = "random", prior: float = 1.0) -> None:
        if prior <= 0:
            raise ValueError(f"prior={prior}: the virtual draws must have a positive weight")
        self.anchor = anchor
        self.prior = prior
        self.players: list[str] = []  # in the order first seen
        self.results: list[LadderResult] = []

    def add_player(self, name: str) -> None:
        """Put ``name`` on the ladder (results add their players themselves)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"player name {name!r}: give a non-empty string")
        if name not in self.players:
            self.players.append(name)

    def record(self, a: str, b: str, result: Any, weight: float | None = None) -> None:
        """``a`` scored ``result`` against ``b``: an expected score in 0..1 (0.5 is even) over ``weight``
        comparisons (default 1), or a ``blobnet.arena.MatchResult`` of a against b, which counts its
        seat-against-seat score (``pair_score``) weighted by its rounds."""
        if hasattr(result, "pair_score"):
            score, w = float(result.pair_score), float(result.rounds if weight is None else weight)
        else:
            score, w = float(result), 1.0 if weight is None else float(weight)
        if a == b:
            raise ValueError(f"a result of {a!r} against itself says nothing about ratings")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score={score!r} for {a!r} against {b!r}: an expected score lies in 0..1")
        if not w > 0:
            raise ValueError(f"weight={w!r} for {a!r} against {b!r}: give a positive number of comparisons")
        self.add_player(a)
        self.add_player(b)
        self.results.append(LadderResult(a, b, score, w))

    def ratings(self, *, iterations: int = 2000, tol: float = 1e-10) -> dict[str, float]:
        """Elo rating of every player, anchored (module docstring); ``{}`` for an empty ladder."""
        names = self.players
        if not names:
            return {}
        k = len(names)
        index = {n: i for i, n in enumerate(names)}
        wins = [0.5 * self.prior] * k  # half of the virtual draws are wins
        games: dict[tuple[int, int], float] = {}
        for r in self.results:
            i, j = index[r.a], index[r.b]
            wins[i] += r.score * r.weight
            wins[j] += (1.0 - r.score) * r.weight
            key = (i, j) if i < j else (j, i)
            games[key] = games.get(key, 0.0) + r.weight
        pairs = list(games.items())
        p = [1.0] * k
        for _ in range(iterations):
            denom = [self.prior / (pi + 1.0) for pi in p]  # the virtual player's strength is 1
            for (i, j), n in pairs:
                d = n / (p[i] + p[j])
                denom[i] += d
                denom[j] += d
            new = [w / d for w, d in zip(wins, denom)]
            change = max(abs(math.log(a / b)) for a, b in zip(new, p))
            p = new
            if change < tol:
                break
        ref = p[index[self.anchor]] if self.anchor in index else p[0]
        return {n: 400.0 * math.log10(p[i] / ref) for n, i in index.items()}

    # -- saving ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: anchor, prior, players and every result."""
        return {
            "anchor": self.anchor,
            "prior": self.prior,
            "players": list(self.players),
            "results": [{"a": r.a, "b": r.b, "score": r.score, "weight": r.weight} for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EloLadder:
        """The ladder ``to_dict`` wrote; ValueError naming the field that is missing or wrong."""
        try:
            ladder = cls(anchor=str(data.get("anchor", "random")), prior=float(data.get("prior", 1.0)))
            for name in data.get("players", []):
                ladder.add_player(name)
            for r in data["results"]:
                ladder.record(r["a"], r["b"], float(r["score"]), float(r["weight"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an Elo ladder: missing or malformed field {e}") from None
        return ladder

    def save(self, path: str | Path) -> None:
        """Write the ladder as JSON to ``path`` (atomically), e.g. ``runs/x/elo.json``."""
        from blobnet.checkpoint import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> EloLadder:
        """Read a ladder written by ``save``; ValueError saying what is wrong with the file."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"Elo ladder {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
