"""summary.md: the sweep's advice (bench/advice.py), its tables and its notes; ``write_report``
writes it beside the PNG charts (bench/charts.py).

``SECTIONS`` are the parts of summary.md in order, each one function of the results table, the run's
meta.json and the advice, returning its lines (none when the data have nothing for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.advice import Advice, advise, ok_rows
from bench.charts import draw_charts, strategies_in

__all__ = ["write_report", "summary_markdown", "markdown_table", "SECTIONS"]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats as 1,234 from 100 up, else 3 significant digits; NaN as an empty cell."""

    def cell(x: Any) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Report:
    """What every section reads."""

    df: pd.DataFrame  # every point
    ok: pd.DataFrame  # the points that ran
    meta: dict[str, Any]
    advice: Advice
    charts: list[Path]

    @property
    def no_gpu(self) -> bool:
        return str(self.meta.get("gpu", "")).startswith("no GPU")


def _scaling_table(ok: pd.DataFrame, value: str) -> str:
    """``value`` of every strategy (and, for rounds/min, the free ceiling) at every concurrency."""
    scal = ok[ok["sweep"] == "scaling"]
    concs = sorted(set(scal["concurrency"].astype(int)))
    rows = []
    for s in [*strategies_in(scal), *(["free"] if value == "rounds_per_min" else [])]:
        sub = scal[scal["strategy"] == s]
        if sub.empty:
            continue
        by = {int(r["concurrency"]): r[value] for _, r in sub.iterrows()}
        label = "search-only ceiling (free evaluator)" if s == "free" else s
        rows.append([label, *[by.get(c, math.nan) for c in concs]])
    return markdown_table(["strategy \\ games", *map(str, concs)], rows)


def _header(r: Report) -> list[str]:
    m = r.meta
    out = [
        f"# Self-play benchmark, {m.get('date', '')}",
        "",
        f"- commit `{m.get('commit', '?')}`, sweep `{m.get('mode', '?')}`, {m.get('cpus', '?')} CPU cores, "
        f"Python {m.get('python', '?')}, torch {m.get('torch', '?')}, "
        f"network preset `{m.get('preset', '?')}`, {m.get('players', 4)} players",
        f"- GPU: {'no GPU' if r.no_gpu else m.get('gpu', '')}",
    ]
    others = r.df["other_cores"].mean() if "other_cores" in r.df else math.nan
    if not math.isnan(others) and others > 0.25:
        out.append(
            f"- **the machine was shared**: other processes kept {others:.2f} cores busy on average during the "
            f"windows; every rate here is lower than on an idle machine"
        )
    return out


def _advice(r: Report) -> list[str]:
    return ["", "## Advice", ""] + [f"- {line}" for line in r.advice.lines]


def _training(r: Report) -> list[str]:
    if not r.advice.training:
        return []
    plan = r.meta.get("plan", {})
    title = (
        f"## Training-time estimate ({plan.get('iterations', '?')} iterations x "
        f"{plan.get('rounds_per_iteration', '?'):,} rounds, self-play only)"
    )
    rows = [[t["label"], t["rounds_per_min"], round(t["hours"], 1)] for t in r.advice.training]
    return ["", title, "", markdown_table(["configuration", "rounds/min", "hours"], rows)]


def _scaling(r: Report) -> list[str]:
    out = ["", "## Rounds/min by strategy and concurrent games (scaling sweep)", ""]
    out += [_scaling_table(r.ok, "rounds_per_min"), "", "Mean batch (rows per forward pass):", ""]
    out.append(_scaling_table(r.ok, "mean_batch"))
    if "rounds_per_cpu_min" in r.ok:
        out += [
            "",
            "Rounds per CPU-minute of the point's own processes (steadier than rounds/min when other jobs "
            "share the machine; multi-process strategies spend more CPU per round):",
            "",
            _scaling_table(r.ok, "rounds_per_cpu_min"),
        ]
    return out


def _ceilings(r: Report) -> list[str]:
    rec = r.advice.recommended
    if rec is None:
        return []
    ok = r.ok
    sub = ok[(ok["sweep"] == "scaling") & (ok["strategy"] == rec["strategy"])].sort_values("concurrency")
    head = ["games", "achieved", "search-only", "inference-only", "search share", "inference share", "overhead"]
    rows = [
        [
            int(p["concurrency"]),
            p["rounds_per_min"],
            p["search_ceiling_rpm"],
            p["inference_ceiling_rpm"],
            f"{p['search_share']:.0%}",
            f"{p['inference_share']:.0%}",
            f"{p['overhead_share']:.0%}" if p["overhead_share"] >= 0 else "overlap",
        ]
        for _, p in sub.iterrows()
    ]
    return ["", f"## Achieved against the ceilings ({rec['strategy']})", "", markdown_table(head, rows)]


