"""What the sweep's numbers mean: advice computed from the data.

``advise(df)`` is a pure function of the results table (one row per point, the columns of
bench/sweep.py's ``derive``): it picks the fastest configuration of the scaling sweep, then asks each
piece of advice in ``ADVICE`` in turn what the numbers say: whether batching pays against direct
evaluation, whether the batches are too small (more games), which of the search, the forward pass or
the overhead bounds the recommended configuration (its rounds/min against the two ceilings), whether a
forward thread or more processes pay, how the rate moves with games, search settings, hand sizes and precision,
and how long a training plan would take at the measured rates. A piece returns its lines (none when
the data do not bear on it) and may set ``flags``, the machine-readable findings.

The bottleneck rule: at a rate R with a search-only ceiling S and an inference-only ceiling I, a
round costs 1/R of wall time of which the search alone would need 1/S and the forward pass alone
1/I; R/S and R/I are the shares of the time they explain. A share of at least ``near`` (0.7) names
that part (search-bound, inference-bound); otherwise the unexplained rest, 1 - R/S - R/I, is the
overhead (batching, the event loop, the GIL, the socket) and the run is overhead-bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.point import MULTI_PROCESS, UNBATCHED
from bench.strategies import BATCHED

__all__ = ["Advice", "Facts", "ADVICE", "advise", "ok_rows", "best_row", "setting_rates", "hand_rates", "at_games"]


@dataclass
class Advice:
    recommended: dict[str, Any] | None  # the fastest row of the scaling sweep
    bottleneck: str  # "search", "inference", "overhead" or "unknown"
    flags: set[str] = field(default_factory=set)  # machine-readable findings, for tests and tools
    lines: list[str] = field(default_factory=list)  # the advice, one sentence or two each
    training: list[dict[str, Any]] = field(default_factory=list)  # label, rounds_per_min, hours


@dataclass(frozen=True)
class Facts:
    """What every piece of advice reads."""

    ok: pd.DataFrame  # every point that ran
    scal: pd.DataFrame  # the scaling sweep's points of the strategies (not the free ceiling)
    best: pd.Series  # the fastest of them: the recommended configuration
    iterations: int  # the training plan
    rounds_per_iteration: int
    min_batch: float  # rows per forward pass below which the batches are too small
    near: float  # the share of a ceiling that names the bottleneck


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The points that ran and measured a rate."""
    err = df["error"].fillna("") if "error" in df else pd.Series("", index=df.index)
    return df[(err == "") & df["rounds_per_min"].notna() & (df["rounds_per_min"] > 0)]


def best_row(rows: pd.DataFrame) -> pd.Series:
    return rows.loc[rows["rounds_per_min"].idxmax()]


def _best_of(scal: pd.DataFrame, strategy: str) -> pd.Series | None:
    rows = scal[scal["strategy"] == strategy]
    return None if rows.empty else best_row(rows)


def at_games(c: float, strategy: str = "") -> str:
    """ "16 games", or "asyncio at 16 games" with a strategy."""
    games = f"{int(c)} game{'s' if int(c) != 1 else ''}"
    return f"{strategy} at {games}" if strategy else games


def _at(row: pd.Series) -> str:
    return at_games(row["concurrency"], row["strategy"])


def _num(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def _hours(h: float) -> str:
    return f"{h:,.1f} hours" if h < 48 else f"{h:,.0f} hours ({h / 24:,.1f} days)"


def setting_rates(ok: pd.DataFrame, best: pd.Series) -> dict[str, float]:
    """rounds/min of the recommended configuration per search setting (its own row for its setting)."""
    rows = ok[(ok["sweep"] == "search") & (ok["strategy"] == best["strategy"])]
    out = {str(r["setting"]): float(r["rounds_per_min"]) for _, r in rows.iterrows()}
    if out:
        out[str(best["setting"])] = float(best["rounds_per_min"])
    order = ["light", "medium", "heavy"]
    return {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else 9)}


def hand_rates(ok: pd.DataFrame, best: pd.Series) -> dict[int, float]:
    """rounds/min of the recommended configuration per hand size (its own row for its hand size)."""
    rows = ok[(ok["sweep"] == "hands") & (ok["strategy"] == best["strategy"])]
    out = {int(r["cards"]): float(r["rounds_per_min"]) for _, r in rows.iterrows()}
    if out:
        out[int(best["cards"])] = float(best["rounds_per_min"])
    return dict(sorted(out.items()))


def _shares(best: pd.Series) -> tuple[float, float] | None:
    """The shares of the time the search and the forward pass explain (0 where unmeasured); None
    when neither ceiling was measured."""
    s, i = float(best.get("search_share", math.nan)), float(best.get("inference_share", math.nan))
    if math.isnan(s) and math.isnan(i):
        return None
    return 0.0 if math.isnan(s) else s, 0.0 if math.isnan(i) else i


