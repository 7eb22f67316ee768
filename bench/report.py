"""What the sweep's numbers mean: advice computed from the data, summary.md, and the charts.

``advise(df)`` is a pure function of the results table (one row per point, the columns of
bench/sweep.py's ``derive``): it picks the fastest configuration of the scaling sweep and says, from
the numbers, whether batching pays against direct evaluation, whether the batches are too small (more
games), which of the search, the forward pass or the overhead bounds the recommended configuration
(its rounds/min against the two ceilings), and how long a training plan would take at the measured
rates. ``write_report`` writes summary.md and the PNG charts (matplotlib, Agg).

The bottleneck rule: at a rate R with a search-only ceiling S and an inference-only ceiling I, a
round costs 1/R of wall time of which the search alone would need 1/S and the forward pass alone
1/I; R/S and R/I are the shares of the time they explain. A share of at least ``near`` (0.7) names
that part (search-bound, inference-bound); otherwise the unexplained rest, 1 - R/S - R/I, is the
overhead (batching, the event loop, the GIL, the socket) and the run is overhead-bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.strategies import BATCHED, MULTI_PROCESS

__all__ = ["Advice", "advise", "write_report", "markdown_table", "draw_charts"]

UNBATCHED = ("direct", "processes")
ORDER = ("asyncio", "asyncio-thread", "direct", "threads", "processes", "processes+server", "asyncio-pool")
COLORS = {
    "asyncio": "tab:blue", "asyncio-thread": "tab:cyan", "direct": "tab:red", "threads": "tab:orange",
    "processes": "tab:brown", "processes+server": "tab:purple", "asyncio-pool": "tab:green", "free": "tab:gray",
}  # fmt: skip


@dataclass
class Advice:
    recommended: dict[str, Any] | None  # the fastest row of the scaling sweep
    bottleneck: str  # "search", "inference", "overhead" or "unknown"
    flags: set[str] = field(default_factory=set)  # machine-readable findings, for tests and tools
    lines: list[str] = field(default_factory=list)  # the advice, one sentence or two each
    training: list[dict[str, Any]] = field(default_factory=list)  # label, rounds_per_min, hours


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    err = df["error"].fillna("") if "error" in df else pd.Series("", index=df.index)
    return df[(err == "") & df["rounds_per_min"].notna() & (df["rounds_per_min"] > 0)]


def _best(rows: pd.DataFrame) -> pd.Series:
    return rows.loc[rows["rounds_per_min"].idxmax()]


def _best_pair(scal: pd.DataFrame, a: str, b: str) -> tuple[pd.Series, pd.Series, float] | None:
    """The best points of strategies ``a`` and ``b`` in the scaling sweep and a's rounds/min over
    b's; None when either was not measured."""
    rows_a, rows_b = scal[scal["strategy"] == a], scal[scal["strategy"] == b]
    if rows_a.empty or rows_b.empty:
        return None
    best_a, best_b = _best(rows_a), _best(rows_b)
    return best_a, best_b, best_a["rounds_per_min"] / best_b["rounds_per_min"]


def _at(row: pd.Series) -> str:
    c = int(row["concurrency"])
    return f"{row['strategy']} at {c} game{'s' if c != 1 else ''}"


def _games(c: float) -> str:
    return f"{int(c)} game{'s' if int(c) != 1 else ''}"


