"""The sweep's PNG charts (matplotlib, Agg): ``CHARTS`` names each file and the function drawing it.

- scaling.png: rounds/min and the mean batch (band: p10-p90) against concurrent games, every strategy
  and the search-only ceiling;
- batching.png: each strategy at its best concurrency, and the request latency (p50, p99);
- ceilings.png: the recommended strategy (and "asyncio") against its two ceilings;
- settings.png: the recommended configuration per search setting and per hand size, with its
  search-only ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.advice import Advice, at_games, best_row, hand_rates, ok_rows, setting_rates
from bench.strategies import STRATEGIES

__all__ = ["CHARTS", "COLORS", "draw_charts", "strategies_in"]

COLORS = {
    "asyncio": "tab:blue",
    "asyncio-thread": "tab:cyan",
    "direct": "tab:red",
    "threads": "tab:orange",
    "processes": "tab:brown",
    "processes+server": "tab:purple",
    "asyncio-pool": "tab:green",
    "free": "tab:gray",
}


def strategies_in(df: pd.DataFrame) -> list[str]:
    """The strategies present in ``df``, in the order of ``bench.strategies.STRATEGIES``."""
    present = set(df["strategy"])
    return [s for s in STRATEGIES if s in present]


@dataclass(frozen=True)
class Chart:
    """What every chart reads."""

    ok: pd.DataFrame  # every point that ran
    scal: pd.DataFrame  # the scaling sweep's points, the free ceiling's included
    advice: Advice
    plt: Any  # matplotlib.pyplot
    ticker: Any  # matplotlib.ticker

    def rows(self, strategy: str) -> pd.DataFrame:
        """The scaling points of ``strategy``, by concurrency."""
        return self.scal[self.scal["strategy"] == strategy].sort_values("concurrency")

    def games_axis(self, ax: Any, ylabel: str, title: str, *, log_y: bool = True) -> None:
        """Concurrent games on a log x axis, ticked at the measured concurrencies as plain numbers."""
        yscale = "log" if log_y else "linear"
        ax.set(xscale="log", yscale=yscale, xlabel="concurrent games", ylabel=ylabel, title=title)
        ticks = sorted(set(self.scal["concurrency"].astype(int)))
        ax.xaxis.set_minor_locator(self.ticker.NullLocator())
        ax.xaxis.set_minor_formatter(self.ticker.NullFormatter())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        self.plain_y(ax)
        ax.grid(True, which="major", alpha=0.3)

    def plain_y(self, ax: Any) -> None:
        """A log y axis labelled 1,000 rather than 10^3, minor ticks unlabelled."""
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_locator(self.ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
            ax.yaxis.set_major_formatter(self.ticker.FuncFormatter(lambda v, _: f"{v:,.10g}"))
            ax.yaxis.set_minor_formatter(self.ticker.NullFormatter())


def scaling(c: Chart) -> Any:
    """Rounds/min and mean batch against concurrency."""
    fig, (ax1, ax2) = c.plt.subplots(1, 2, figsize=(13, 5))
    for s in [*strategies_in(c.scal), "free"]:
        sub = c.rows(s)
        if sub.empty:
            continue
        style = dict(color=COLORS.get(s, "k"), marker="o", label="search-only ceiling (free)" if s == "free" else s)
        ax1.plot(sub["concurrency"], sub["rounds_per_min"], linestyle="--" if s == "free" else "-", **style)
        if s != "free":
            ax2.plot(sub["concurrency"], sub["mean_batch"], **style)
            ax2.fill_between(sub["concurrency"], sub["batch_p10"], sub["batch_p90"], color=style["color"], alpha=0.12)
    c.games_axis(ax1, "rounds/min", "Throughput against concurrency", log_y=False)
    ax1.set_ylim(bottom=0)
    c.games_axis(ax2, "rows per forward pass", "Mean batch (band: p10-p90)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
    return fig


def batching(c: Chart) -> Any:
    """Best rounds/min per strategy; request latency."""
    fig, (ax1, ax2) = c.plt.subplots(1, 2, figsize=(13, 5))
    shown = strategies_in(c.scal)
    best = [best_row(c.rows(s)) for s in shown]
    vals = [b["rounds_per_min"] for b in best]
    bars = ax1.bar(shown, vals, color=[COLORS[s] for s in shown])
    for bar, b in zip(bars, best):
        note = f"{at_games(b['concurrency'])}\nbatch {b['mean_batch']:.0f}"
        ax1.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    if vals:
        ax1.set_ylim(0, 1.18 * max(vals))
    ax1.set(ylabel="rounds/min at the best concurrency", title="Batching compared: each strategy at its best")
    ax1.tick_params(axis="x", labelrotation=20)
    for s in shown:
        sub = c.rows(s)
        ax2.plot(sub["concurrency"], sub["latency_p50_ms"], color=COLORS[s], marker="o", label=s)
        ax2.plot(sub["concurrency"], sub["latency_p99_ms"], color=COLORS[s], marker="x", linestyle=":")
    c.games_axis(ax2, "ms per evaluator request", "Request latency: p50 (o, solid) and p99 (x, dotted)")
    ax2.legend(fontsize=8)
    return fig


CEILING_LINES = [  # (column, line style, marker, which ceiling)
    ("search_ceiling_rpm", "--", "^", "search-only"),
    ("inference_ceiling_rpm", ":", "s", "inference-only"),
]


def ceilings(c: Chart) -> Any:
    """Achieved against the two ceilings."""
    fig, ax = c.plt.subplots(figsize=(11, 5))
    shown = [c.advice.recommended["strategy"]] if c.advice.recommended else []
    if "asyncio" not in shown and not c.rows("asyncio").empty:
        shown.append("asyncio")
    for s in shown:
        sub, color = c.rows(s), COLORS[s]
        x = sub["concurrency"]
        ax.plot(x, sub["rounds_per_min"], color=color, marker="o", linewidth=2, label=f"{s}: achieved")
        for column, line, marker, what in CEILING_LINES:
            ax.plot(x, sub[column], color=color, linestyle=line, marker=marker, label=f"{s}: {what} ceiling")
        both = 1.0 / (1.0 / sub["search_ceiling_rpm"] + 1.0 / sub["inference_ceiling_rpm"])
        ax.plot(x, both, color=color, linestyle="-.", alpha=0.6, label=f"{s}: search + forward in series")
    c.games_axis(ax, "rounds/min", f"Achieved against the ceilings (bottleneck: {c.advice.bottleneck})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


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


def settings(c: Chart) -> Any:
    """The recommended configuration per search setting and per hand size."""
    fig, (ax1, ax2) = c.plt.subplots(1, 2, figsize=(13, 5))
    if c.advice.recommended is not None:
        rec = pd.Series(c.advice.recommended)
        color, ceiling_color = COLORS[rec["strategy"]], COLORS["free"]
        achieved = setting_rates(c.ok, rec)
        if achieved:
            ceiling = _free_by(c.ok, rec, "search", "setting")
            keys = list(achieved)
            xs = range(len(keys))
            label = f"{rec['strategy']} at {int(rec['concurrency'])} games"
            ax1.bar([x - 0.2 for x in xs], [achieved[k] for k in keys], 0.4, color=color, label=label)
            tops = [ceiling.get(k, math.nan) for k in keys]
            ax1.bar([x + 0.2 for x in xs], tops, 0.4, color=ceiling_color, label="its search-only ceiling")
            ax1.set_xticks(list(xs), [f"{k}\n{_dets_sims(c.ok, k)}" for k in keys])
            ax1.legend(fontsize=8)
        hands = hand_rates(c.ok, rec)
        if hands:
            hc = _free_by(c.ok, rec, "hands", "cards")
            ks = sorted(hands)
            ax2.plot(ks, [hands[k] for k in ks], color=color, marker="o", label=rec["strategy"])
            tops = [hc.get(k, math.nan) for k in ks]
            ax2.plot(ks, tops, color=ceiling_color, marker="^", linestyle="--", label="its search-only ceiling")
            ax2.set_yscale("log")
            c.plain_y(ax2)
            ax2.set_xticks(ks)
            ax2.legend(fontsize=8)
    ax1.set(ylabel="rounds/min", title="Search setting (5 cards)")
    ax2.set(xlabel="cards per hand", ylabel="rounds/min", title="Hand size (medium search)")
    ax2.grid(True, which="both", alpha=0.3)
    return fig


CHARTS: list[tuple[str, Callable[[Chart], Any]]] = [
    ("scaling.png", scaling),
    ("batching.png", batching),
    ("ceilings.png", ceilings),
    ("settings.png", settings),
]


def draw_charts(df: pd.DataFrame, advice: Advice, out: Path) -> list[Path]:
    """Every chart of ``CHARTS`` under ``out``; returns their paths."""
    # matplotlib is imported here, not at the top: it is slow to load and only the charts need it,
    # and the Agg backend (no display) must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ok = ok_rows(df)
    chart = Chart(ok, ok[ok["sweep"] == "scaling"], advice, plt, ticker)
    paths = []
    for name, draw in CHARTS:
        fig = draw(chart)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths
