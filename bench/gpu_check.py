"""The GPU check: one script a CUDA machine runs in a few minutes (``make bench-gpu``).

    python -m bench.gpu_check [--device cuda] [--preset medium] [--dtype bf16] [--engines 1,2,4,8,15]
                              [--games-per-engine 256] [--warmup 5] [--window 8]
                              [--concurrency 1024,4096] [--budget 280] [--out bench/results/gpu]

1. Parity: the same network and inputs on the CPU and on the device; the priors (softmax over the
   legal ids) and values must agree within tolerance (float32 with TF32 off: 1e-4; bfloat16: 3e-2).
2. Parity through the batcher: ``servers.Batcher(device=...)`` with one batch in flight and with two
   (copy and compute streams overlapping the next batch), many requests at once, against the CPU.
3. One GPU server fed by many processes: ``python -m servers`` on the device (``--preset`` in
   ``--dtype``) and 1 to 15 engine processes (``--engines``, each playing ``--games-per-engine``
   games), each sending its rows packed through a shared-memory ring (the sweep's
   "processes+server"): rounds/min, simulations/s, mean batch (p10-p90), request latency, GPU
   utilisation and memory (pynvml), CPU use.
4. The design card's shape for comparison: one asyncio engine process on an in-process device
   batcher at ``--concurrency`` games, with one and two batches in flight.
Points that would overrun ``--budget`` seconds are skipped and listed as skipped.

Writes <date-time>.json and <date-time>.md (date, GPU name, git commit, the tables) under
bench/results/gpu/ and prints the tables. Exit code 1 when a parity check fails. Without CUDA it
prints "no GPU: nothing to check" and exits 0. ``--device cpu`` runs every step on the CPU instead
(the script's own dry run: parity is then trivial and the rates are the CPU's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, Timed, batch_spread, git_commit, parse_ints, sample_inputs, stamp
from bench.monitor import Gpu, Monitor
from bench.point import CalibrateSpec, PointSpec, engine_window, window_summary
from bench.report import markdown_table
from bench.strategies import calibrate, run_point
from blobnet.aio import run_loop
from blobnet.config import PRESETS
from blobnet.evaluator import Priors
from blobnet.net import DirectEvaluator, make_net
from servers import Batcher

__all__ = ["main"]

TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
TIMING = {256: (3.0, 5.0), 1024: (4.0, 6.0), 4096: (6.0, 8.0), 8192: (8.0, 10.0)}  # games -> warm-up, window
START_S = 15.0  # what starting a point's processes may take, seconds (the budget's allowance)
KEPT = (  # a throughput point's figures kept in its row
    "sims_per_s", "evals_per_s", "mean_batch", "batch_p10", "batch_p90", "latency_p50_ms", "latency_p99_ms",
    "gpu_util", "gpu_mem_mb", "cpu_cores", "device_idle_fraction",
)  # fmt: skip


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """float32 matmuls in float32: TF32 would round them to 10 mantissa bits."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _compare(name: str, got: Priors, want: Priors, tol: float) -> dict[str, Any]:
    """Both answers' largest differences, priors (rows, n_actions) and values (rows, n_values)."""
    dp = float(np.max(np.abs(got[0] - want[0])))
    dv = float(np.max(np.abs(got[1] - want[1])))
    ok = bool(dp <= tol and dv <= tol)
    return {"check": name, "max_diff_priors": dp, "max_diff_values": dv, "tolerance": tol, "ok": ok}


def parity(preset: str, device: str, rows: int = 1024) -> list[dict[str, Any]]:
    """The network on the CPU (``blobnet.net.DirectEvaluator``) against the same network on
    ``device``, float32 and bfloat16."""
    cpu = make_net(preset, seed=0)
    x, mask = sample_inputs(rows, cpu.width, np.random.default_rng(0), cpu.n_actions)
    want = DirectEvaluator(cpu).run_rows(x, mask)
    out = []
    with _no_tf32():
        for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            dev = copy.deepcopy(cpu).to(device=device, dtype=dtype).eval()
            with torch.inference_mode():
                x_dev = torch.from_numpy(x).to(device=device, dtype=dtype)
                logits, values = dev(x_dev, torch.from_numpy(mask).to(device))
            got = (torch.softmax(logits.float(), dim=1).cpu().numpy(), values.float().cpu().numpy())
            out.append(_compare(f"network {dtype_name}, {rows} rows", got, want, TOLERANCE[dtype_name]))
    return out


