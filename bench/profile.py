"""Where a self-play run's time goes: cProfile's top functions and a breakdown by stage.

    python -m bench.profile [--players 4] [--cards 5] [--dets 3] [--sims 30] [--concurrency 64]
                            [--rounds 300] [--preset small] [--mode inline] [--top 25] [--out DIR]
    python -m bench.profile --plain ...     the same self-play run, unprofiled (bench/flamegraph.py records it)

Two runs of the asyncio engine over an in-process ``servers.Batcher`` (after a short warm-up):

1. Stages, unprofiled: a SIGALRM handler samples the main thread's stack every millisecond of wall
   time, each sample weighted by the time since the previous one (``StageSampler``). A sample belongs to
   the forward pass when it is inside the batcher's backend (servers/backends.py: the network in
   blobnet/net.py, torch), otherwise to the innermost project module on the stack: tree
   search (blobnet/search.py with the compiled kernels it calls, which a Python stack sample sees as
   the calling line), rules and determinization (rules, views, cards), encoding (encode),
   waiting for the batch (the rest of servers/: the batcher's bookkeeping), the self-play engine's own
   bookkeeping (clients/selfplay.py), else the event loop. The seconds land in
   ``EngineStats.stage_seconds``; the batcher's own clock (``stats()["forward_total_s"]``) is printed
   beside the sampled forward time as a check, and the search's clock of its compiled stages
   (``Search.kernel_seconds``: deal, select with the leaves' encoding, backup) beside the tree search.
   The sampler costs the run about 1%.
2. cProfile over a second run of the same size: the .prof is kept, the top functions by own time
   are printed (``python -m pstats FILE`` or snakeviz read it further).

Like ``blobnet`` itself and every process the sweep starts, it runs with one torch thread and
OpenMP threads that sleep rather than spin (``bench.common.TORCH_ENV``; it restarts itself with them
set unless the environment already says, or ``--torch-default`` is given): spinning torch threads
make the in-line forward pass many times slower as soon as another process wants a core.

Output: bench/results/<date-time>-profile/ with profile.prof, top.txt (own time and cumulative
time) and stages.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import RESULTS, TORCH_ENV, child_env, git_commit, stamp
from blobnet.aio import run_loop
from blobnet.config import CPU_ENGINE, CPU_SPARSE, PRESETS, GameConfig, SearchConfig
from blobnet.net import make_net
from clients.selfplay import EngineStats, SelfPlayEngine
from servers import MODES, Batcher

__all__ = ["StageSampler", "classify", "main"]

STAGES = (
    "tree search",
    "rules and determinization",
    "encoding",
    "waiting for the batch",
    "forward pass",
    "self-play engine",
    "event loop and other",
)
FORWARD = ("servers/backends.py", "blobnet/net.py")  # with torch: the forward pass
_MODULES = (
    ("blobnet/search.py", "tree search"),
    ("blobnet/tree.py", "tree search"),
    ("blobnet/position.py", "tree search"),
    ("blobnet/deal.py", "tree search"),
    ("blobnet/features.py", "tree search"),
    ("blobnet/rules.py", "rules and determinization"),
    ("blobnet/views.py", "rules and determinization"),
    ("blobnet/cards.py", "rules and determinization"),
    ("blobnet/encode.py", "encoding"),
    ("servers/", "waiting for the batch"),
    ("clients/selfplay.py", "self-play engine"),
)


def classify(frame: FrameType | None) -> str:
    """The stage a stack (innermost frame first) belongs to; see the module docstring."""
    innermost: str | None = None
    f = frame
    while f is not None:
        code = f.f_code
        path = code.co_filename.replace("\\", "/")
        if "/torch/" in path or path.endswith(FORWARD):
            return "forward pass"
        if innermost is None:
            for suffix, stage in _MODULES:
                if suffix in path:
                    innermost = stage
                    break
        f = f.f_back
    return innermost or "event loop and other"


class StageSampler:
    """Samples the main thread's stack from a SIGALRM handler every ``interval`` seconds of wall time;
    ``seconds`` maps stage -> sampled seconds. Must be entered on the main thread.

    Python runs the handler on the main thread at the next bytecode boundary after the signal; during
    a long C call (a forward pass) the signals coalesce and the handler runs when the call returns,
    still in the frame that made it. So each sample is weighted by the wall time since the previous
    one and lands where that time was spent. (A sampler *thread* would not do: it gets the GIL where
    the main thread releases it, in numpy calls for instance, and would charge them the time before.)
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.seconds: dict[str, float] = defaultdict(float)
        self.samples = 0
        self._last = 0.0
        self._old: Any = None

    def _tick(self, signum: int, frame: FrameType | None) -> None:
        now = time.perf_counter()
        self.seconds[classify(frame)] += now - self._last
        self.samples += 1
        self._last = now

    def __enter__(self) -> StageSampler:
        self._last = time.perf_counter()
        self._old = signal.signal(signal.SIGALRM, self._tick)
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, self._old)


