"""Ray actors against the local pool of processes: self-play rounds per minute, side by side.

The question (issue #15): on one machine, is ``clients.raypool.RayPool`` within 5% of
``clients.pool.SelfPlayPool`` in self-play rate with the same settings? If so the pool could go.
Each repeat runs every backend once on the same seed, one after the other, so a load that comes
and goes on a shared machine reaches all of them alike; the report gives each backend's median
rate, its spread, and the median of the per-repeat ratios to the pool.

Settings are ``blobnet selfplay``'s defaults (4 players, 5 cards, 3 x 30 simulations, 4 leaves,
network ``small`` freshly initialised, 256 live games, in-line batchers) with ``--workers``
engines. The pool is ``blobnet selfplay`` itself, in a process of its own: a process that has
started Ray carries Ray's threads (one of them runs the garbage collector the engine keeps quiet,
DESIGN.md), and the pool's first share plays in the calling process. Ray's engines are actors
(each share in ``--chunks`` chunks, or whole); this process only schedules them. The pool plays
while no Ray runs (Ray's own processes, left running beside it, slow it); Ray is started afresh
in each repeat, after the pool's run. Start-up (helpers, actors, imports) is outside the clock for
both; Ray's is timed and reported apart.

    python -m bench.ray_selfplay [--rounds 768] [--repeats 3] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from blobnet.aio import run_loop
from blobnet.config import GameConfig, SearchConfig
from blobnet.net import make_net
from clients.pool import BatcherSpec, EnginePool
from clients.raypool import RayPool, import_ray
from servers import Batcher

__all__ = ["main"]


def _pool_rate(*, workers: int, rounds: int, concurrency: int, seed: int) -> float:
    """One ``blobnet selfplay`` run in a process of its own: rounds per minute."""
    cmd = [sys.executable, "-m", "clients.cli", "selfplay", "--mode", "inline", "--workers", str(workers),
           "--rounds", str(rounds), "--concurrency", str(concurrency), "--seed", str(seed), "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["rounds_per_min"])


async def _rate(pool: EnginePool, *, rounds: int, concurrency: int, seed: int) -> float:
    """One self-play run of ``pool`` with a fresh ``small`` network: rounds per minute."""
    model = make_net("small", seed=0)
    batcher = Batcher(model, max_batch=4096)
    try:
        stats = await pool.run(batcher, BatcherSpec(preset="small"), model.state_dict(),
                               search=SearchConfig(dets=3, sims=30, leaves=4), game=GameConfig(players=[4], cards=[5]),
                               rounds=rounds, concurrency=concurrency, seed=seed)  # fmt: skip
    finally:
        await batcher.aclose()
    return 60.0 * stats.rounds / stats.seconds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ray_selfplay", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=768)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunks", type=int, default=4, help="chunks per share of the chunked Ray backend")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.rounds, args.concurrency, args.workers, args.chunks, args.repeats) < 1:
        p.error("--rounds, --concurrency, --workers, --chunks and --repeats must be at least 1")
    # One torch (and so ONNX Runtime) thread in this process, as blobnet selfplay runs and as Ray
    # runs its actors: a second thread's spin-waits slow a forward pass badly on a busy core (cli.py).
    torch.set_num_threads(1)
    ray = import_ray()
    names = ["ray, whole shares", f"ray, {args.chunks} chunks a share"]
    rates: dict[str, list[float]] = {"pool": [], **{name: [] for name in names}}
    startup: list[float] = []
    for rep in range(args.repeats):
        # The pool plays while no Ray runs: Ray's own processes (its store, scheduler and idle
        # workers) took 6% to 8% of the pool's rate on 2 cores when left running beside it.
        rates["pool"].append(_pool_rate(workers=args.workers, rounds=args.rounds, concurrency=args.concurrency,
                                        seed=rep))  # fmt: skip
        print(f"repeat {rep + 1}: pool: {rates['pool'][-1]:,.0f} rounds/min", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        # Room for both Ray backends' actors at once; only one backend plays at a time.
        ray.init(num_cpus=2 * args.workers, include_dashboard=False, logging_level="WARNING")
        pools: dict[str, EnginePool] = {}
        try:  # Ray ends with the repeat, even when an actor cannot be made
            pools = {names[0]: RayPool(args.workers, chunks=1), names[1]: RayPool(args.workers, chunks=args.chunks)}
            for pool in pools.values():  # warm-up: processes started, kernels loaded
                run_loop(_rate(pool, rounds=64, concurrency=64, seed=10_000))
            startup.append(time.perf_counter() - t0)
            for name, pool in pools.items():
                rates[name].append(run_loop(_rate(pool, rounds=args.rounds, concurrency=args.concurrency, seed=rep)))
                print(f"repeat {rep + 1}: {name}: {rates[name][-1]:,.0f} rounds/min", file=sys.stderr, flush=True)
        finally:
            for pool in pools.values():
                pool.close()
            ray.shutdown()
    report: dict[str, Any] = {}
    for name, values in rates.items():
        ratios = [v / base for v, base in zip(values, rates["pool"])]
        report[name] = {
            "median_rounds_per_min": round(statistics.median(values), 1),
            "min": round(min(values), 1),
            "max": round(max(values), 1),
            "median_ratio_to_pool": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
        print(f"{name}: median {statistics.median(values):,.0f} rounds/min (range {min(values):,.0f} to "
              f"{max(values):,.0f}), {statistics.median(ratios):.2f}x the pool (per repeat: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    report["ray_startup_seconds"] = round(statistics.median(startup), 2)
    print(f"Ray's start-up (ray.init, actors, a warm-up run of each backend): median {report['ray_startup_seconds']} s")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
