"""Ratings: the statistics of a mirrored match, its confidence interval, the promotion gate, and Elo.

Matches (``clients.match.play_match`` plays them) are mirrored: every deal is played twice and
both sides hold every hand, so the two plays of a deal are one independent unit and the interval
of the difference comes from the per-deal paired differences (Student's t). Scores are round
scores in points (``10 + bid`` for an exact bid, else 0); ``mean_score_a`` is the mean round score
of one seat held by side a. ``MatchTally`` adds up a match's rounds and makes its ``MatchResult``.

Elo: scores are expected scores in 0..1 (1 = always beats the other, 0.5 = even); ratings are
Elo points, where a difference of ``d`` means an expected score of ``1 / (1 + 10 ** (-d / 400))``.
``EloLadder`` records results between named players (``"iter_3"``, ``"heuristic"``, ``"random"``)
and fits Bradley-Terry strengths ``p_i = 10 ** (R_i / 400)`` by the minorization-maximization
iteration of Hunter (2004), "MM algorithms for generalized Bradley-Terry models": ties count as
half a win each way, so a result is a fractional score with a weight (how many comparisons it
rests on). Ratings are anchored: ``random`` is 0 when it is on the ladder, else the first player.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from blobnet.files import atomic_write_bytes

__all__ = [
    "JSON_KEYS", "MatchResult", "MatchTally", "t_cdf", "t_quantile", "lower_bound", "gate", "format_report",
    "MAX_ELO", "elo_from_score", "score_from_elo", "LadderResult", "EloLadder",
]  # fmt: skip

JSON_KEYS = ("rounds", "mean_score_a", "mean_score_b", "diff", "ci95", "made_rate_a", "made_rate_b", "elo_diff")


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of a mirrored match of side a against side b. Scores in points per round."""

    rounds: int  # rounds played: twice the number of deals
    mean_score_a: float  # mean round score of one seat held by a
    mean_score_b: float
    diff: float  # mean_score_a - mean_score_b
    ci95: tuple[float, float]  # 95% confidence interval of diff (t over per-deal paired differences)
    made_rate_a: float  # fraction of a's bids made exactly
    made_rate_b: float
    elo_diff: float  # Elo of a over b from seat-against-seat comparisons within each round
    deals: int  # mirrored deals: the independent units
    se: float  # standard error of diff (points per round); inf with a single deal
    pair_score: float  # a's expected score against b seat against seat (win 1, tie 0.5)
    comparisons: int  # seat pairs (an a seat, a b seat) compared in all
    seconds: float = 0.0  # wall time of the match

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object: exactly the keys of ``JSON_KEYS``; an infinite bound is null."""
        lo, hi = self.ci95
        return {
            "rounds": self.rounds,
            "mean_score_a": self.mean_score_a,
            "mean_score_b": self.mean_score_b,
            "diff": self.diff,
            "ci95": [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None],
            "made_rate_a": self.made_rate_a,
            "made_rate_b": self.made_rate_b,
            "elo_diff": self.elo_diff,
        }


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom, by the finite series for whole
    ``df`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2:
        total, term = 0.0, math.cos(theta)
        for k in range(3, df, 2):  # cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ...
            total += term
            term *= c2 * (k - 1) / k
        if df > 1:
            total += term
        a = (2 / math.pi) * (theta + (s * total if df > 1 else 0.0))
    else:
        total, term = 0.0, 1.0
        for k in range(2, df + 1, 2):  # 1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...
            total += term
            term *= c2 * (k - 1) / k
        a = s * total
    return 0.5 * (1.0 + a)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``p`` in 0.5..1, ``df`` >= 1).

    Bisection on ``t_cdf`` up to 1000 degrees of freedom; past that the Cornish-Fisher expansion
    around the normal quantile (A&S 26.7.5), which is then exact to 1e-9."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p={p}: give a probability in 0.5..1 (exclusive of 1)")
    if df < 1:
        raise ValueError(f"df={df}: at least 1 degree of freedom")
    if df > 1000:
        z = NormalDist().inv_cdf(p)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def lower_bound(result: MatchResult, confidence: float) -> float:
    """One-sided lower confidence bound of ``result.diff`` at ``confidence`` (points per round)."""
    if result.deals < 2:
        return -math.inf
    return result.diff - t_quantile(confidence, result.deals - 1) * result.se


def gate(result: MatchResult, margin: float = 0.0, confidence: float = 0.95) -> bool:
    """Promote side a only when the one-sided lower ``confidence`` bound of its lead over b
    exceeds ``margin`` (points per round)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence={confidence}: give a probability in 0.5..1 (exclusive of 1)")
    return lower_bound(result, confidence) > margin