async def _run(
    args: argparse.Namespace, rounds: int, sampler: bool
) -> tuple[EngineStats, dict[str, Any], Any, dict[str, float]]:
    ev = Batcher(make_net(args.preset, seed=args.seed), max_batch=args.max_batch, mode=args.mode, engine=CPU_ENGINE,
                 sparse=CPU_SPARSE)  # fmt: skip
    search = SearchConfig(dets=args.dets, sims=args.sims, leaves=args.leaves)
    game = GameConfig(players=[args.players], cards=[args.cards])
    engine = SelfPlayEngine(ev, search=search, game=game, concurrency=args.concurrency, seed=args.seed)
    try:
        await engine.run(max(1, min(args.warmup_rounds, rounds)))  # torch and the allocator warm up
        engine.stats = EngineStats()
        ev.reset_stats()
        kernels = engine.search.kernel_seconds
        for key in kernels:
            kernels[key] = 0.0
        if sampler:
            with StageSampler() as smp:
                stats = await engine.run(rounds)
            stats.stage_seconds = dict(smp.seconds)
            return stats, ev.stats(), smp, dict(kernels)
        stats = await engine.run(rounds)
        return stats, ev.stats(), None, dict(kernels)
    finally:
        await ev.aclose()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=int, default=4)
    p.add_argument("--cards", type=int, default=5)
    p.add_argument("--dets", type=int, default=3)
    p.add_argument("--sims", type=int, default=30)
    p.add_argument("--leaves", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--warmup-rounds", type=int, default=20)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--mode", default="inline", choices=MODES, help="where the forward pass runs")
    p.add_argument("--max-batch", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=25, help="functions to print")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date-time>-profile)")
    p.add_argument("--plain", action="store_true", help="only run the self-play (for py-spy), print its rate")
    p.add_argument(
        "--torch-default",
        action="store_true",
        help="keep torch's threads (every core) and OpenMP's busy-waiting instead of bench.common.TORCH_ENV",
    )
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _parser()
    a = p.parse_args(argv)
    for name in ("dets", "sims", "leaves", "concurrency", "rounds", "max_batch", "top"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: must be at least 1")
    if a.warmup_rounds < 0:
        p.error("--warmup-rounds must be 0 or more")
    try:
        GameConfig(players=[a.players], cards=[a.cards])
    except ValueError as e:
        p.error(str(e))
    return a


def _top(prof: cProfile.Profile, key: str, n: int) -> str:
    """The ``n`` functions first by ``key`` ("tottime": own time, "cumulative"), as pstats prints them."""
    text = io.StringIO()
    pstats.Stats(prof, stream=text).strip_dirs().sort_stats(key).print_stats(n)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if not a.torch_default and any(k not in os.environ for k in TORCH_ENV):
        # OpenMP reads these once, when torch loads: start again with them set.
        args = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, "-m", "bench.profile", *args], child_env())
    what = (
        f"{a.players} players, {a.cards} cards, {a.dets}x{a.sims} search, {a.concurrency} games, "
        f"{a.rounds} rounds, preset {a.preset}, forward {a.mode}, "
        + ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in TORCH_ENV)
    )
    if a.plain:
        stats, batch, _, _ = run_loop(_run(a, a.rounds, sampler=False))
        s = stats.summary()
        rates = f"{s['rounds_per_min']:,.0f} rounds/min, {s['sims_per_s']:,.0f} sims/s"
        print(f"self-play ({what}): {rates}, mean batch {batch.get('mean_batch', 0):.1f}", flush=True)
        return 0
    out: Path = a.out or RESULTS / f"{stamp()}-profile"
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench.profile: {what}; commit {git_commit()}", flush=True)

    stats, batch, smp, kernels = run_loop(_run(a, a.rounds, sampler=True))
    wall = stats.seconds
    total = sum(stats.stage_seconds.values()) or 1.0
    rate = f"{stats.rounds} rounds, {60 * stats.rounds / wall:,.0f} rounds/min, {smp.samples} stack samples"
    print(f"\nstage breakdown of {wall:.1f} s of wall time ({rate}):")
    rows = []
    for stage in STAGES:
        sec = stats.stage_seconds.get(stage, 0.0) * wall / total
        rows.append({"stage": stage, "seconds": sec, "share": sec / wall})
        print(f"  {stage:28s} {sec:7.2f} s  {sec / wall:6.1%}")
    fwd = float(batch.get("forward_total_s", 0.0))
    print(
        f"  (the batcher's own clock: forward pass {fwd:.2f} s = {fwd / wall:.1%} over {batch.get('batches', 0)} "
        f"batches, mean batch {batch.get('mean_batch', 0):.1f}; queue wait {batch.get('queue_wait_mean_ms', 0):.2f} "
        f"ms a batch)"
    )
    print("  (the compiled search's own clock: " + ", ".join(
        f"{name} {sec:.2f} s = {sec / wall:.1%}" for name, sec in kernels.items()) + ")")  # fmt: skip

    prof = cProfile.Profile()
    prof.enable()
    pstats_stats, _, _, _ = run_loop(_run(a, a.rounds, sampler=False))
    prof.disable()
    prof_path = out / "profile.prof"
    prof.dump_stats(prof_path)
    own = _top(prof, "tottime", a.top)
    (out / "top.txt").write_text(f"# by own time\n{own}\n# by cumulative time\n{_top(prof, 'cumulative', a.top)}")
    under = f"{pstats_stats.rounds} rounds in {pstats_stats.seconds:.1f} s under the profiler"
    print(f"\ncProfile ({under}), top {a.top} functions by own time:")
    print(own[own.find("ncalls") :] if "ncalls" in own else own)
    summary = {
        "config": vars(a) | {"out": str(out)},
        "commit": git_commit(),
        "wall_s": wall,
        "rounds": stats.rounds,
        "rounds_per_min": 60 * stats.rounds / wall,
        "stages": rows,
        "kernel_seconds": kernels,
        "samples": smp.samples,
        "batcher": {k: v for k, v in batch.items() if k != "histogram"},
    }
    (out / "stages.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"files: {prof_path} (python -m pstats {prof_path}), {out / 'top.txt'}, {out / 'stages.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