def _num(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def advise(
    df: pd.DataFrame,
    *,
    iterations: int = 500,
    rounds_per_iteration: int = 10_000,
    min_batch: float = 16.0,
    near: float = 0.7,
) -> Advice:
    """The advice the data supports; see the module docstring for the rules."""
    ok = _ok(df)
    scal = ok[(ok["sweep"] == "scaling") & (ok["strategy"] != "free")]
    if scal.empty:
        return Advice(None, "unknown", {"no_data"}, ["No point of the scaling sweep succeeded: nothing to advise."])
    best = _best(scal)
    a = Advice(best.to_dict(), "unknown")
    a.lines.append(
        f"Recommended configuration: **{best['strategy']} with {int(best['concurrency'])} concurrent games**"
        + (f" ({int(best['workers'])} processes)" if best["strategy"] in MULTI_PROCESS else "")
        + f": {_num(best['rounds_per_min'])} rounds/min, {_num(best['sims_per_s'])} simulations/s, "
        f"mean batch {best['mean_batch']:.1f} (measured at {best['setting']} search, {int(best['cards'])} cards)."
    )

    # Batching against direct evaluation.
    batched = scal[scal["strategy"].isin(BATCHED)]
    unbatched = scal[scal["strategy"].isin(UNBATCHED)]
    if not batched.empty and not unbatched.empty:
        bb, ub = _best(batched), _best(unbatched)
        if ub["rounds_per_min"] >= bb["rounds_per_min"]:
            a.flags.add("direct_beats_batching")
            a.lines.append(
                f"Batching is slower than direct evaluation here: the best unbatched run ({_at(ub)}, "
                f"{_num(ub['rounds_per_min'])} rounds/min) beats the best batched one ({_at(bb)}, "
                f"{_num(bb['rounds_per_min'])}); the batching costs more than the forward passes it saves."
            )
        else:
            a.flags.add("batching_pays")
            a.lines.append(
                f"Batching pays: {_at(bb)} runs {bb['rounds_per_min'] / ub['rounds_per_min']:.1f}x the best "
                f"unbatched run ({_at(ub)}, {_num(ub['rounds_per_min'])} rounds/min)."
            )

    # Batch size at the recommended configuration.
    if best["strategy"] in BATCHED and not math.isnan(best["mean_batch"]) and best["mean_batch"] < min_batch:
        same = scal[scal["strategy"] == best["strategy"]]
        higher = same[same["concurrency"] > best["concurrency"]]
        if higher.empty:
            a.flags.add("more_concurrency")
            a.lines.append(
                f"Too little batching: the mean batch is {best['mean_batch']:.1f} rows at "
                f"{int(best['concurrency'])} games, and throughput was still rising; run more games at once "
                f"(try {4 * int(best['concurrency'])}) so that each forward pass serves more rows."
            )
        else:
            h = _best(higher)
            a.flags.add("larger_batches_slower")
            a.lines.append(
                f"The mean batch is only {best['mean_batch']:.1f} rows, yet more games were slower "
                f"({int(h['concurrency'])} games: batch {h['mean_batch']:.1f}, {_num(h['rounds_per_min'])} "
                f"rounds/min): larger batches do not pay here, the cost is elsewhere."
            )

    # The bottleneck, from the ceilings.
    s, i = float(best.get("search_share", math.nan)), float(best.get("inference_share", math.nan))
    s_rpm, i_rpm = best.get("search_ceiling_rpm", math.nan), best.get("inference_ceiling_rpm", math.nan)
    if math.isnan(s) and math.isnan(i):
        a.lines.append("No ceiling was measured for the recommended configuration: no bottleneck named.")
    else:
        s0 = 0.0 if math.isnan(s) else s
        i0 = 0.0 if math.isnan(i) else i
        where = (
            f"achieved is {s0:.0%} of the search-only ceiling ({_num(s_rpm)} rounds/min with a free evaluator) and "
            f"{i0:.0%} of the inference-only ceiling ({_num(i_rpm)} rounds/min from the raw forward pass at batch "
            f"{int(best.get('batch_key', 1))})"
        )
        if s0 >= near and s0 >= i0:
            a.bottleneck = "search"
            cores = (
                f"each of the {int(best['workers'])} processes already runs its own search on a core of its own"
                if best["strategy"] == "asyncio-pool"
                else "or run it on more cores: one engine process per core (`blobnet selfplay --workers N`)"
            )
            a.lines.append(
                f"Search-bound: {where}. The tree search's Python is the cost: make each simulation leaner "
                f"(fewer allocations, cheaper rules steps), {cores}."
            )
        elif i0 >= near:
            a.bottleneck = "inference"
            a.lines.append(
                f"Inference-bound: {where}. The forward pass is the cost: a smaller network, bf16, "
                f"larger batches, or a GPU."
            )
        elif 1 - s0 - i0 >= max(s0, i0) or 1 - s0 - i0 > 0.1:
            a.bottleneck = "overhead"
            a.lines.append(
                f"Overhead-bound: {where}; the other {1 - s0 - i0:.0%} of the time is neither the search "
                f"nor the forward pass but what joins them (batching, the event loop, threads waiting on the "
                f"GIL, the socket)."
            )
        else:  # together they explain all the time (or more, where they overlap): no overhead to blame
            a.bottleneck = "search" if s0 >= i0 else "inference"
            a.lines.append(
                f"{'Search' if s0 >= i0 else 'Inference'}-bound, though no part dominates: {where}; together they "
                f"explain all the time, so the {'search' if s0 >= i0 else 'forward pass'} is the larger cost to cut."
            )
        if s0 + i0 > 1.0:
            if best["strategy"] in MULTI_PROCESS:
                why = "the processes run the search and the forward pass on several cores at once"
            elif best["strategy"] in ("asyncio-thread", "threads"):
                why = "the forward pass runs on another thread, overlapping the search (or the ceilings were noisy)"
            else:
                why = "one process cannot overlap them, so a ceiling was measured low (a busy machine?)"
            a.lines.append(f"The two shares add up to {s0 + i0:.0%}, more than the whole: {why}.")
    a.flags.add(f"{a.bottleneck}_bound")

    # Forward pass on a worker thread against the batcher's default mode ("auto": in-line, except a
    # batch that fills to max_batch while requesters still run).
    if pair := _best_pair(scal, "asyncio-thread", "asyncio"):
        bt, bi, r = pair
        a.flags.add("thread_faster" if r > 1 else "thread_slower")
        a.lines.append(
            f"Forward pass on a worker thread (mode thread): {r:.2f}x the batcher's default mode (auto: in-line "
            f"unless a batch fills up) at their best ({_num(bt['rounds_per_min'])} against "
            f"{_num(bi['rounds_per_min'])} rounds/min); keep {'mode thread' if r > 1 else 'the default mode'}."
        )

    # One engine per core (clients.pool) against one process.
    if pair := _best_pair(scal, "asyncio-pool", "asyncio"):
        bp, bs, r = pair
        a.flags.add("pool_faster" if r > 1 else "pool_slower")
        a.lines.append(
            f"One engine per core: {_at(bp)} in {int(bp['workers'])} processes runs {r:.2f}x one asyncio process "
            f"at its best ({_at(bs)}; {_num(bp['rounds_per_min'])} against {_num(bs['rounds_per_min'])} rounds/min)."
        )
        if best["strategy"] in ("asyncio", "asyncio-thread"):
            a.flags.add("use_one_worker")
            a.lines.append(
                "More processes did not pay here: run self-play in one process (`blobnet selfplay --workers 1`, "
                "`train.workers = 1`)."
            )
    if best["strategy"] == "asyncio-pool":
        w, c = int(best["workers"]), int(best["concurrency"])
        a.flags.add("use_workers")
        a.lines.append(
            f"Run self-play this way: `blobnet selfplay --workers {w} --concurrency {c}` (the default on a CPU is "
            f"one worker per core); in training set `train.workers = {w}` and `train.concurrency = {c}`. The "
            f"concurrency counts the games of every process together ({c // w} or so each)."
        )

    # Throughput against concurrency for the recommended strategy.
    same = scal[scal["strategy"] == best["strategy"]].sort_values("concurrency")
    if len(same) >= 2:
        top = same.iloc[-1]
        if top["concurrency"] > best["concurrency"] and top["rounds_per_min"] < 0.8 * best["rounds_per_min"]:
            a.flags.add("scaling_falls")
            a.lines.append(
                f"Throughput falls past {int(best['concurrency'])} games: at {int(top['concurrency'])} it is "
                f"{top['rounds_per_min'] / best['rounds_per_min']:.0%} of the peak (more live trees cost more "
                f"than the larger batches save); do not run more games than the peak."
            )

    # Processes: does a second core help?
    procs = scal[scal["strategy"] == "processes"].sort_values("workers")
    if len(procs) >= 2:
        one, many = procs.iloc[0], procs.iloc[-1]
        a.lines.append(
            f"Processes: {int(many['workers'])} workers run {many['rounds_per_min'] / one['rounds_per_min']:.2f}x "
            f"{int(one['workers'])} worker{'s' if one['workers'] > 1 else ''}."
        )

    # Search settings and hand sizes.
    search = _setting_rates(ok, best)
    if len(search) >= 2:
        parts = ", ".join(f"{k} {_num(v)}" for k, v in search.items())
        a.lines.append(f"Search settings at the recommended configuration (rounds/min): {parts}.")
    hands = _hand_rates(ok, best)
    if len(hands) >= 2:
        lo, hi = min(hands), max(hands)
        a.lines.append(
            f"Hand sizes: {_num(hands[lo])} rounds/min at {lo} card{'s' if lo > 1 else ''}, {_num(hands[hi])} at "
            f"{hi} cards ({hands[lo] / hands[hi]:.1f}x)."
        )

    # Training time.
    total = iterations * rounds_per_iteration
    plan = f"{iterations} iterations x {rounds_per_iteration:,} rounds"
    rates = {f"{k} search, {int(best['cards'])} cards": v for k, v in search.items()} or {
        f"{best['setting']} search, {int(best['cards'])} cards": best["rounds_per_min"]
    }
    for label, rpm in rates.items():
        a.training.append({"label": label, "rounds_per_min": rpm, "hours": total / rpm / 60.0})
    if len(hands) >= 2:
        minutes = sum(1.0 / v for v in hands.values()) / len(hands)  # minutes per round, hand sizes mixed evenly
        label = f"{best['setting']} search, hand sizes {min(hands)}-{max(hands)} mixed evenly"
        a.training.append({"label": label, "rounds_per_min": 1.0 / minutes, "hours": total * minutes / 60.0})
    main = next(t for t in a.training if t["label"].startswith(str(best["setting"])))
    a.lines.append(
        f"Training plan {plan} = {total:,} self-play rounds: about {_hours(main['hours'])} of self-play at "
        f"{_num(main['rounds_per_min'])} rounds/min ({main['label']}), learner time not included."
    )
    return a


def _setting_rates(ok: pd.DataFrame, best: pd.Series) -> dict[str, float]:
    """rounds/min of the recommended configuration per search setting (its own row for its setting)."""
    rows = ok[(ok["sweep"] == "search") & (ok["strategy"] == best["strategy"])]
    out = {str(r["setting"]): float(r["rounds_per_min"]) for _, r in rows.iterrows()}
    if out:
        out[str(best["setting"])] = float(best["rounds_per_min"])
    order = ["light", "medium", "heavy"]
    return {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else 9)}


