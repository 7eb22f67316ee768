"""The diagnostic sweep: how fast does self-play run, which way of running it is fastest, and why.

    python -m bench.sweep [--quick | --tiny] [--out DIR] [--iterations 500] [--rounds-per-iteration 10000]
                          [--strategies asyncio,direct,...] [--concurrency 1,16,256] [--preset small]

Not the cross product of every setting (7 concurrencies x 7 strategies x 3 searches x 7 hand sizes
would take hours), but three sweeps that each answer one question, 4 players throughout:

1. scaling: rounds/min against concurrent games for every strategy, medium search (3 x 30), 5 cards,
   with the two ceilings at each concurrency: the search alone (``FreeEvaluator``) and the forward
   pass alone at the measured batch size (the raw rate converted with the evaluations per round).
   Strategies that cannot sensibly hold thousands of games are capped: "threads" at 64 threads,
   "direct" at 256 games (it does not batch, so more games only add live trees), "processes" at the
   number of cores in workers (one game each), "processes+server" runs 2 client processes,
   "asyncio-pool" one client process per core (at least one game each, so its smallest concurrency
   is the number of cores).
2. search: light 2 x 20, medium 3 x 30, heavy 5 x 50 at the best configuration of sweep 1.
3. hands: 1 to 7 cards at the best configuration of sweep 1.

Before them, a calibration plays complete rounds with the free evaluator: searched decisions per
round for every hand size. Every searched decision runs dets x sims simulations, so rounds/min =
60 x simulations/s / (dets x sims x decisions per round): a window of a few seconds measures that even
when thousands of games are live and hardly any round ends inside it (``rounds_per_min_completed``
is the direct count where enough rounds did end). Each point runs in a fresh process (``--tiny``:
in this one) after a warm-up; see bench/strategies.py for what is measured and how.

Output: bench/results/<date-time>/ with results.csv, results.json (one record per point), meta.json
(machine, commit, calibration, raw forward rates, the plan), charts (PNG) and summary.md with the
advice computed from the data (bench/report.py). ``--quick`` runs the same pipeline in about two
minutes with fewer points, ``--tiny`` in well under a minute with the tiny network (for the tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from bench.common import RESULTS, TORCH_ENV, child_env, git_commit, stamp
from bench.strategies import MULTI_PROCESS, STRATEGIES, CalibrateSpec, PointSpec, RawSpec

__all__ = ["SETTINGS", "Mode", "MODES", "plan_scaling", "derive", "main"]

SETTINGS: dict[str, tuple[int, int]] = {"light": (2, 20), "medium": (3, 30), "heavy": (5, 50)}  # dets, sims
BASE_SETTING, BASE_CARDS = "medium", 5


@dataclass(frozen=True)
class Mode:
    """How much of the sweep to run, and how long each point measures."""

    name: str
    engine: tuple[int, ...]  # concurrencies of "asyncio", "asyncio-thread" and the free ceiling
    thread_mode: tuple[int, ...]  # "asyncio-thread"
    direct: tuple[int, ...]
    threads: tuple[int, ...]  # OS threads, one game each
    processes: tuple[int, ...]  # worker processes, one game each
    server: tuple[int, ...]  # "processes+server": games over all client processes
    pool: tuple[int, ...]  # "asyncio-pool": games over all client processes (one process per core)
    settings: tuple[str, ...]  # search sweep (the base setting comes from the scaling sweep)
    hands: tuple[int, ...]  # hand-size sweep (the base hand size comes from the scaling sweep)
    warmup: float
    window: float
    calib_rounds: int
    preset: str = "small"
    in_process: bool = False  # run the points in this process (test speed, not isolation)
    raw_seconds: float = 0.3
    server_clients: int = 2
    budget: float = 13.5  # minutes for the points, so that the whole sweep ends within 15
    long: dict[int, tuple[float, float]] = field(default_factory=dict)  # concurrency -> (warmup, window)

    def timing(self, concurrency: int) -> tuple[float, float]:
        """Warm-up and window for a point: longer under thousands of games, whose counters move in bursts."""
        for c in sorted(self.long, reverse=True):
            if concurrency >= c:
                return self.long[c]
        return self.warmup, self.window


FULL = Mode(
    name="full", engine=(1, 4, 16, 64, 256, 1024, 4096), thread_mode=(1, 4, 16, 64, 256, 1024, 4096),
    direct=(1, 4, 16, 64, 256), threads=(1, 4, 16, 64), processes=(1, 2), server=(16, 64, 256, 1024),
    pool=(16, 64, 256, 1024), settings=("light", "heavy"), hands=(1, 2, 3, 4, 6, 7), warmup=2.0, window=4.0,
    calib_rounds=64,
    long={1024: (3.0, 6.0), 4096: (5.0, 10.0)},
)  # fmt: skip
QUICK = Mode(
    name="quick", engine=(1, 16, 256), thread_mode=(16, 256), direct=(16,), threads=(16,), processes=(2,),
    server=(64,), pool=(16, 256), settings=("light", "heavy"), hands=(1, 7), warmup=1.0, window=2.0,
    calib_rounds=24,
)  # fmt: skip
TINY = Mode(
    name="tiny", engine=(1, 8), thread_mode=(8,), direct=(8,), threads=(4,), processes=(1,), server=(8,), pool=(8,),
    settings=("light",), hands=(2,), warmup=0.3, window=0.7, calib_rounds=6, preset="tiny", in_process=True,
    raw_seconds=0.05,
)  # fmt: skip
MODES = {"full": FULL, "quick": QUICK, "tiny": TINY}


def _spec(
    mode: Mode, strategy: str, concurrency: int, *, workers: int = 1, setting: str = BASE_SETTING,
    cards: int = BASE_CARDS, players: int = 4, preset: str | None = None, seed: int = 0, short: bool = False,
) -> PointSpec:  # fmt: skip
    """short: the search and hand-size sweeps, whose long points are capped at 3 s + 6 s."""
    dets, sims = SETTINGS[setting]
    warmup, window = mode.timing(concurrency)
    if short:
        warmup, window = min(warmup, 3.0), min(window, 6.0)
    return PointSpec(
        strategy=strategy, concurrency=concurrency, workers=workers, players=players, cards=cards, dets=dets,
        sims=sims, preset=preset or mode.preset, warmup=warmup, window=window, seed=seed,
    )  # fmt: skip


def plan_scaling(mode: Mode, strategies: tuple[str, ...], *, players: int, preset: str, cpus: int,
                 engine: tuple[int, ...] | None = None) -> list[tuple[str, PointSpec]]:  # fmt: skip
    """(setting label, spec) of sweep 1, the free ceiling first at each concurrency."""
    conc = engine or mode.engine
    kw: dict[str, Any] = {"players": players, "preset": preset}
    out: list[tuple[str, PointSpec]] = []
    for c in conc:
        out.append((BASE_SETTING, _spec(mode, "free", c, **kw)))
    per = {
        "asyncio": conc,
        "asyncio-thread": tuple(c for c in conc if c in mode.thread_mode) if engine is None else conc,
        "direct": mode.direct if engine is None else tuple(c for c in conc if c <= 256),
        "threads": mode.threads if engine is None else tuple(c for c in conc if c <= 64),
        "server": mode.server if engine is None else tuple(c for c in conc if c >= mode.server_clients),
    }
    for s in strategies:
        if s == "processes":
            for w in mode.processes:
                out.append((BASE_SETTING, _spec(mode, s, min(w, cpus) if cpus else w, workers=w, **kw)))
        elif s == "processes+server":
            for c in per["server"]:
                out.append((BASE_SETTING, _spec(mode, s, c, workers=mode.server_clients, **kw)))
        elif s == "asyncio-pool":
            w = max(1, cpus)  # one client process per core, as ``blobnet selfplay`` runs by default
            pool = tuple(c for c in (mode.pool if engine is None else conc) if c >= w)
            if engine is None and not pool:  # more cores than the mode's largest concurrency: one game each
                pool = (w,)
            for c in pool:
                out.append((BASE_SETTING, _spec(mode, s, c, workers=w, **kw)))
        else:
            for c in per[s]:
                out.append((BASE_SETTING, _spec(mode, s, c, **kw)))
    return out


# ---- running points -------------------------------------------------------------------------------


def _child(kind: str, payload: str, timeout: float) -> Any:
    """Run ``python -m bench.strategies KIND PAYLOAD`` and return the JSON on its last line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.strategies", kind, payload], capture_output=True, text=True,
        timeout=timeout, env=child_env(),
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit code {proc.returncode}, no output")
    return json.loads(lines[-1])


