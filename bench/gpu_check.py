"""The GPU check: one script a CUDA machine runs in at most five minutes.

    python -m bench.gpu_check [--device cuda] [--preset small] [--concurrency 256,1024,4096,8192]
                              [--budget 280] [--out bench/results/gpu]

1. Parity: the same network and inputs on the CPU and on the device; the priors (softmax over the
   legal ids) and values must agree within tolerance (float32 with TF32 off: 1e-4; bfloat16: 3e-2).
2. Parity through the batcher: ``servers.Batcher(device=...)`` with one batch in flight and with two
   (copy and compute streams overlapping the next batch), many requests at once, against the CPU.
3. Throughput: the asyncio self-play engine on the device batcher at 256 to 8192 concurrent games,
   with one and two batches in flight: rounds/min, simulations/s, mean batch (p10-p90), request
   latency, GPU utilisation and memory (pynvml), CPU use. Points that would overrun ``--budget``
   seconds are skipped and listed as skipped.

Writes <date-time>.json and <date-time>.md (date, GPU name, git commit, the tables) under
bench/results/gpu/ and prints the tables. Exit code 1 when a parity check fails. Without CUDA it
prints "no GPU: nothing to check" and exits 0. ``--device cpu`` runs every step on the CPU instead
(the script's own dry run: parity is then trivial and the rates are the CPU's).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, Adapted, Gpu, Monitor, batch_spread, forward_rows, git_commit, stamp
from bench.report import markdown_table
from bench.strategies import CalibrateSpec, PointSpec, calibrate, engine_window
from blobnet.net import PRESETS, make_net

__all__ = ["main"]

TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
TIMING = {256: (3.0, 5.0), 1024: (4.0, 6.0), 4096: (6.0, 8.0), 8192: (8.0, 10.0)}  # games -> warm-up, window


def _inputs(n: int, width: int, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """n rows about as sparse as blobnet.encode's, and legal id lists shaped like Blob's."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, width)) < 0.05).astype(np.float32)
    legal = []
    for _ in range(n):
        if rng.random() < 0.3:
            legal.append([52 + b for b in range(int(rng.integers(2, 9)))])
        else:
            legal.append(sorted(rng.choice(52, size=int(rng.integers(2, 14)), replace=False).tolist()))
    return x, legal


def _compare(name: str, got: tuple[list[float], list[list[float]]], want: tuple[list[float], list[list[float]]],
             tol: float) -> dict[str, Any]:  # fmt: skip
    dp = float(np.max(np.abs(np.asarray(got[0]) - np.asarray(want[0]))))
    dv = float(np.max(np.abs(np.asarray(got[1]) - np.asarray(want[1]))))
    return {"check": name, "max_diff_priors": dp, "max_diff_values": dv, "tolerance": tol,
            "ok": bool(dp <= tol and dv <= tol)}  # fmt: skip