def _other_sweeps(r: Report) -> list[str]:
    other = r.ok[r.ok["sweep"].isin(["search", "hands", "precision"])]
    if other.empty:
        return []
    title = "## Search settings, hand sizes, precision (recommended configuration; free: one process's search alone)"
    head = ["sweep", "strategy", "setting", "cards", "dtype", "rounds/min", "sims/s", "mean batch"]
    rows = [
        [
            p["sweep"],
            p["strategy"],
            f"{p['setting']} {int(p['dets'])}x{int(p['sims'])}",
            int(p["cards"]),
            p.get("dtype", "float32"),
            p["rounds_per_min"],
            p["sims_per_s"],
            p["mean_batch"],
        ]
        for _, p in other.iterrows()
    ]
    return ["", title, "", markdown_table(head, rows)]


# The "every point" table: (column, its value in a row of results.csv).
EVERY_POINT: list[tuple[str, Callable[[pd.Series], Any]]] = [
    ("sweep", lambda p: p["sweep"]),
    ("strategy", lambda p: p["strategy"]),
    ("games", lambda p: int(p["concurrency"])),
    ("setting", lambda p: p["setting"]),
    ("cards", lambda p: int(p["cards"])),
    ("dtype", lambda p: p.get("dtype", "float32")),
    ("rounds/min", lambda p: p["rounds_per_min"]),
    ("sims/s", lambda p: p["sims_per_s"]),
    ("evals/s", lambda p: p["evals_per_s"]),
    ("batch mean", lambda p: p["mean_batch"]),
    ("p10-p90", lambda p: f"{p['batch_p10']:g}-{p['batch_p90']:g}"),
    ("latency p50 ms", lambda p: p["latency_p50_ms"]),
    ("p99 ms", lambda p: p["latency_p99_ms"]),
    ("CPU cores", lambda p: p["cpu_cores"]),
    ("others' cores", lambda p: p.get("other_cores", math.nan)),
    ("peak RSS MB", lambda p: p["peak_rss_mb"]),
    ("error", lambda p: p.get("error", "")),
]


def _every_point(r: Report) -> list[str]:
    rows = [[value(p) for _, value in EVERY_POINT] for _, p in r.df.iterrows()]
    return ["", "## Every point", "", markdown_table([name for name, _ in EVERY_POINT], rows)]


NOTES = [
    "rounds/min = 60 x simulations/s / (dets x sims x searched decisions per round); decisions per round "
    "from complete rounds with the free evaluator (meta.json: calibration). rounds_per_min_completed in "
    "results.csv counts the rounds that ended inside the window where at least 5 did.",
    "rounds_per_cpu_min in results.csv: rounds per minute of CPU time of the point's own processes, "
    "steadier than the wall-clock rates when other jobs share the machine.",
    "search-only ceiling: the same engine with blobnet.evaluator.FreeEvaluator (uniform priors, one loop "
    "turn per request); inference-only ceiling: the raw forward pass at the point's mean batch, converted "
    "with its evaluations per round.",
    "each point: a fresh process, a warm-up, then a window of a few seconds (the pool strategies: whole runs "
    "of clients.pool, as `blobnet selfplay` times itself); rates are least-squares slopes of the counters; CPU "
    "is the point's process tree; every child process runs with OMP_NUM_THREADS=1 and OMP_WAIT_POLICY=PASSIVE "
    "unless the caller's environment says otherwise (meta.json: torch_env).",
]


def _notes(r: Report) -> list[str]:
    gpu = (
        "no GPU: GPU utilisation and memory were not measured"
        if r.no_gpu
        else "GPU utilisation (mean %) and memory (peak MB) are in results.csv (gpu_util, gpu_mem_mb)"
    )
    return ["", "## Notes", ""] + [f"- {c}" for c in [*r.meta.get("caps", []), gpu, *NOTES]]


def _charts(r: Report) -> list[str]:
    if not r.charts:
        return []
    return ["", "## Charts", ""] + [f"![{p.stem}]({p.name})" for p in r.charts]


SECTIONS: list[Callable[[Report], list[str]]] = [
    _header,
    _advice,
    _training,
    _scaling,
    _ceilings,
    _other_sweeps,
    _every_point,
    _notes,
    _charts,
]


def summary_markdown(df: pd.DataFrame, meta: dict[str, Any], advice: Advice, charts: list[Path]) -> str:
    r = Report(df, ok_rows(df), meta, advice, charts)
    return "\n".join(line for section in SECTIONS for line in section(r)) + "\n"


def write_report(df: pd.DataFrame, meta: dict[str, Any], out: Path, *, charts: bool = True) -> list[Path]:
    """summary.md and (unless ``charts`` is False) the PNG charts; returns their paths."""
    plan = meta.get("plan", {})
    said = advise(
        df,
        iterations=int(plan.get("iterations", 500)),
        rounds_per_iteration=int(plan.get("rounds_per_iteration", 10_000)),
    )
    pngs = draw_charts(df, said, out) if charts else []
    (out / "summary.md").write_text(summary_markdown(df, meta, said, pngs))
    return [out / "summary.md", *pngs]