class Runner:
    """Runs points (in fresh processes, or here for ``--tiny``) and keeps their records."""

    def __init__(self, mode: Mode, log: Callable[[str], None] = print, budget: float = math.inf) -> None:
        self.mode = mode
        self.log = log
        self.records: list[dict[str, Any]] = []
        self.count = 0
        self.deadline = time.perf_counter() + budget  # points that would end after it are skipped

    def point(self, sweep: str, setting: str, spec: PointSpec) -> dict[str, Any]:
        self.count += 1
        t0 = time.perf_counter()
        expected = spec.warmup + spec.window + (3.0 if self.mode.in_process else 6.0)
        try:
            if t0 + expected > self.deadline:
                raise TimeoutError("skipped: the sweep's time budget (--budget) is spent")
            if self.mode.in_process:
                from bench.strategies import run_point

                res = run_point(spec)
            else:
                res = _child("point", msgspec.json.encode(spec).decode(), 120 + 3 * (spec.warmup + spec.window))
            error = ""
        except Exception as e:  # noqa: BLE001 - one failed point is recorded, the sweep goes on
            res, error = {}, f"{type(e).__name__}: {e}"
        rec: dict[str, Any] = {
            "sweep": sweep, "strategy": spec.strategy, "concurrency": spec.concurrency, "workers": spec.workers,
            "players": spec.players, "cards": spec.cards, "setting": setting, "dets": spec.dets, "sims": spec.sims,
            "leaves": spec.leaves, "preset": spec.preset, "warmup_s": spec.warmup, **res, "error": error,
            "point_s": time.perf_counter() - t0,
        }  # fmt: skip
        self.records.append(rec)
        what = f"{sweep:8s} {spec.strategy:16s} C={spec.concurrency:<5d} {setting:6s} {spec.cards}c"
        if error:
            self.log(f"[{self.count:3d}] {what}: FAILED {error}")
        else:
            self.log(
                f"[{self.count:3d}] {what}: {res.get('sims_per_s', math.nan):9,.0f} sims/s, "
                f"batch {res.get('mean_batch', math.nan):7.1f}, p99 {res.get('latency_p99_ms', math.nan):7.1f} ms "
                f"({rec['point_s']:.1f} s)"
            )
        return rec

    def calibrate(self, spec: CalibrateSpec) -> dict[str, dict[str, float]]:
        if self.mode.in_process:
            from bench.strategies import calibrate

            return calibrate(spec)
        out: dict[str, dict[str, float]] = _child("calibrate", msgspec.json.encode(spec).decode(), 600)
        return out

    def raw(self, spec: RawSpec) -> dict[str, float]:
        if self.mode.in_process:
            from bench.strategies import raw_rates

            return raw_rates(spec)
        out: dict[str, float] = _child("raw", msgspec.json.encode(spec).decode(), 600)
        return out


