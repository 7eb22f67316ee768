"""The diagnostic sweep: how fast does self-play run, which way of running it is fastest, and why.

    python -m bench.sweep [--quick | --tiny] [--out DIR] [--iterations 500] [--rounds-per-iteration 10000]
                          [--strategies asyncio,direct,...] [--concurrency 1,16,256] [--preset small]

Not the cross product of every setting (7 concurrencies x 7 strategies x 3 searches x 7 hand sizes
would take hours), but four sweeps that each answer one question, 4 players throughout:

1. scaling: rounds/min against concurrent games for every strategy, medium search (3 x 30), 5 cards,
   with the two ceilings at each concurrency: the search alone (``FreeEvaluator``) and the forward
   pass alone at the measured batch size (the raw rate converted with the evaluations per round).
   Strategies that cannot sensibly hold thousands of games are capped: "threads" at 64 threads,
   "direct" at 256 games (it does not batch, so more games only add live trees), "processes" at the
   number of cores in workers (one game each), "processes+server" runs 2 engine processes,
   "asyncio-pool" one engine process per core (at least one game each, so its smallest concurrency
   is the number of cores).
2. search: light 2 x 20, medium 3 x 30, heavy 5 x 50 at the best configuration of sweep 1.
3. hands: 1 to 7 cards at the best configuration of sweep 1.
4. precision: the best configuration of sweep 1 in float32 and then with its network in bf16 (where
   its strategy runs batchers of its own: asyncio, asyncio-thread, asyncio-pool), on the engine the
   product takes for each (eager for bf16; onednn and onnx run float32 only), the two points one after
   the other with the same timing. The advice says whether bf16 pays on this CPU, from that pair.

Before them, a calibration plays complete rounds with the free evaluator: searched decisions per
round for every hand size. Every searched decision runs dets x sims simulations, so rounds/min =
60 x simulations/s / (dets x sims x decisions per round): a window of a few seconds measures that even
when thousands of games are live and hardly any round ends inside it (``rounds_per_min_completed``
is the direct count where enough rounds did end). Each point runs in a fresh process (``--tiny``:
in this one) after a warm-up; bench/strategies.py says what each strategy runs, bench/point.py how
a point measures it.

Output: bench/results/<date-time>/ with results.csv, results.json (one record per point), meta.json
(machine, commit, calibration, raw forward rates, the plan), charts (PNG, bench/charts.py) and
summary.md with the advice computed from the data (bench/advice.py, bench/report.py). ``--quick``
runs the same pipeline in a few minutes with fewer points, ``--tiny`` in well under a minute with the
tiny network (for the tests).
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
import torch

from bench.common import RESULTS, TORCH_ENV, child_env, git_commit, parse_ints, stamp
from bench.monitor import gpu_name
from bench.point import MULTI_PROCESS, OWN_NETWORK, UNBATCHED, CalibrateSpec, PointSpec, RawSpec
from bench.report import write_report
from bench.strategies import COMMANDS, STRATEGIES
from blobnet.cards import N_CARDS
from blobnet.config import PRESETS
from blobnet.rules import check_table

__all__ = ["SETTINGS", "Mode", "FULL", "QUICK", "TINY", "PLANS", "plan_scaling", "derive", "main"]

SETTINGS: dict[str, tuple[int, int]] = {"light": (2, 20), "medium": (3, 30), "heavy": (5, 50)}  # dets, sims
BASE_SETTING, BASE_CARDS = "medium", 5
PRECISION_STRATEGIES = ("asyncio", "asyncio-thread", "asyncio-pool")  # batchers of their own: a dtype applies
DIRECT_CAP = 256  # "direct" does not batch: more games only add live trees
THREADS_CAP = 64  # OS threads, one game each: more would only queue on the GIL


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
    precision: tuple[str, ...] = ("bf16",)  # precision sweep: each beside a float32 point run just before

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
    calib_rounds=64, long={1024: (3.0, 6.0), 4096: (5.0, 10.0)},
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


def _spec(
    mode: Mode,
    strategy: str,
    concurrency: int,
    *,
    workers: int = 1,
    setting: str = BASE_SETTING,
    cards: int = BASE_CARDS,
    players: int = 4,
    preset: str | None = None,
    seed: int = 0,
    short: bool = False,
    dtype: str | None = None,
) -> PointSpec:
    """short: the search and hand-size sweeps, whose long points are capped at 3 s + 6 s."""
    dets, sims = SETTINGS[setting]
    warmup, window = mode.timing(concurrency)
    if short:
        warmup, window = min(warmup, 3.0), min(window, 6.0)
    return PointSpec(
        strategy=strategy,
        concurrency=concurrency,
        workers=workers,
        players=players,
        cards=cards,
        dets=dets,
        sims=sims,
        preset=preset or mode.preset,
        warmup=warmup,
        window=window,
        seed=seed,
        dtype=dtype,
    )


# The scaling points of each strategy, (concurrency, workers) each: from the mode, or from the
# concurrencies given with --concurrency (``given``) where the strategy can hold them.
Plan = Callable[[Mode, "tuple[int, ...] | None", int], list[tuple[int, int]]]


def _one_process(concurrencies: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(c, 1) for c in concurrencies]


def _plan_asyncio(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    return _one_process(given or mode.engine)


def _plan_thread_mode(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    return _one_process(given or tuple(c for c in mode.engine if c in mode.thread_mode))


def _plan_direct(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    return _one_process(mode.direct if given is None else tuple(c for c in given if c <= DIRECT_CAP))


def _plan_threads(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    return _one_process(mode.threads if given is None else tuple(c for c in given if c <= THREADS_CAP))


def _plan_processes(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    return [(min(w, cpus) if cpus else w, w) for w in mode.processes]  # one game a worker


def _plan_server(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    w = mode.server_clients
    return [(c, w) for c in (mode.server if given is None else tuple(c for c in given if c >= w))]


def _plan_pool(mode: Mode, given: tuple[int, ...] | None, cpus: int) -> list[tuple[int, int]]:
    w = max(1, cpus)  # one engine process per core, as ``blobnet selfplay`` runs by default
    pool = tuple(c for c in (mode.pool if given is None else given) if c >= w)  # a game for every process
    if given is None and not pool:  # more cores than the mode's largest concurrency: one game each
        pool = (w,)
    return [(c, w) for c in pool]


PLANS: dict[str, Plan] = {
    "asyncio": _plan_asyncio,
    "asyncio-thread": _plan_thread_mode,
    "direct": _plan_direct,
    "threads": _plan_threads,
    "processes": _plan_processes,
    "processes+server": _plan_server,
    "asyncio-pool": _plan_pool,
}


def plan_scaling(
    mode: Mode,
    strategies: tuple[str, ...],
    *,
    players: int,
    preset: str,
    cpus: int,
    engine: tuple[int, ...] | None = None,
) -> list[tuple[str, PointSpec]]:
    """(setting label, spec) of sweep 1, the free ceiling first at each concurrency."""
    kw: dict[str, Any] = {"players": players, "preset": preset}
    out = [(BASE_SETTING, _spec(mode, "free", c, **kw)) for c in engine or mode.engine]
    for s in strategies:
        out += [(BASE_SETTING, _spec(mode, s, c, workers=w, **kw)) for c, w in PLANS[s](mode, engine, cpus)]
    return out


def _child(kind: str, payload: str, timeout: float) -> Any:
    """Run ``python -m bench.strategies KIND PAYLOAD`` and return the JSON on its last line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.strategies", kind, payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
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

    def ask(self, kind: str, spec: msgspec.Struct, timeout: float = 600) -> Any:
        """``bench.strategies``' command ``kind`` (point, calibrate, raw) on ``spec``: in a fresh
        process, or in this one for ``--tiny``."""
        payload = msgspec.json.encode(spec).decode()
        return COMMANDS[kind](payload) if self.mode.in_process else _child(kind, payload, timeout)

    def point(self, sweep: str, setting: str, spec: PointSpec) -> dict[str, Any]:
        self.count += 1
        t0 = time.perf_counter()
        expected = spec.warmup + spec.window + (3.0 if self.mode.in_process else 6.0)
        try:
            if t0 + expected > self.deadline:
                raise TimeoutError("skipped: the sweep's time budget (--budget) is spent")
            res = self.ask("point", spec, 120 + 3 * (spec.warmup + spec.window))
            error = ""
        except Exception as e:  # noqa: BLE001 - one failed point is recorded, the sweep goes on
            res, error = {}, f"{type(e).__name__}: {e}"
        rec: dict[str, Any] = {
            "sweep": sweep,
            "strategy": spec.strategy,
            "concurrency": spec.concurrency,
            "workers": spec.workers,
            "players": spec.players,
            "cards": spec.cards,
            "setting": setting,
            "dets": spec.dets,
            "sims": spec.sims,
            "leaves": spec.leaves,
            "preset": spec.preset,
            "dtype": spec.dtype or "float32",
            "warmup_s": spec.warmup,
            **res,
            "error": error,
            "point_s": time.perf_counter() - t0,
        }
        self.records.append(rec)
        what = f"{sweep:9s} {spec.strategy:16s} C={spec.concurrency:<5d} {setting:6s} {spec.cards}c"
        what += f" {rec['dtype']}" if spec.dtype or sweep == "precision" else ""  # the float32 one of a pair too
        if error:
            self.log(f"[{self.count:3d}] {what}: FAILED {error}")
        else:
            self.log(
                f"[{self.count:3d}] {what}: {res.get('sims_per_s', math.nan):9,.0f} sims/s, "
                f"batch {res.get('mean_batch', math.nan):7.1f}, p99 {res.get('latency_p99_ms', math.nan):7.1f} ms "
                f"({rec['point_s']:.1f} s)"
            )
        return rec


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
    df["batch_key"] = [1 if s in UNBATCHED else _batch_key(b) for s, b in zip(df["strategy"], df["mean_batch"])]
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
    procs = [p if s in OWN_NETWORK else 1 for s, p in zip(df["strategy"], parallel)]
    df["inference_ceiling_rpm"] = 60.0 * raw_at * procs / df["evals_per_round"]
    df.loc[df["strategy"] == "free", "inference_ceiling_rpm"] = math.nan
    df["search_share"] = df["rounds_per_min"] / df["search_ceiling_rpm"]
    df["inference_share"] = df["rounds_per_min"] / df["inference_ceiling_rpm"]
    df["overhead_share"] = 1.0 - df["search_share"] - df["inference_share"]
    return df


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points, shorter windows: a few minutes")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="the smallest run of the whole pipeline, for the tests (in this process, tiny network, well under a "
        "minute; wins over --quick)",
    )
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date-time>)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset of the strategies")
    p.add_argument("--concurrency", type=parse_ints, help="concurrencies of the asyncio strategies (e.g. 1,16,256)")
    p.add_argument("--preset", help="network preset (default small; tiny with --tiny)")
    p.add_argument("--players", type=int, default=4)
    p.add_argument("--iterations", type=int, default=500, help="training plan: iterations")
    p.add_argument("--rounds-per-iteration", type=int, default=10_000, help="training plan: self-play rounds each")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--budget", type=float, help="minutes for the points; later points are skipped (default 13.5 full)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    a.mode = TINY if a.tiny else QUICK if a.quick else FULL
    a.strategy_list = tuple(s.strip() for s in a.strategies.split(",") if s.strip())
    bad = [s for s in a.strategy_list if s not in STRATEGIES]
    if bad or not a.strategy_list:
        p.error(f"--strategies: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    a.preset = a.preset or a.mode.preset
    if a.preset not in PRESETS:
        p.error(f"--preset {a.preset!r}: choose from {', '.join(PRESETS)}")
    try:
        check_table(a.players, BASE_CARDS)  # the sweep deals BASE_CARDS cards each
    except ValueError as e:
        p.error(f"--players {a.players}: {e}")
    if a.budget is not None and a.budget <= 0:
        p.error(f"--budget {a.budget}: give a positive number of minutes")
    if a.iterations < 1 or a.rounds_per_iteration < 1:
        p.error("--iterations and --rounds-per-iteration must be at least 1")
    return a


def _best(records: list[dict[str, Any]], rounds_of: Callable[[dict[str, Any]], float]) -> dict[str, Any] | None:
    """The scaling point with the most rounds/min (``rounds_of``), None when none succeeded."""
    ok = [r for r in records if r["strategy"] != "free" and r["error"] == ""]
    return max(ok, key=rounds_of) if ok else None


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    mode: Mode = a.mode
    cpus = os.cpu_count() or 1
    out: Path = a.out or RESULTS / stamp()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"bench.sweep ({mode.name}): results in {out}", flush=True)
    if mode.in_process:
        # The points share this process, which may lack the children's TORCH_ENV: one torch thread
        # keeps OpenMP from spinning against the search on a busy machine; the pool's helper
        # processes, spawned from here, take TORCH_ENV from the environment.
        torch.set_num_threads(1)
        os.environ.update(child_env())
    budget = 60.0 * (a.budget if a.budget is not None else mode.budget)
    runner = Runner(mode, log=lambda s: print(s, flush=True), budget=budget)
    hands = sorted({BASE_CARDS, *(c for c in mode.hands if c * a.players <= N_CARDS)})
    skipped_hands = [c for c in mode.hands if c * a.players > N_CARDS]
    dets, sims = SETTINGS[BASE_SETTING]
    calib = CalibrateSpec(players=a.players, cards=hands, dets=dets, sims=sims, rounds=mode.calib_rounds)
    calibration: dict[str, dict[str, float]] = runner.ask("calibrate", calib)
    for c, cal in calibration.items():
        print(
            f"calibration {c} cards: {cal['decisions_per_round']:.2f} searched decisions per round, "
            f"search alone {cal['rounds_per_min']:,.0f} rounds/min on complete rounds",
            flush=True,
        )

    plan = plan_scaling(mode, a.strategy_list, players=a.players, preset=a.preset, cpus=cpus, engine=a.concurrency)
    for setting, spec in plan:
        runner.point("scaling", setting, spec)
    sims_per_round = dets * sims * calibration[str(BASE_CARDS)]["decisions_per_round"]
    best = _best(runner.records, lambda r: 60.0 * r["sims_per_s"] / sims_per_round)
    if best is not None:
        strat, conc, workers = str(best["strategy"]), int(best["concurrency"]), int(best["workers"])
        print(f"best: {strat} at {conc} games ({60.0 * best['sims_per_s'] / sims_per_round:,.0f} rounds/min)")
        kw: dict[str, Any] = {"players": a.players, "preset": a.preset, "short": True}
        per_process = max(1, conc // workers)  # the free ceiling holds one process's games
        for setting in mode.settings:
            runner.point("search", setting, _spec(mode, "free", per_process, setting=setting, **kw))
            runner.point("search", setting, _spec(mode, strat, conc, workers=workers, setting=setting, **kw))
        for cards in hands:
            if cards != BASE_CARDS:
                runner.point("hands", BASE_SETTING, _spec(mode, "free", per_process, cards=cards, **kw))
                runner.point("hands", BASE_SETTING, _spec(mode, strat, conc, workers=workers, cards=cards, **kw))
        if strat in PRECISION_STRATEGIES:
            for dtype in (None, *mode.precision):  # None: the float32 point the others are measured against
                runner.point("precision", BASE_SETTING, _spec(mode, strat, conc, workers=workers, dtype=dtype, **kw))
    df = pd.DataFrame(runner.records)

    keys = sorted({_batch_key(b) for b in df.get("mean_batch", pd.Series(dtype=float)).tolist()} | {1})
    raw: dict[str, float] = runner.ask("raw", RawSpec(preset=a.preset, batches=keys, seconds=mode.raw_seconds))
    df = derive(df, calibration, raw, cpus)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "mode": mode.name,
        "cpus": cpus,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "preset": a.preset,
        "players": a.players,
        "gpu": gpu_name(),
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
        f"processes+server: {mode.server_clients} engine processes (clients.pool) sharing one server process",
        f"asyncio-pool: {cpus} engine processes (clients.pool, one per core), each with its own batcher; at least "
        f"{cpus} games; timed over whole runs of at least as many rounds as games",
        f"direct: at most {max(mode.direct)} games: it does not batch, so more games only add live trees",
    ]
    if skipped_hands:
        out.append(f"hand sizes {skipped_hands} skipped: they need more than {N_CARDS} cards")
    return out


if __name__ == "__main__":
    sys.exit(main())