def _hand_rates(ok: pd.DataFrame, best: pd.Series) -> dict[int, float]:
    rows = ok[(ok["sweep"] == "hands") & (ok["strategy"] == best["strategy"])]
    out = {int(r["cards"]): float(r["rounds_per_min"]) for _, r in rows.iterrows()}
    if out:
        out[int(best["cards"])] = float(best["rounds_per_min"])
    return dict(sorted(out.items()))


def _hours(h: float) -> str:
    return f"{h:,.1f} hours" if h < 48 else f"{h:,.0f} hours ({h / 24:,.1f} days)"


# ---- markdown -------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _strategies(df: pd.DataFrame) -> list[str]:
    present = set(df["strategy"])
    return [s for s in ORDER if s in present]


def _scaling_table(ok: pd.DataFrame, value: str) -> str:
    scal = ok[ok["sweep"] == "scaling"]
    concs = sorted(set(scal["concurrency"].astype(int)))
    rows = []
    for s in [*_strategies(scal), *(["free"] if value == "rounds_per_min" else [])]:
        sub = scal[scal["strategy"] == s]
        if sub.empty:
            continue
        by = {int(r["concurrency"]): r[value] for _, r in sub.iterrows()}
        label = "search-only ceiling (free evaluator)" if s == "free" else s
        rows.append([label, *[by.get(c, math.nan) for c in concs]])
    return markdown_table(["strategy \\ games", *map(str, concs)], rows)