def batcher_parity(preset: str, device: str, requesters: int = 256) -> list[dict[str, Any]]:
    """Many concurrent requests through the device batcher against the CPU forward pass, row by row."""
    cpu = make_net(preset, seed=0)
    x, legal = sample_inputs(requesters * 4, cpu.width, np.random.default_rng(1), cpu.n_actions)
    want = DirectEvaluator(cpu).run_rows(x, legal)

    async def run(inflight: int) -> Priors:
        ev = Batcher(copy.deepcopy(cpu), max_batch=512, device=device, max_inflight=inflight)
        try:
            parts = await asyncio.gather(
                *(ev.evaluate_many(x[4 * j : 4 * j + 4], legal[4 * j : 4 * j + 4]) for j in range(requesters))
            )
        finally:
            await ev.aclose()
        return np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts])

    out = []
    for inflight in (1, 2):
        with _no_tf32():
            got = asyncio.run(run(inflight))
        name = f"Batcher({device}), max_inflight={inflight} ({'streams overlap' if inflight > 1 else 'one batch'})"
        out.append(_compare(name, got, want, TOLERANCE["float32"]))
    return out


def _point(args: argparse.Namespace, spec: PointSpec, inflight: int, gpu: Gpu | None) -> dict[str, Any]:
    """The engine on the device batcher: ``window_summary``'s figures and the monitor's."""

    async def run(monitor: Monitor) -> dict[str, Any]:
        batcher = Batcher(
            make_net(spec.preset, seed=0),
            max_batch=args.max_batch,
            device=args.device,
            dtype=args.dtype,
            max_inflight=inflight,
        )
        ev = Timed(batcher)
        try:
            samples, latency, stats = await engine_window(ev, spec, counted=batcher, monitor=monitor)
        finally:
            await ev.aclose()
        idle = stats.get("device_idle_fraction", math.nan)
        return window_summary(samples, latency, batch_spread(stats)) | {"device_idle_fraction": idle}

    with Monitor(gpu) as monitor:
        out = run_loop(run(monitor))
    return out | monitor.report()


def _measured(row: dict[str, Any], m: dict[str, Any], sims_per_round: float) -> dict[str, Any]:
    """A throughput row from a point's figures ``m``; prints it."""
    row = (
        row
        | {"rounds_per_min": 60 * m["sims_per_s"] / sims_per_round}
        | {k: m.get(k, math.nan) for k in KEPT}
        | {"error": ""}
    )
    where = ", ".join(f"{k}={v}" for k, v in row.items() if k in ("engines", "max_inflight"))
    print(
        f"  {where} {row['games']:5d} games: {row['rounds_per_min']:8,.0f} rounds/min, "
        f"batch {m['mean_batch']:7.1f}, GPU {m['gpu_util']:.0f}%",
        flush=True,
    )
    return row


def shared_server(
    args: argparse.Namespace, sims_per_round: float, deadline: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Step 3: 1 to 15 engine processes sharing one server process on the device."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    warmup, window = args.warmup, args.window
    for n in args.engines:
        games = n * args.games_per_engine
        if time.monotonic() + warmup + window + START_S > deadline:
            skipped.append(f"{n} engines sharing the server: out of time")
            continue
        spec = PointSpec(
            strategy="processes+server", workers=n, concurrency=games, preset=args.preset, max_batch=args.max_batch,
            warmup=warmup, window=window, server_device=args.device, server_dtype=args.dtype,
        )  # fmt: skip
        try:
            rows.append(_measured({"engines": n, "games": games}, run_point(spec), sims_per_round))
        except Exception as e:  # noqa: BLE001 - one failed point is recorded, the rest still run
            rows.append({"engines": n, "games": games, "error": f"{type(e).__name__}: {e}"})
    return rows, skipped


def throughput(
    args: argparse.Namespace, gpu: Gpu | None, sims_per_round: float, deadline: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Step 4: one engine process on an in-process device batcher."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for inflight in (2, 1):
        for c in args.concurrency:
            warmup, window = TIMING.get(c, (2.0, 3.0) if c < 256 else (5.0, 8.0))
            if time.monotonic() + warmup + window + 10 > deadline:
                skipped.append(f"{c} games, max_inflight={inflight}: out of time")
                continue
            spec = PointSpec(strategy="asyncio", concurrency=c, preset=args.preset, warmup=warmup, window=window)
            try:
                m = _point(args, spec, inflight, gpu)
            except Exception as e:  # noqa: BLE001 - one failed point is recorded, the rest still run
                rows.append({"max_inflight": inflight, "games": c, "error": f"{type(e).__name__}: {e}"})
                continue
            rows.append(_measured({"max_inflight": inflight, "games": c}, m, sims_per_round))
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run of the script")
    p.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="bf16", help="inference precision on the device: bf16, fp16 or float32")
    p.add_argument("--engines", type=parse_ints, default=(1, 2, 4, 8, 15), help="engine processes, comma-separated")
    p.add_argument("--games-per-engine", type=int, default=256, help="games each engine process plays at once")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before a shared-server point's window")
    p.add_argument("--window", type=float, default=8.0, help="seconds a shared-server point is measured")
    p.add_argument("--concurrency", type=parse_ints, default=(1024, 4096), help="games of the in-process batcher")
    p.add_argument("--max-batch", type=int, default=8192, help="the batcher's rows per forward pass at most")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu")
    args = p.parse_args(argv)
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        p.error(f"--device {args.device!r}: cuda, cuda:N or cpu")
    if min(args.max_batch, args.budget, args.games_per_engine, args.window) <= 0 or args.warmup < 0:
        p.error("--max-batch, --games-per-engine, --budget and --window must be positive, --warmup at least 0")
    if args.dtype == "float32":
        args.dtype = None
    elif args.dtype not in ("bf16", "fp16"):
        p.error(f"--dtype {args.dtype!r}: bf16, fp16 or float32")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no GPU: nothing to check", flush=True)
        return 0
    t0 = time.monotonic()
    deadline = t0 + args.budget
    gpu, why = Gpu.probe() if args.device != "cpu" else (None, "no GPU (dry run on the CPU)")
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else "cpu (dry run)"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "gpu": name,
        "nvml": gpu.name if gpu else why,
        "commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": args.device,
        "preset": args.preset,
        "dtype": args.dtype or "float32",
        "python": platform.python_version(),
        "machine": platform.platform(),
    }
    print(f"GPU check on {name} (commit {meta['commit']})", flush=True)
    checks = parity(args.preset, args.device) + batcher_parity(args.preset, args.device)
    for c in checks:
        print(
            f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: priors {c['max_diff_priors']:.2e}, "
            f"values {c['max_diff_values']:.2e} (tolerance {c['tolerance']:g})",
            flush=True,
        )
    cal = calibrate(CalibrateSpec(players=4, cards=[5], rounds=32, concurrency=16))["5"]
    search = PointSpec(strategy="asyncio").search()  # every point's search
    sims_per_round = search.dets * search.sims * cal["decisions_per_round"]
    print("One server, many engine processes:", flush=True)
    served, skipped = shared_server(args, sims_per_round, deadline)
    print("One engine process, in-process batcher:", flush=True)
    rows, skipped_here = throughput(args, gpu, sims_per_round, deadline)
    meta["seconds"] = time.monotonic() - t0
    result = {"meta": meta, "parity": checks, "served": served, "throughput": rows, "skipped": skipped + skipped_here}
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / stamp()
    base.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = _markdown(result)
    base.with_suffix(".md").write_text(md)
    print("\n" + md)
    print(f"written: {base.with_suffix('.json')}, {base.with_suffix('.md')}", flush=True)
    return 0 if all(c["ok"] for c in checks) else 1