Piece = Callable[[Facts, Advice], list[str]]


def recommendation(f: Facts, a: Advice) -> list[str]:
    b = f.best
    procs = f" ({int(b['workers'])} processes)" if b["strategy"] in MULTI_PROCESS else ""
    return [
        f"Recommended configuration: **{b['strategy']} with {int(b['concurrency'])} concurrent games**{procs}: "
        f"{_num(b['rounds_per_min'])} rounds/min, {_num(b['sims_per_s'])} simulations/s, mean batch "
        f"{b['mean_batch']:.1f} (measured at {b['setting']} search, {int(b['cards'])} cards)."
    ]


def batching(f: Facts, a: Advice) -> list[str]:
    """Batching against direct evaluation."""
    batched = f.scal[f.scal["strategy"].isin(BATCHED)]
    unbatched = f.scal[f.scal["strategy"].isin(UNBATCHED)]
    if batched.empty or unbatched.empty:
        return []
    bb, ub = best_row(batched), best_row(unbatched)
    if ub["rounds_per_min"] >= bb["rounds_per_min"]:
        a.flags.add("direct_beats_batching")
        return [
            f"Batching is slower than direct evaluation here: the best unbatched run ({_at(ub)}, "
            f"{_num(ub['rounds_per_min'])} rounds/min) beats the best batched one ({_at(bb)}, "
            f"{_num(bb['rounds_per_min'])}); the batching costs more than the forward passes it saves."
        ]
    a.flags.add("batching_pays")
    return [
        f"Batching pays: {_at(bb)} runs {bb['rounds_per_min'] / ub['rounds_per_min']:.1f}x the best "
        f"unbatched run ({_at(ub)}, {_num(ub['rounds_per_min'])} rounds/min)."
    ]


def batch_size(f: Facts, a: Advice) -> list[str]:
    """The batch size at the recommended configuration."""
    b = f.best
    if b["strategy"] not in BATCHED or math.isnan(b["mean_batch"]) or b["mean_batch"] >= f.min_batch:
        return []
    same = f.scal[f.scal["strategy"] == b["strategy"]]
    higher = same[same["concurrency"] > b["concurrency"]]
    if higher.empty:
        a.flags.add("more_concurrency")
        return [
            f"Too little batching: the mean batch is {b['mean_batch']:.1f} rows at {int(b['concurrency'])} games, "
            f"and throughput was still rising; run more games at once (try {4 * int(b['concurrency'])}) so that "
            f"each forward pass serves more rows."
        ]
    h = best_row(higher)
    a.flags.add("larger_batches_slower")
    return [
        f"The mean batch is only {b['mean_batch']:.1f} rows, yet more games were slower "
        f"({int(h['concurrency'])} games: batch {h['mean_batch']:.1f}, {_num(h['rounds_per_min'])} "
        f"rounds/min): larger batches do not pay here, the cost is elsewhere."
    ]


def bottleneck(f: Facts, a: Advice) -> list[str]:
    """Which part bounds the recommended configuration, from the two ceilings (sets ``bottleneck``)."""
    b = f.best
    shares = _shares(b)
    if shares is None:
        a.flags.add(f"{a.bottleneck}_bound")
        return ["No ceiling was measured for the recommended configuration: no bottleneck named."]
    s, i = shares
    where = (
        f"achieved is {s:.0%} of the search-only ceiling ({_num(b.get('search_ceiling_rpm', math.nan))} rounds/min "
        f"with a free evaluator) and {i:.0%} of the inference-only ceiling "
        f"({_num(b.get('inference_ceiling_rpm', math.nan))} rounds/min from the raw forward pass at batch "
        f"{int(b.get('batch_key', 1))})"
    )
    rest = 1 - s - i
    if s >= f.near and s >= i:
        a.bottleneck = "search"
        cores = (
            f"each of the {int(b['workers'])} processes already runs its own search on a core of its own"
            if b["strategy"] == "asyncio-pool"
            else "or run it on more cores: one engine process per core (`blobnet selfplay --workers N`)"
        )
        line = (
            f"Search-bound: {where}. The tree search's Python is the cost: make each simulation leaner "
            f"(fewer allocations, cheaper rules steps), {cores}."
        )
    elif i >= f.near:
        a.bottleneck = "inference"
        line = (
            f"Inference-bound: {where}. The forward pass is the cost: a smaller network, bf16, larger batches, "
            f"or a GPU."
        )
    elif rest >= max(s, i) or rest > 0.1:
        a.bottleneck = "overhead"
        line = (
            f"Overhead-bound: {where}; the other {rest:.0%} of the time is neither the search nor the forward pass "
            f"but what joins them (batching, the event loop, threads waiting on the GIL, the socket)."
        )
    else:  # together they explain all the time (or more, where they overlap): no overhead to blame
        a.bottleneck = "search" if s >= i else "inference"
        line = (
            f"{'Search' if s >= i else 'Inference'}-bound, though no part dominates: {where}; together they explain "
            f"all the time, so the {'search' if s >= i else 'forward pass'} is the larger cost to cut."
        )
    a.flags.add(f"{a.bottleneck}_bound")
    return [line]