def summary_markdown(df: pd.DataFrame, meta: dict[str, Any], advice: Advice, charts: list[Path]) -> str:
    ok = _ok(df)
    gpu = meta.get("gpu", "")
    out = [
        f"# Self-play benchmark, {meta.get('date', '')}",
        "",
        f"- commit `{meta.get('commit', '?')}`, sweep `{meta.get('mode', '?')}`, {meta.get('cpus', '?')} CPU cores, "
        f"Python {meta.get('python', '?')}, torch {meta.get('torch', '?')}, "
        f"network preset `{meta.get('preset', '?')}`, {meta.get('players', 4)} players",
        f"- GPU: {'no GPU' if str(gpu).startswith('no GPU') else gpu}",
    ]
    others = df["other_cores"].mean() if "other_cores" in df else math.nan
    if not math.isnan(others) and others > 0.25:
        out.append(
            f"- **the machine was shared**: other processes kept {others:.2f} cores busy on average during the "
            f"windows; every rate here is lower than on an idle machine"
        )
    out += ["", "## Advice", ""] + [f"- {line}" for line in advice.lines]
    if advice.training:
        plan = meta.get("plan", {})
        out += ["", f"## Training-time estimate ({plan.get('iterations', '?')} iterations x "
                    f"{plan.get('rounds_per_iteration', '?'):,} rounds, self-play only)", ""]  # fmt: skip
        out.append(markdown_table(
            ["configuration", "rounds/min", "hours"],
            [[t["label"], t["rounds_per_min"], round(t["hours"], 1)] for t in advice.training],
        ))  # fmt: skip
    out += ["", "## Rounds/min by strategy and concurrent games (scaling sweep)", ""]
    out.append(_scaling_table(ok, "rounds_per_min"))
    out += ["", "Mean batch (rows per forward pass):", "", _scaling_table(ok, "mean_batch")]
    if "rounds_per_cpu_min" in ok:
        out += ["", "Rounds per CPU-minute of the point's own processes (steadier than rounds/min when other jobs "
                "share the machine; multi-process strategies spend more CPU per round):", ""]  # fmt: skip
        out.append(_scaling_table(ok, "rounds_per_cpu_min"))
    rec = advice.recommended
    if rec is not None:
        sub = ok[(ok["sweep"] == "scaling") & (ok["strategy"] == rec["strategy"])].sort_values("concurrency")
        out += ["", f"## Achieved against the ceilings ({rec['strategy']})", ""]
        out.append(markdown_table(
            ["games", "achieved", "search-only", "inference-only", "search share", "inference share", "overhead"],
            [[int(r["concurrency"]), r["rounds_per_min"], r["search_ceiling_rpm"], r["inference_ceiling_rpm"],
              f"{r['search_share']:.0%}", f"{r['inference_share']:.0%}",
              f"{r['overhead_share']:.0%}" if r["overhead_share"] >= 0 else "overlap"]
             for _, r in sub.iterrows()],
        ))  # fmt: skip
    other = ok[ok["sweep"].isin(["search", "hands"])]
    if not other.empty:
        out += ["", "## Search settings and hand sizes (recommended configuration; free = search-only ceiling of one "
                "process)", ""]
        out.append(markdown_table(
            ["sweep", "strategy", "setting", "cards", "rounds/min", "sims/s", "mean batch"],
            [[r["sweep"], r["strategy"], f"{r['setting']} {int(r['dets'])}x{int(r['sims'])}", int(r["cards"]),
              r["rounds_per_min"], r["sims_per_s"], r["mean_batch"]] for _, r in other.iterrows()],
        ))  # fmt: skip
    out += ["", "## Every point", ""]
    out.append(markdown_table(
        ["sweep", "strategy", "games", "setting", "cards", "rounds/min", "sims/s", "evals/s", "batch mean",
         "p10-p90", "latency p50 ms", "p99 ms", "CPU cores", "others' cores", "peak RSS MB", "error"],
        [[r["sweep"], r["strategy"], int(r["concurrency"]), r["setting"], int(r["cards"]), r["rounds_per_min"],
          r["sims_per_s"], r["evals_per_s"], r["mean_batch"], f"{r['batch_p10']:g}-{r['batch_p90']:g}",
          r["latency_p50_ms"], r["latency_p99_ms"], r["cpu_cores"], r.get("other_cores", math.nan),
          r["peak_rss_mb"], r.get("error", "")]
         for _, r in df.iterrows()],
    ))  # fmt: skip
    gpu_line = (
        "no GPU: GPU utilisation and memory were not measured"
        if str(gpu).startswith("no GPU")
        else "GPU utilisation (mean %) and memory (peak MB) are in results.csv (gpu_util, gpu_mem_mb)"
    )
    out += ["", "## Notes", ""] + [f"- {c}" for c in meta.get("caps", [])] + [
        f"- {gpu_line}",
        "- rounds/min = 60 x simulations/s / (dets x sims x searched decisions per round); decisions per round "
        "from complete rounds with the free evaluator (meta.json: calibration). rounds_per_min_completed in "
        "results.csv counts the rounds that ended inside the window where at least 5 did.",
        "- rounds_per_cpu_min in results.csv: rounds per minute of CPU time of the point's own processes, "
        "steadier than the wall-clock rates when other jobs share the machine.",
        "- search-only ceiling: the same engine with clients.selfplay.FreeEvaluator (uniform priors, one loop "
        "turn per request); inference-only ceiling: the raw forward pass at the point's mean batch, converted "
        "with its evaluations per round.",
        "- each point: a fresh process, a warm-up, then a window of a few seconds; rates are least-squares slopes "
        "of the counters; CPU is the point's process tree; every child process runs with OMP_NUM_THREADS=1 and "
        "OMP_WAIT_POLICY=PASSIVE unless the caller's environment says otherwise (meta.json: torch_env).",
    ]
    if charts:
        out += ["", "## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts]
    return "\n".join(out) + "\n"


def write_report(df: pd.DataFrame, meta: dict[str, Any], out: Path, *, charts: bool = True) -> list[Path]:
    """summary.md and (unless ``charts`` is False) the PNG charts; returns their paths."""
    plan = meta.get("plan", {})
    advice = advise(
        df,
        iterations=int(plan.get("iterations", 500)),
        rounds_per_iteration=int(plan.get("rounds_per_iteration", 10_000)),
    )
    pngs = draw_charts(df, advice, out) if charts else []
    (out / "summary.md").write_text(summary_markdown(df, meta, advice, pngs))
    return [out / "summary.md", *pngs]


# ---- charts ------------------------------------------------------------------------------------


def draw_charts(df: pd.DataFrame, advice: Advice, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(df)
    scal = ok[ok["sweep"] == "scaling"]
    paths: list[Path] = []

    # 1. scaling: rounds/min and mean batch against concurrency
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for s in [*_strategies(scal), "free"]:
        sub = scal[scal["strategy"] == s].sort_values("concurrency")
        if sub.empty:
            continue
        style = dict(color=COLORS.get(s, "k"), marker="o", label="search-only ceiling (free)" if s == "free" else s)
        ax1.plot(sub["concurrency"], sub["rounds_per_min"], linestyle="--" if s == "free" else "-", **style)
        if s != "free":
            ax2.plot(sub["concurrency"], sub["mean_batch"], **style)
            ax2.fill_between(sub["concurrency"], sub["batch_p10"], sub["batch_p90"], color=style["color"], alpha=0.12)
    ax1.set(xscale="log", xlabel="concurrent games", ylabel="rounds/min", title="Throughput against concurrency")
    ax1.set_ylim(bottom=0)
    ax2.set(xscale="log", yscale="log", xlabel="concurrent games", ylabel="rows per forward pass",
            title="Mean batch (band: p10-p90)")  # fmt: skip
    for ax in (ax1, ax2):
        _games_axis(ax, scal)
        ax.legend(fontsize=8)
    paths.append(_save(fig, out / "scaling.png", plt))

    # 2. batching compared: best rounds/min per strategy; request latency
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    names, vals, colors, notes = [], [], [], []
    for s in _strategies(scal):
        sub = scal[scal["strategy"] == s]
        if sub.empty:
            continue
        b = _best(sub)
        names.append(s)
        vals.append(b["rounds_per_min"])
        colors.append(COLORS[s])
        notes.append(f"{_games(b['concurrency'])}\nbatch {b['mean_batch']:.0f}")
    bars = ax1.bar(names, vals, color=colors)
    for bar, note in zip(bars, notes):
        ax1.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    if vals:
        ax1.set_ylim(0, 1.18 * max(vals))
    ax1.set(ylabel="rounds/min at the best concurrency", title="Batching compared: each strategy at its best")
    ax1.tick_params(axis="x", labelrotation=20)
    for s in _strategies(scal):
        sub = scal[scal["strategy"] == s].sort_values("concurrency")
        ax2.plot(sub["concurrency"], sub["latency_p50_ms"], color=COLORS[s], marker="o", label=s)
        ax2.plot(sub["concurrency"], sub["latency_p99_ms"], color=COLORS[s], marker="x", linestyle=":")
    ax2.set(xscale="log", yscale="log", xlabel="concurrent games", ylabel="ms per evaluator request",
            title="Request latency: p50 (o, solid) and p99 (x, dotted)")  # fmt: skip
    _games_axis(ax2, scal)
    ax2.legend(fontsize=8)
    paths.append(_save(fig, out / "batching.png", plt))

    # 3. achieved against the two ceilings
    fig, ax = plt.subplots(figsize=(11, 5))
    shown = [advice.recommended["strategy"]] if advice.recommended else []
    if "asyncio" not in shown and not scal[scal["strategy"] == "asyncio"].empty:
        shown.append("asyncio")
    for s in shown:
        sub = scal[scal["strategy"] == s].sort_values("concurrency")
        c = COLORS[s]
        ax.plot(sub["concurrency"], sub["rounds_per_min"], color=c, marker="o", linewidth=2, label=f"{s}: achieved")
        ax.plot(sub["concurrency"], sub["search_ceiling_rpm"], color=c, linestyle="--", marker="^",
                label=f"{s}: search-only ceiling")  # fmt: skip
        ax.plot(sub["concurrency"], sub["inference_ceiling_rpm"], color=c, linestyle=":", marker="s",
                label=f"{s}: inference-only ceiling")  # fmt: skip
        both = 1.0 / (1.0 / sub["search_ceiling_rpm"] + 1.0 / sub["inference_ceiling_rpm"])
        ax.plot(sub["concurrency"], both, color=c, linestyle="-.", alpha=0.6, label=f"{s}: search + forward in series")
    ax.set(xscale="log", yscale="log", xlabel="concurrent games", ylabel="rounds/min",
           title=f"Achieved against the ceilings (bottleneck: {advice.bottleneck})")  # fmt: skip
    _games_axis(ax, scal)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    paths.append(_save(fig, out / "ceilings.png", plt))

    # 4. search settings and hand sizes
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    if advice.recommended is not None:
        rec = pd.Series(advice.recommended)
        achieved = _setting_rates(ok, rec)
        ceiling = _free_by(ok, rec, "search", "setting")
        if achieved:
            keys = list(achieved)
            xs = range(len(keys))
            ax1.bar([x - 0.2 for x in xs], [achieved[k] for k in keys], 0.4, color=COLORS[rec["strategy"]],
                    label=f"{rec['strategy']} at {int(rec['concurrency'])} games")  # fmt: skip
            ax1.bar([x + 0.2 for x in xs], [ceiling.get(k, math.nan) for k in keys], 0.4, color=COLORS["free"],
                    label="its search-only ceiling")  # fmt: skip
            ax1.set_xticks(list(xs), [f"{k}\n{_dets_sims(ok, k)}" for k in keys])
            ax1.legend(fontsize=8)
        hands = _hand_rates(ok, rec)
        if hands:
            hc = _free_by(ok, rec, "hands", "cards")
            ks = sorted(hands)
            ax2.plot(ks, [hands[k] for k in ks], color=COLORS[rec["strategy"]], marker="o", label=rec["strategy"])
            ax2.plot(ks, [hc.get(k, math.nan) for k in ks], color=COLORS["free"], marker="^", linestyle="--",
                     label="its search-only ceiling")  # fmt: skip
            ax2.set_yscale("log")
            _plain_y(ax2)
            ax2.set_xticks(ks)
            ax2.legend(fontsize=8)
    ax1.set(ylabel="rounds/min", title="Search setting (5 cards)")
    ax2.set(xlabel="cards per hand", ylabel="rounds/min", title="Hand size (medium search)")
    ax2.grid(True, which="both", alpha=0.3)
    paths.append(_save(fig, out / "settings.png", plt))
    return paths


def _games_axis(ax: Any, scal: pd.DataFrame) -> None:
    """Ticks at the measured concurrencies, written as plain numbers, on a log axis."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ticks = sorted(set(scal["concurrency"].astype(int)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    _plain_y(ax)
    ax.grid(True, which="major", alpha=0.3)


def _plain_y(ax: Any) -> None:
    """A log y axis labelled 1,000 rather than 10^3, minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax.get_yscale() == "log":
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _free_by(ok: pd.DataFrame, rec: pd.Series, sweep: str, key: str) -> dict[Any, float]:
    """Search-only ceilings of the recommended strategy per setting or hand size: each of its rows'
    own ``search_ceiling_rpm`` (scaled to its processes as ``derive`` does), its scaling row for its own value."""
    rows = ok[(ok["sweep"] == sweep) & (ok["strategy"] == rec["strategy"])]
    out = {(int(r[key]) if key == "cards" else r[key]): float(r["search_ceiling_rpm"]) for _, r in rows.iterrows()}
    out[int(rec[key]) if key == "cards" else rec[key]] = float(rec.get("search_ceiling_rpm", math.nan))
    return out


def _dets_sims(ok: pd.DataFrame, setting: str) -> str:
    rows = ok[ok["setting"] == setting]
    return "" if rows.empty else f"{int(rows.iloc[0]['dets'])}x{int(rows.iloc[0]['sims'])}"


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