# ---- derived figures ------------------------------------------------------------------------------


def _batch_key(mean_batch: float) -> int:
    """The batch size whose raw rate stands for a measured mean batch: rounded to 2 significant digits."""
    if not mean_batch or math.isnan(mean_batch) or mean_batch < 1:
        return 1
    b = round(mean_batch)
    digits = len(str(b))
    return int(round(b, -max(0, digits - 2)))


def _interp_log(x: float, xs: list[float], ys: list[float]) -> float:
    """y at x, linear in log x between measured points, flat beyond them; NaN with none."""
    pts = sorted((a, b) for a, b in zip(xs, ys) if not math.isnan(b))
    if not pts:
        return math.nan
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
            return y0 + f * (y1 - y0)
    return pts[-1][1]


def derive(
    df: pd.DataFrame, calibration: dict[str, dict[str, float]], raw: dict[str, float], cpus: int
) -> pd.DataFrame:
    """Add rounds/min, evaluations per round, both ceilings and the shares of time they explain.

    search_ceiling_rpm: the free evaluator's rounds/min in the same sweep, setting and hand size at the
    games each process holds, times the processes that can run at once (min(workers, cpus)) for
    "processes", "processes+server" and "asyncio-pool". inference_ceiling_rpm: the raw forward rate at
    the point's mean batch (batch one without batching) converted with its evaluations per round, times
    the processes that run it at once (the "processes" workers and the "asyncio-pool" clients each run
    their own network; "processes+server" runs one, in the server)."""
    df = df.copy()
    dpr = df["cards"].map(lambda c: calibration.get(str(int(c)), {}).get("decisions_per_round", math.nan))
    df["decisions_per_round"] = dpr
    df["sims_per_round"] = df["dets"] * df["sims"] * dpr
    df["rounds_per_min"] = 60.0 * df["sims_per_s"] / df["sims_per_round"]
    done = df["rounds_done"].fillna(0)
    df["rounds_per_min_completed"] = (60.0 * done / df["window_s"]).where(done >= 5)
    # Per CPU-second of the point's own processes: less sensitive to other jobs on a shared machine.
    df["rounds_per_cpu_min"] = df["rounds_per_min"] / df["cpu_cores"]
    df["evals_per_round"] = df["evals_per_s"] / df["sims_per_s"] * df["sims_per_round"]
    df["batch_key"] = [
        1 if s in ("direct", "processes") else _batch_key(b) for s, b in zip(df["strategy"], df["mean_batch"])
    ]
    parallel = [min(int(w), cpus) if s in MULTI_PROCESS else 1 for s, w in zip(df["strategy"], df["workers"])]
    free = df[(df["strategy"] == "free") & (df["error"] == "")]
    ceilings = []
    for i, (_, row) in enumerate(df.iterrows()):
        like = free[(free["setting"] == row["setting"]) & (free["cards"] == row["cards"])]
        same = like[like["sweep"] == row["sweep"]]
        if same.empty:  # fall back on the other sweeps' ceilings at the same setting and hand size
            same = like
        per_process = max(1.0, row["concurrency"] / max(1, int(row["workers"])))
        c = _interp_log(per_process, same["concurrency"].astype(float).tolist(), same["rounds_per_min"].tolist())
        ceilings.append(c * (parallel[i] if row["strategy"] != "free" else 1))
    df["search_ceiling_rpm"] = ceilings
    raw_at = df["batch_key"].map(lambda b: raw.get(str(int(b)), math.nan))
    df["raw_evals_per_s"] = raw_at
    procs = [p if s in ("processes", "asyncio-pool") else 1 for s, p in zip(df["strategy"], parallel)]
    df["inference_ceiling_rpm"] = 60.0 * raw_at * procs / df["evals_per_round"]
    df.loc[df["strategy"] == "free", "inference_ceiling_rpm"] = math.nan
    df["search_share"] = df["rounds_per_min"] / df["search_ceiling_rpm"]
    df["inference_share"] = df["rounds_per_min"] / df["inference_ceiling_rpm"]
    df["overhead_share"] = 1.0 - df["search_share"] - df["inference_share"]
    return df