def overlap(f: Facts, a: Advice) -> list[str]:
    """Why the two shares can add up to more than the whole."""
    shares = _shares(f.best)
    if shares is None or sum(shares) <= 1.0:
        return []
    strategy = f.best["strategy"]
    if strategy in MULTI_PROCESS:
        why = "the processes run the search and the forward pass on several cores at once"
    elif strategy in ("asyncio-thread", "threads"):
        why = "the forward pass runs on another thread, overlapping the search (or the ceilings were noisy)"
    else:
        why = "one process cannot overlap them, so a ceiling was measured low (a busy machine?)"
    return [f"The two shares add up to {sum(shares):.0%}, more than the whole: {why}."]


def thread_mode(f: Facts, a: Advice) -> list[str]:
    """The forward pass on a worker thread against the batcher's default mode ("auto": in-line,
    except a batch that fills to max_batch while requesters still run)."""
    bt, bi = _best_of(f.scal, "asyncio-thread"), _best_of(f.scal, "asyncio")
    if bt is None or bi is None:
        return []
    r = bt["rounds_per_min"] / bi["rounds_per_min"]
    a.flags.add("thread_faster" if r > 1 else "thread_slower")
    return [
        f"Forward pass on a worker thread (mode thread): {r:.2f}x the batcher's default mode (auto: in-line "
        f"unless a batch fills up) at their best ({_num(bt['rounds_per_min'])} against "
        f"{_num(bi['rounds_per_min'])} rounds/min); keep {'mode thread' if r > 1 else 'the default mode'}."
    ]


def one_engine_per_core(f: Facts, a: Advice) -> list[str]:
    """``clients.pool`` (an engine per core) against one process."""
    bp, bs = _best_of(f.scal, "asyncio-pool"), _best_of(f.scal, "asyncio")
    if bp is None or bs is None:
        return []
    r = bp["rounds_per_min"] / bs["rounds_per_min"]
    a.flags.add("pool_faster" if r > 1 else "pool_slower")
    lines = [
        f"One engine per core: {_at(bp)} in {int(bp['workers'])} processes runs {r:.2f}x one asyncio process "
        f"at its best ({_at(bs)}; {_num(bp['rounds_per_min'])} against {_num(bs['rounds_per_min'])} rounds/min)."
    ]
    if f.best["strategy"] in ("asyncio", "asyncio-thread"):
        a.flags.add("use_one_worker")
        lines.append(
            "More processes did not pay here: run self-play in one process (`blobnet selfplay --workers 1`, "
            "`train.workers = 1`)."
        )
    return lines


def workers_to_run(f: Facts, a: Advice) -> list[str]:
    """The command for a recommended pool."""
    if f.best["strategy"] != "asyncio-pool":
        return []
    w, c = int(f.best["workers"]), int(f.best["concurrency"])
    a.flags.add("use_workers")
    return [
        f"Run self-play this way: `blobnet selfplay --workers {w} --concurrency {c}` (the default on a CPU is "
        f"one worker per core); in training set `train.workers = {w}` and `train.concurrency = {c}`. The "
        f"concurrency counts the games of every process together ({c // w} or so each)."
    ]


def scaling(f: Facts, a: Advice) -> list[str]:
    """Throughput against concurrency for the recommended strategy."""
    b = f.best
    same = f.scal[f.scal["strategy"] == b["strategy"]].sort_values("concurrency")
    if len(same) < 2:
        return []
    top = same.iloc[-1]
    if top["concurrency"] <= b["concurrency"] or top["rounds_per_min"] >= 0.8 * b["rounds_per_min"]:
        return []
    a.flags.add("scaling_falls")
    return [
        f"Throughput falls past {int(b['concurrency'])} games: at {int(top['concurrency'])} it is "
        f"{top['rounds_per_min'] / b['rounds_per_min']:.0%} of the peak (more live trees cost more than the "
        f"larger batches save); do not run more games than the peak."
    ]


def processes(f: Facts, a: Advice) -> list[str]:
    """Does a second core help the predecessor's processes?"""
    procs = f.scal[f.scal["strategy"] == "processes"].sort_values("workers")
    if len(procs) < 2:
        return []
    one, many = procs.iloc[0], procs.iloc[-1]
    return [
        f"Processes: {int(many['workers'])} workers run {many['rounds_per_min'] / one['rounds_per_min']:.2f}x "
        f"{int(one['workers'])} worker{'s' if one['workers'] > 1 else ''}."
    ]