class MatchTally:
    """Adds up the rounds of a mirrored match of ``deals`` deals at tables of ``players``, in any order."""

    def __init__(self, deals: int, players: int) -> None:
        self.deals = deals
        self.players = players
        self.score_a = [0.0] * deals  # per deal, summed over both plays: a's seats' scores
        self.score_b = [0.0] * deals
        self.made = [0, 0]  # exact bids of a, of b
        self.pair_points = 0.0  # a seat against b seat: win 1, tie 0.5
        self.comparisons = 0

    def add(self, deal: int, b_seats: Sequence[bool], scores: Sequence[int], made: Sequence[bool]) -> None:
        """One finished round of deal ``deal``: per seat, whether b holds it, its score, whether it made its bid."""
        for s, (is_b, pts) in enumerate(zip(b_seats, scores)):
            if is_b:
                self.score_b[deal] += pts
            else:
                self.score_a[deal] += pts
            self.made[is_b] += made[s]
        for s, pts in enumerate(scores):
            if b_seats[s]:
                continue
            for t, other in enumerate(scores):
                if b_seats[t]:
                    self.pair_points += 1.0 if pts > other else 0.5 if pts == other else 0.0
                    self.comparisons += 1

    def merge(self, other: MatchTally) -> None:
        """Add the rounds ``other`` tallied: another share of the same match's deals, played
        elsewhere (``clients.pool``, ``clients.raypool``). Every count is a sum of whole points or
        half comparisons, so the merged tally is exactly the one a single process would have made
        from the same rounds, in any order."""
        if (other.deals, other.players) != (self.deals, self.players):
            raise ValueError(
                f"a tally of {other.deals} deals at {other.players} players cannot join one of "
                f"{self.deals} deals at {self.players} players: they are not shares of one match"
            )
        self.score_a = [x + y for x, y in zip(self.score_a, other.score_a)]
        self.score_b = [x + y for x, y in zip(self.score_b, other.score_b)]
        self.made = [self.made[0] + other.made[0], self.made[1] + other.made[1]]
        self.pair_points += other.pair_points
        self.comparisons += other.comparisons

    def result(self, seconds: float = 0.0) -> MatchResult:
        """The match's ``MatchResult`` once every deal has been played twice."""
        deals, players = self.deals, self.players
        seats_per_side = deals * players  # over a deal's two plays each side holds every seat once
        diffs = [(x - y) / players for x, y in zip(self.score_a, self.score_b)]
        diff = sum(diffs) / deals
        if deals > 1:
            var = sum((d - diff) ** 2 for d in diffs) / (deals - 1)
            se = math.sqrt(var / deals)
            half = t_quantile(0.975, deals - 1) * se
            ci95 = (diff - half, diff + half)
        else:
            se = math.inf
            ci95 = (-math.inf, math.inf)
        pair_score = self.pair_points / self.comparisons
        return MatchResult(
            rounds=2 * deals,
            mean_score_a=sum(self.score_a) / seats_per_side,
            mean_score_b=sum(self.score_b) / seats_per_side,
            diff=diff,
            ci95=ci95,
            made_rate_a=self.made[0] / seats_per_side,
            made_rate_b=self.made[1] / seats_per_side,
            elo_diff=elo_from_score(pair_score, self.comparisons),
            deals=deals,
            se=se,
            pair_score=pair_score,
            comparisons=self.comparisons,
            seconds=seconds,
        )


def format_report(result: MatchResult, *, a: str, b: str, players: int, cards: int) -> str:
    """A few readable lines about ``result``; ``a`` and ``b`` name the sides."""
    lo, hi = result.ci95
    verdict = "a is better" if lo > 0 else "b is better" if hi < 0 else "no significant difference"
    return "\n".join(
        [
            f"arena: a = {a}, b = {b}; {players} players, {cards} cards; {result.rounds} rounds "
            f"({result.deals} mirrored deals) in {result.seconds:.1f} s",
            f"  mean round score per seat: a {result.mean_score_a:.3f}, b {result.mean_score_b:.3f} points",
            f"  difference a - b: {result.diff:+.3f} points per round, 95% CI [{lo:+.3f}, {hi:+.3f}]: {verdict}",
            f"  exact bids: a {result.made_rate_a:.1%}, b {result.made_rate_b:.1%}",
            f"  Elo of a over b (seat against seat, ties half): {result.elo_diff:+.0f} "
            f"(expected score {result.pair_score:.3f} over {result.comparisons} comparisons)",
        ]
    )


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
        comparisons (default 1), or a ``MatchResult`` of a against b, which counts its
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