def parity(preset: str, device: str, rows: int = 1024) -> list[dict[str, Any]]:
    """The network on the CPU against the same network on ``device``, float32 and bfloat16."""
    cpu = make_net(preset, seed=0)
    x, legal = _inputs(rows, cpu.width)
    want = forward_rows(cpu, x, legal)
    out = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds float32 matmuls to 10 mantissa bits
    try:
        for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            dev = copy.deepcopy(cpu).to(device=device, dtype=dtype).eval()
            mask = torch.zeros((rows, cpu.n_actions), dtype=torch.bool)
            for i, ids in enumerate(legal):
                mask[i, ids] = True
            with torch.inference_mode():
                logits, values = dev(torch.from_numpy(x).to(device=device, dtype=dtype), mask.to(device))
                probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
                vals = values.float().cpu().numpy()
            got = ([float(probs[i, a]) for i, ids in enumerate(legal) for a in ids], vals.tolist())
            out.append(_compare(f"network {dtype_name}, {rows} rows", got, want, TOLERANCE[dtype_name]))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def batcher_parity(preset: str, device: str, requesters: int = 256) -> list[dict[str, Any]]:
    """Many concurrent requests through the device batcher against the CPU forward pass, row by row."""
    from servers import Batcher

    cpu = make_net(preset, seed=0)
    x, legal = _inputs(requesters * 4, cpu.width, seed=1)
    want = forward_rows(cpu, x, legal)
    out = []
    for inflight in (1, 2):

        async def run(inflight: int = inflight) -> tuple[list[float], list[list[float]]]:
            ev = Adapted(Batcher(copy.deepcopy(cpu), max_batch=512, device=device, max_inflight=inflight))
            try:
                parts = await asyncio.gather(
                    *(ev.evaluate_many(x[4 * j : 4 * j + 4], legal[4 * j : 4 * j + 4]) for j in range(requesters))
                )
            finally:
                await ev.aclose()
            return [p for pr, _ in parts for p in pr], [v for _, vs in parts for v in vs]

        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            got = asyncio.run(run())
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        name = f"Batcher({device}), max_inflight={inflight} ({'streams overlap' if inflight > 1 else 'one batch'})"
        out.append(_compare(name, got, want, TOLERANCE["float32"]))
    return out


def throughput(args: argparse.Namespace, gpu: Gpu | None, deadline: float) -> tuple[list[dict[str, Any]], list[str]]:
    from servers import Batcher

    cal = calibrate(CalibrateSpec(players=4, cards=[5], rounds=32, concurrency=16))["5"]
    sims_per_round = 3 * 30 * cal["decisions_per_round"]
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for inflight in (2, 1):
        for c in args.concurrency:
            warmup, window = TIMING.get(c, (2.0, 3.0) if c < 256 else (5.0, 8.0))
            if time.monotonic() + warmup + window + 10 > deadline:
                skipped.append(f"{c} games, max_inflight={inflight}: out of time")
                continue
            spec = PointSpec(strategy="asyncio", concurrency=c, preset=args.preset, warmup=warmup, window=window)

            async def run(spec: PointSpec = spec, inflight: int = inflight, monitor: Monitor | None = None) -> Any:
                model = make_net(spec.preset, seed=0)
                ev = Adapted(Batcher(model, max_batch=args.max_batch, device=args.device, max_inflight=inflight))
                t0 = time.perf_counter()
                try:
                    return await engine_window(
                        ev, spec, concurrency=spec.concurrency, seed=0, start=t0 + spec.warmup,
                        end=t0 + spec.warmup + spec.window, clock=time.perf_counter, monitor=monitor,
                    )  # fmt: skip
                finally:
                    await ev.aclose()

            from clients.selfplay import run_loop

            try:
                with Monitor(gpu) as mon:
                    samples, latency, stats = run_loop(run(monitor=mon))
                rep = mon.report()
            except Exception as e:  # noqa: BLE001 - one failed point is recorded, the rest still run
                rows.append({"max_inflight": inflight, "games": c, "error": f"{type(e).__name__}: {e}"})
                continue
            from bench.common import percentiles_ms, rate

            sims = rate(samples, 1)
            mean, p10, _, p90 = batch_spread(stats)
            p50, p99 = percentiles_ms(latency)
            row = {
                "max_inflight": inflight, "games": c, "rounds_per_min": 60 * sims / sims_per_round, "sims_per_s": sims,
                "evals_per_s": rate(samples, 2), "mean_batch": mean, "batch_p10": p10, "batch_p90": p90,
                "latency_p50_ms": p50, "latency_p99_ms": p99, "gpu_util": rep["gpu_util"],
                "gpu_mem_mb": rep["gpu_mem_mb"], "cpu_cores": rep["cpu_cores"],
                "device_idle_fraction": stats.get("device_idle_fraction", math.nan), "error": "",
            }  # fmt: skip
            rows.append(row)
            print(
                f"  max_inflight={inflight} {c:5d} games: {row['rounds_per_min']:8,.0f} rounds/min, "
                f"batch {mean:7.1f}, GPU {row['gpu_util']:.0f}%",
                flush=True,
            )
    return rows, skipped


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated whole numbers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every concurrency must be at least 1")
    return vals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run of the script")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--concurrency", type=_ints, default=[256, 1024, 4096, 8192], help="games, comma-separated")
    p.add_argument("--max-batch", type=int, default=8192, help="the batcher's rows per forward pass at most")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu")
    args = p.parse_args(argv)
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        p.error(f"--device {args.device!r}: cuda, cuda:N or cpu")
    if args.max_batch < 1 or args.budget <= 0:
        p.error("--max-batch and --budget must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no GPU: nothing to check", flush=True)
        return 0
    t0 = time.monotonic()
    deadline = t0 + args.budget
    gpu, why = Gpu.probe() if args.device != "cpu" else (None, "no GPU (dry run on the CPU)")
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else "cpu (dry run)"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "gpu": name, "nvml": gpu.name if gpu else why,
        "commit": git_commit(), "torch": torch.__version__, "cuda": torch.version.cuda, "device": args.device,
        "preset": args.preset, "python": platform.python_version(), "machine": platform.platform(),
    }  # fmt: skip
    print(f"GPU check on {name} (commit {meta['commit']})", flush=True)
    checks = parity(args.preset, args.device) + batcher_parity(args.preset, args.device)
    for c in checks:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: priors {c['max_diff_priors']:.2e}, "
              f"values {c['max_diff_values']:.2e} (tolerance {c['tolerance']:g})", flush=True)  # fmt: skip
    rows, skipped = throughput(args, gpu, deadline)
    meta["seconds"] = time.monotonic() - t0
    result = {"meta": meta, "parity": checks, "throughput": rows, "skipped": skipped}
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / stamp()
    base.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = _markdown(result)
    base.with_suffix(".md").write_text(md)
    print("\n" + md)
    print(f"written: {base.with_suffix('.json')}, {base.with_suffix('.md')}", flush=True)
    return 0 if all(c["ok"] for c in checks) else 1