def search_settings(f: Facts, a: Advice) -> list[str]:
    rates = setting_rates(f.ok, f.best)
    if len(rates) < 2:
        return []
    parts = ", ".join(f"{k} {_num(v)}" for k, v in rates.items())
    return [f"Search settings at the recommended configuration (rounds/min): {parts}."]


def hand_sizes(f: Facts, a: Advice) -> list[str]:
    hands = hand_rates(f.ok, f.best)
    if len(hands) < 2:
        return []
    lo, hi = min(hands), max(hands)
    return [
        f"Hand sizes: {_num(hands[lo])} rounds/min at {lo} card{'s' if lo > 1 else ''}, {_num(hands[hi])} at "
        f"{hi} cards ({hands[lo] / hands[hi]:.1f}x)."
    ]


def precision(f: Facts, a: Advice) -> list[str]:
    """Does a lower precision pay at the recommended configuration? Each lower-precision point of the
    precision sweep against that sweep's float32 point, measured just before it with the same
    timing (not against the scaling sweep's point, measured minutes earlier). (flags ``DTYPE_pays``)"""
    rows = f.ok[(f.ok["sweep"] == "precision") & (f.ok["strategy"] == f.best["strategy"])]
    base = rows[rows["dtype"] == "float32"]
    if base.empty:
        return []
    float32 = base.iloc[0]["rounds_per_min"]
    out = []
    for _, r in rows[rows["dtype"] != "float32"].iterrows():
        x = r["rounds_per_min"] / float32
        head = (
            f"In {r['dtype']} the recommended configuration runs {_num(r['rounds_per_min'])} rounds/min, {x:.2f}x "
            f"float32 measured beside it ({_num(float32)})"
        )
        if x >= 1.05:
            a.flags.add(f"{r['dtype']}_pays")
            out.append(
                f"{head}: this CPU computes it faster at these batch sizes. Its answers are rounded (not within "
                f"the 1e-4 of float32 the default is held to), so float32 stays the default; to use it, `network.dtype "
                f'= "bfloat16"` in a config, `--dtype bfloat16` for `blobnet selfplay`.'
            )
        else:
            out.append(f"{head}: no gain on this CPU at these batch sizes; keep float32.")
    return out


def training_time(f: Facts, a: Advice) -> list[str]:
    """Hours of self-play for the training plan at the measured rates (sets ``training``)."""
    b = f.best
    total = f.iterations * f.rounds_per_iteration
    cards = int(b["cards"])
    rates = {f"{k} search, {cards} cards": v for k, v in setting_rates(f.ok, b).items()}
    for label, rpm in (rates or {f"{b['setting']} search, {cards} cards": b["rounds_per_min"]}).items():
        a.training.append({"label": label, "rounds_per_min": rpm, "hours": total / rpm / 60.0})
    hands = hand_rates(f.ok, b)
    if len(hands) >= 2:
        minutes = sum(1.0 / v for v in hands.values()) / len(hands)  # minutes per round, hand sizes mixed evenly
        label = f"{b['setting']} search, hand sizes {min(hands)}-{max(hands)} mixed evenly"
        a.training.append({"label": label, "rounds_per_min": 1.0 / minutes, "hours": total * minutes / 60.0})
    main = next(t for t in a.training if t["label"].startswith(str(b["setting"])))
    return [
        f"Training plan {f.iterations} iterations x {f.rounds_per_iteration:,} rounds = {total:,} self-play rounds: "
        f"about {_hours(main['hours'])} of self-play at {_num(main['rounds_per_min'])} rounds/min "
        f"({main['label']}), learner time not included."
    ]


ADVICE: list[Piece] = [
    recommendation,
    batching,
    batch_size,
    bottleneck,
    overlap,
    thread_mode,
    one_engine_per_core,
    workers_to_run,
    scaling,
    processes,
    search_settings,
    hand_sizes,
    precision,
    training_time,
]


def advise(
    df: pd.DataFrame,
    *,
    iterations: int = 500,
    rounds_per_iteration: int = 10_000,
    min_batch: float = 16.0,
    near: float = 0.7,
) -> Advice:
    """The advice the data supports; see the module docstring for the rules."""
    ok = ok_rows(df)
    scal = ok[(ok["sweep"] == "scaling") & (ok["strategy"] != "free")]
    if scal.empty:
        return Advice(None, "unknown", {"no_data"}, ["No point of the scaling sweep succeeded: nothing to advise."])
    best = best_row(scal)
    facts = Facts(ok, scal, best, iterations, rounds_per_iteration, min_batch, near)
    a = Advice(best.to_dict(), "unknown")
    for piece in ADVICE:
        a.lines += piece(facts, a)
    return a