PARITY_COLUMNS = ["check", "max |diff| priors", "max |diff| values", "tolerance", "result"]
FIGURES = [  # (column, key in a throughput row) after the columns that say where; "p10-p90" joins two
    ("rounds/min", "rounds_per_min"),
    ("sims/s", "sims_per_s"),
    ("mean batch", "mean_batch"),
    ("p10-p90", "batch_p10"),
    ("latency p50 ms", "latency_p50_ms"),
    ("p99 ms", "latency_p99_ms"),
    ("GPU util %", "gpu_util"),
    ("GPU MB", "gpu_mem_mb"),
    ("CPU cores", "cpu_cores"),
    ("error", "error"),
]


def _throughput_cell(r: dict[str, Any], key: str) -> Any:
    if key == "batch_p10":
        return f"{r.get('batch_p10', math.nan):g}-{r.get('batch_p90', math.nan):g}"
    return r.get(key, "" if key == "error" else math.nan)


def _markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    parity_rows = [
        [c["check"], *(f"{c[k]:.2e}" for k in ("max_diff_priors", "max_diff_values")), f"{c['tolerance']:g}"]
        + ["ok" if c["ok"] else "FAIL"]
        for c in result["parity"]
    ]
    served = [("engine processes", "engines"), ("games", "games"), *FIGURES]
    in_process = [("batches in flight", "max_inflight"), ("games", "games"), *FIGURES]

    def table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
        return markdown_table(
            [name for name, _ in columns], [[_throughput_cell(r, k) for _, k in columns] for r in rows]
        )

    out = [
        f"# GPU check, {m['date']}",
        "",
        f"- GPU: {m['gpu']}; commit `{m['commit']}`; torch {m['torch']}, CUDA {m['cuda']}",
        f"- network: preset `{m['preset']}` in {m['dtype']}; 4 players, 5 cards, a 3 x 30 search",
        f"- took {m['seconds']:.0f} s",
        "",
        "## CPU against the device",
        "",
        markdown_table(PARITY_COLUMNS, parity_rows),
        "",
        "## One server on the device, many engine processes",
        "",
        "Each engine process sends its rows packed through a shared-memory ring; the server batches all of them.",
        "",
        table(served, result["served"]),
        "",
        "## One engine process on an in-process device batcher",
        "",
        table(in_process, result["throughput"]),
    ]
    if result["skipped"]:
        out += ["", "Skipped (time budget): " + "; ".join(result["skipped"])]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