# ---- the command --------------------------------------------------------------------------------


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: give comma-separated whole numbers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: give one or more numbers of at least 1")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points, shorter windows: about two minutes")
    p.add_argument("--tiny", action="store_true", help="the smallest run of the whole pipeline, for the tests "
                   "(in this process, tiny network, well under a minute; wins over --quick)")  # fmt: skip
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date-time>)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset of the strategies")
    p.add_argument("--concurrency", help="concurrencies of the asyncio strategies (e.g. 1,16,256)")
    p.add_argument("--preset", help="network preset (default small; tiny with --tiny)")
    p.add_argument("--players", type=int, default=4)
    p.add_argument("--iterations", type=int, default=500, help="training plan: iterations")
    p.add_argument("--rounds-per-iteration", type=int, default=10_000, help="training plan: self-play rounds each")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--budget", type=float, help="minutes for the points; later points are skipped (default 13.5 full)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    from blobnet.net import PRESETS

    p = build_parser()
    a = p.parse_args(argv)
    a.mode = TINY if a.tiny else QUICK if a.quick else FULL
    a.strategy_list = tuple(s.strip() for s in a.strategies.split(",") if s.strip())
    bad = [s for s in a.strategy_list if s not in STRATEGIES]
    if bad or not a.strategy_list:
        p.error(f"--strategies: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    try:
        a.engine = _ints(a.concurrency, "--concurrency") if a.concurrency else None
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    a.preset = a.preset or a.mode.preset
    if a.preset not in PRESETS:
        p.error(f"--preset {a.preset!r}: choose from {', '.join(PRESETS)}")
    if not 3 <= a.players <= 8:
        p.error(f"--players {a.players}: Blob is played by 3 to 8 players")
    if BASE_CARDS * a.players > 52:
        p.error(f"--players {a.players}: the sweep deals {BASE_CARDS} cards each: at most {52 // BASE_CARDS} players")
    if a.budget is not None and a.budget <= 0:
        p.error(f"--budget {a.budget}: give a positive number of minutes")
    if a.iterations < 1 or a.rounds_per_iteration < 1:
        p.error("--iterations and --rounds-per-iteration must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    mode: Mode = a.mode
    cpus = os.cpu_count() or 1
    out: Path = a.out or RESULTS / stamp()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"bench.sweep ({mode.name}): results in {out}", flush=True)
    if mode.in_process:
        import torch

        # The points share this process, which may lack the children's TORCH_ENV: one torch thread
        # keeps OpenMP from spinning against the search on a busy machine.
        torch.set_num_threads(1)
    budget = 60.0 * (a.budget if a.budget is not None else mode.budget)
    runner = Runner(mode, log=lambda s: print(s, flush=True), budget=budget)
    hands = sorted({BASE_CARDS, *(c for c in mode.hands if c * a.players <= 52)})
    skipped_hands = [c for c in mode.hands if c * a.players > 52]
    dets, sims = SETTINGS[BASE_SETTING]
    calibration = runner.calibrate(
        CalibrateSpec(players=a.players, cards=hands, dets=dets, sims=sims, rounds=mode.calib_rounds)
    )
    for c, cal in calibration.items():
        print(f"calibration {c} cards: {cal['decisions_per_round']:.2f} searched decisions per round, "
              f"search alone {cal['rounds_per_min']:,.0f} rounds/min on complete rounds", flush=True)  # fmt: skip

    for setting, spec in plan_scaling(mode, a.strategy_list, players=a.players, preset=a.preset, cpus=cpus,
                                      engine=a.engine):  # fmt: skip
        runner.point("scaling", setting, spec)
    df = pd.DataFrame(runner.records)
    scaling = df[(df["strategy"] != "free") & (df["error"] == "")].copy()
    dpr = calibration[str(BASE_CARDS)]["decisions_per_round"]
    best: dict[str, Any] | None = None
    if not scaling.empty:
        scaling["rpm"] = 60.0 * scaling["sims_per_s"] / (dets * sims * dpr)
        best = scaling.loc[scaling["rpm"].idxmax()].to_dict()
        print(f"best: {best['strategy']} at {best['concurrency']} games ({best['rpm']:,.0f} rounds/min)", flush=True)
    if best is not None:
        strat, conc, workers = str(best["strategy"]), int(best["concurrency"]), int(best["workers"])
        kw: dict[str, Any] = {"players": a.players, "preset": a.preset, "short": True}
        per_process = max(1, conc // workers)  # the free ceiling holds one process's games
        for setting in mode.settings:
            runner.point("search", setting, _spec(mode, "free", per_process, setting=setting, **kw))
            runner.point("search", setting, _spec(mode, strat, conc, workers=workers, setting=setting, **kw))
        for cards in hands:
            if cards == BASE_CARDS:
                continue
            runner.point("hands", BASE_SETTING, _spec(mode, "free", per_process, cards=cards, **kw))
            runner.point("hands", BASE_SETTING, _spec(mode, strat, conc, workers=workers, cards=cards, **kw))
        df = pd.DataFrame(runner.records)

    keys = sorted({_batch_key(b) for b in df.get("mean_batch", pd.Series(dtype=float)).tolist()} | {1})
    raw = runner.raw(RawSpec(preset=a.preset, batches=keys, seconds=mode.raw_seconds))
    df = derive(df, calibration, raw, cpus)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "mode": mode.name,
        "cpus": cpus,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": _torch_version(),
        "preset": a.preset,
        "players": a.players,
        "gpu": _gpu_name(),
        "plan": {"iterations": a.iterations, "rounds_per_iteration": a.rounds_per_iteration},
        "torch_env": {k: child_env()[k] for k in TORCH_ENV},
        "caps": _caps(mode, cpus, skipped_hands),
        "calibration": calibration,
        "raw_evals_per_s": raw,
        "seconds": time.perf_counter() - t_start,
    }
    df.to_csv(out / "results.csv", index=False)
    df.to_json(out / "results.json", orient="records", indent=1)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))

    from bench.report import write_report

    paths = write_report(df, meta, out, charts=not a.no_charts)
    meta["seconds"] = time.perf_counter() - t_start
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"\n{(out / 'summary.md').read_text()}", flush=True)
    print(f"files: {', '.join(str(p) for p in [out / 'results.csv', out / 'results.json', *paths])}")
    print(f"bench.sweep ({mode.name}) took {meta['seconds']:.0f} s", flush=True)
    return 0


def _caps(mode: Mode, cpus: int, skipped_hands: list[int]) -> list[str]:
    out = [
        f"threads: at most {max(mode.threads)} OS threads (one game each); more would only queue on the GIL",
        f"processes: {', '.join(map(str, mode.processes))} worker processes, one game each ({cpus} cores here)",
        f"processes+server: {mode.server_clients} client processes sharing one server process",
        f"asyncio-pool: {cpus} client processes (one per core), each with its own batcher; at least {cpus} games",
        f"direct: at most {max(mode.direct)} games: it does not batch, so more games only add live trees",
    ]
    if skipped_hands:
        out.append(f"hand sizes {skipped_hands} skipped: they need more than 52 cards")
    return out


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _gpu_name() -> str:
    from bench.common import Gpu

    gpu, why = Gpu.probe()
    return gpu.name if gpu is not None else why


if __name__ == "__main__":
    sys.exit(main())