def _markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    out = [
        f"# GPU check, {m['date']}",
        "",
        f"- GPU: {m['gpu']}; commit `{m['commit']}`; torch {m['torch']}, CUDA {m['cuda']}; preset `{m['preset']}`",
        f"- took {m['seconds']:.0f} s",
        "",
        "## CPU against the device",
        "",
        markdown_table(
            ["check", "max |diff| priors", "max |diff| values", "tolerance", "result"],
            [[c["check"], f"{c['max_diff_priors']:.2e}", f"{c['max_diff_values']:.2e}", f"{c['tolerance']:g}",
              "ok" if c["ok"] else "FAIL"] for c in result["parity"]],
        ),  # fmt: skip
        "",
        "## Self-play on the device batcher (4 players, 5 cards, 3 x 30 search)",
        "",
        markdown_table(
            ["batches in flight", "games", "rounds/min", "sims/s", "mean batch", "p10-p90", "latency p50 ms",
             "p99 ms", "GPU util %", "GPU MB", "CPU cores", "error"],
            [[r["max_inflight"], r["games"], r.get("rounds_per_min", math.nan), r.get("sims_per_s", math.nan),
              r.get("mean_batch", math.nan), f"{r.get('batch_p10', math.nan):g}-{r.get('batch_p90', math.nan):g}",
              r.get("latency_p50_ms", math.nan), r.get("latency_p99_ms", math.nan), r.get("gpu_util", math.nan),
              r.get("gpu_mem_mb", math.nan), r.get("cpu_cores", math.nan), r.get("error", "")]
             for r in result["throughput"]],
        ),  # fmt: skip
    ]
    if result["skipped"]:
        out += ["", "Skipped (time budget): " + "; ".join(result["skipped"])]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
