"""The ``blobnet`` command (INTERFACES.md): each subcommand parses and reports here; the work is
done by the drivers (``clients.pool``, ``clients.match``, ``clients.train``, ``clients.terminal``).

Every command that measures or rates something accepts ``--json`` and then prints exactly one
JSON object on the last line of standard output. SIGINT and SIGTERM take one path: the running
command is cancelled, its helper processes end with it, and it exits with a message.
"""

from __future__ import annotations

import os

# One torch thread unless OMP_NUM_THREADS says otherwise, set before torch is first imported (by
# the imports below), so torch reads it. The event loop's Python keeps one core busy; a second
# torch thread helps only while the other core is idle, and its spin-waits turn a 7 ms forward
# pass of 512 rows into 200 ms as soon as anything else runs there (measured on the 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from blobnet.aio import run_loop
from blobnet.checkpoint import load_model
from blobnet.config import (
    CPU_ENGINE,
    POLICY_TARGETS,
    GameConfig,
    RunConfig,
    SearchConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)  # fmt: skip
from blobnet.evaluator import Evaluator, FreeEvaluator
from blobnet.net import ENGINES, BlobNet, cpu_engine_for, make_net
from blobnet.player import NetworkPlayer, Player
from blobnet.ratings import MatchResult, format_report
from blobnet.replay import Examples
from blobnet.status import STATUS_FILE, Status
from clients.players import BotSeat, NetworkSeat, SeatSpec, arrays_of, parse_player
from clients.pool import BatcherSpec, EvaluatorSpec, FreeSpec, RemoteSpec, SelfPlayPool
from clients.remote import RemoteEvaluator
from clients.terminal import play_command
from clients.train import Trainer
from clients.web import web_command
from servers import Batcher

__all__ = ["main", "print_json"]

T = TypeVar("T")


def print_json(obj: Mapping[str, object]) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blobnet", description="Self-play training for Blob (Oh Hell).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("selfplay", help="run the self-play engine and report its speed")
    sp.add_argument("--players", type=int, default=4)
    sp.add_argument("--cards", type=int, default=5)
    sp.add_argument("--dets", type=int, default=3, help="determinizations per decision")
    sp.add_argument("--sims", type=int, default=30, help="simulations per determinization")
    sp.add_argument("--leaves", type=int, default=4, help="leaves in flight per tree")
    sp.add_argument(
        "--no-root-view", dest="root_view", action="store_false",
        help="value the searching seat's moves from the acting seat's view only (search.root_view=false)",
    )  # fmt: skip
    sp.add_argument(
        "--policy-target", default=SearchConfig().policy_target, choices=POLICY_TARGETS,
        help="the examples' policy targets (search.policy_target; default %(default)s)",
    )  # fmt: skip
    sp.add_argument("--concurrency", type=int, default=256, help="games live at once, in all processes together")
    sp.add_argument(
        "--workers", type=int, default=0, help="engine processes (default: one per CPU core on a CPU, else 1)"
    )
    sp.add_argument("--rounds", type=int, default=1000)
    sp.add_argument("--games", action="store_true", help="full games on the standard schedule, not single rounds")
    sp.add_argument("--checkpoint", help="network weights (default: a freshly initialised network)")
    sp.add_argument("--preset", default="small", help="network preset when no checkpoint is given")
    sp.add_argument("--server", help="use a running server (unix:PATH or tcp:HOST:PORT) instead of an in-process one")
    sp.add_argument("--free", action="store_true", help="a free evaluator: the search-only ceiling")
    sp.add_argument(
        "--opponent", action="append", default=[], metavar="BOT",
        help="a bot (heuristic, random, ismcts:sims=1000,c=10) in one seat of every table; repeat for more",
    )  # fmt: skip
    sp.add_argument("--cache", type=int, default=65536, help="network answers kept per engine (0: no cache)")
    sp.add_argument("--mode", default="auto", choices=["auto", "inline", "thread"], help="CPU forward pass")
    sp.add_argument("--engine", choices=list(ENGINES),
                    help=f"CPU forward engine (default: {CPU_ENGINE} in float32, else eager)")  # fmt: skip
    sp.add_argument(
        "--dense", dest="sparse", action="store_false",
        help="the first layer as one dense product (default: over each row's nonzero entries)",
    )  # fmt: skip
    sp.add_argument("--max-batch", type=int, default=4096)
    sp.add_argument("--device", default="cpu")
    sp.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="inference precision"
    )
    sp.add_argument("--out", help="write the examples to this .npz file")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")

    ar = sub.add_parser("arena", help="play two players against each other on mirrored deals")
    ar.add_argument("--a", required=True, help="random, heuristic, or a checkpoint path (path:dets=3,sims=30)")
    ar.add_argument("--b", required=True)
    ar.add_argument("--players", type=int, default=4)
    ar.add_argument("--cards", type=int, default=5)
    ar.add_argument("--rounds", type=int, default=2000, help="rounds played; each deal is played twice, mirrored")
    ar.add_argument("--concurrency", type=int, default=128, help="tables live at once, in all processes together")
    ar.add_argument(
        "--workers", type=int, default=0, help="processes the deals are split over (default: one per CPU core)"
    )
    ar.add_argument("--seed", type=int, default=0)
    ar.add_argument("--json", action="store_true")

    tr = sub.add_parser("train", help="self-play training")
    tr.add_argument("--config", help="TOML file (default: built-in defaults)")
    tr.add_argument("--run-dir", required=True)
    tr.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides")
    tr.add_argument("--json", action="store_true")

    pl = sub.add_parser("play", help="play against the model at the terminal")
    pl.add_argument("--players", type=int, default=4)
    pl.add_argument("--cards", type=int, default=5)
    pl.add_argument("--opponent", default="heuristic", help="random, heuristic, or a checkpoint path")
    pl.add_argument("--rounds", type=int, default=1, help="rounds to play (0: a full game on the standard schedule)")
    pl.add_argument("--seed", type=int, default=None)

    wb = sub.add_parser("web", help="play in the browser, see what the model thinks, watch a training run")
    wb.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    wb.add_argument("--port", type=int, default=8000)
    wb.add_argument("--run", help="a training run directory to show live (blobnet train --run-dir)")
    wb.add_argument(
        "--opponent", action="append", default=[], metavar="PLAYER",
        help="a player the page may seat (repeatable; random and heuristic always): ismcts, path:dets=3,sims=30",
    )  # fmt: skip
    wb.add_argument("--model", help="checkpoint whose search gives the hints (path or path:dets=3,sims=30)")
    wb.add_argument("--max-games", type=int, default=64, help="games held at once, all browsers together")
    wb.add_argument("--games-per-session", type=int, default=4, help="games one browser may hold at once")
    wb.add_argument("--idle-minutes", type=float, default=30.0, help="a game or session unused this long is dropped")
    wb.add_argument("--seed", type=int, default=None, help="seeds the deals and the players")
    return p


# -- blobnet selfplay ---------------------------------------------------------------------------------
def default_workers(args: argparse.Namespace) -> int:
    """One engine per CPU core when the evaluator is this machine's CPU (or free), else one: a
    GPU or a separate server does the forward passes, and one engine keeps them busy."""
    if args.server or args.device != "cpu":
        return 1
    return _cores()


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


async def _selfplay(args: argparse.Namespace) -> dict[str, float | int]:
    search = SearchConfig(dets=args.dets, sims=args.sims, leaves=args.leaves, root_view=args.root_view,
                          cache=args.cache, policy_target=args.policy_target)  # fmt: skip
    game = GameConfig(mode="games" if args.games else "rounds", players=[args.players], cards=[args.cards])
    opponents = tuple(args.opponent)  # pool.run names a bad one before any process starts
    pool = SelfPlayPool(args.workers or default_workers(args))
    weights = None
    remote: RemoteEvaluator | None = None
    evaluator: Evaluator
    spec: EvaluatorSpec
    if args.free:
        evaluator, spec = FreeEvaluator(), FreeSpec()
    elif args.server:
        evaluator = remote = await RemoteEvaluator.connect(args.server)
        await remote.stats(reset=True)
        spec = RemoteSpec(args.server)
    else:
        model = load_model(args.checkpoint) if args.checkpoint else make_net(args.preset, seed=args.seed)
        weights = model.state_dict()
        engine = args.engine or cpu_engine_for(args.dtype)
        spec = BatcherSpec(preset=model.config.name, dtype=args.dtype, max_batch=args.max_batch, mode=args.mode,
                           device=args.device, engine=engine, sparse=args.sparse)  # fmt: skip
        evaluator = Batcher(model, max_batch=args.max_batch, device=args.device, mode=args.mode, dtype=args.dtype,
                            engine=engine, sparse=args.sparse)  # fmt: skip
    parts: list[Examples] = []
    status = Status(enabled=not args.json)
    try:
        stats = await pool.run(
            evaluator,
            spec,
            weights,
            search=search,
            game=game,
            rounds=args.rounds,
            concurrency=args.concurrency,
            seed=args.seed,
            sink=parts.append if args.out else None,
            on_progress=lambda done: status.phase(1, 1, "self-play", done, args.rounds),
            opponents=opponents,
        )
        avg_batch = pool.mean_batch
        if remote is not None:
            avg_batch = float((await remote.stats())["mean_batch"])
    finally:
        pool.close()
        await evaluator.aclose()
    out = stats.summary()
    out["avg_batch"] = avg_batch
    keys = ["rounds", "rounds_per_min", "sims_per_s", "evals_per_s", "avg_batch", "examples", "searched_decisions"]
    tail = ("uniform_target_fraction", "cache_hit_rate", "cache_collisions", "seconds")
    ordered = {k: out[k] for k in keys} | {k: out[k] for k in tail}
    status.done(
        f"{stats.rounds} rounds in {stats.seconds:.1f} s on {min(pool.workers, args.concurrency)} process(es): "
        f"{ordered['rounds_per_min']:.0f} rounds/min, {ordered['sims_per_s']:.0f} simulations/s, "
        f"{ordered['evals_per_s']:.0f} evaluations/s, mean batch {ordered['avg_batch']:.1f}, "
        f"{stats.examples} examples, uniform targets {ordered['uniform_target_fraction']:.2%}, "
        f"cache hits {ordered['cache_hit_rate']:.1%}"
    )
    if args.out:
        ex = Examples.concat(parts)
        np.savez_compressed(args.out, features=ex.features, legal=ex.legal, policy=ex.policy, value=ex.value)
    return ordered


def selfplay_command(args: argparse.Namespace) -> int:
    """``blobnet selfplay`` (INTERFACES.md)."""
    result = _interruptible(_selfplay(args))
    if args.json:
        print_json(result)
    return 0


# -- blobnet arena ------------------------------------------------------------------------------------
def _seat(player: Player, spec: str, seed: int) -> SeatSpec:
    """What another process needs to build ``player`` (parsed from ``spec`` with ``seed``)."""
    if isinstance(player, NetworkPlayer) and isinstance(player.model, BlobNet):
        weights = arrays_of(player.model.state_dict())
        return NetworkSeat(preset=player.model.config.name, weights=weights, search=player.search, seed=seed)
    return BotSeat(spec, seed)


def arena_command(args: argparse.Namespace) -> int:
    """``blobnet arena``: parse both players, play the match with its deals split over ``--workers``
    processes (``SelfPlayPool.split_match``: the merged result is the whole match's), print the
    report (and ``--json``)."""
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: give 1 or more processes (0: one per CPU core)")
    seats = []
    for spec, seed in ((args.a, 2 * args.seed), (args.b, 2 * args.seed + 1)):
        player = parse_player(spec, seed=seed)  # names a bad player before any process starts
        seats.append(_seat(player, spec, seed))
    step = max(1, args.rounds // 20)

    def progress(done: int, total: int) -> None:  # of this process's share
        if sys.stderr.isatty() and (done % step == 0 or done == total):
            print(f"\r{done}/{total} rounds here", end="" if done < total else "\n", file=sys.stderr, flush=True)

    async def match() -> MatchResult:
        pool = SelfPlayPool(args.workers or _cores())
        try:
            return await pool.split_match(*seats, players=args.players, cards=args.cards, rounds=args.rounds,
                                          seed=args.seed, concurrency=args.concurrency, on_round=progress)  # fmt: skip
        finally:
            pool.close()

    result = _interruptible(match())
    print(format_report(result, a=args.a, b=args.b, players=args.players, cards=args.cards), flush=True)
    if args.json:
        print_json(result.to_dict())
    return 0


# -- blobnet train ------------------------------------------------------------------------------------
def _run_config(args: argparse.Namespace) -> RunConfig:
    """A new run reads --config; a resumed one its own config.json, with any --set on top."""
    stored = Path(args.run_dir) / "config.json"
    if args.resume and stored.exists():
        data = json.loads(stored.read_text())
        return config_from_dict(apply_overrides(data, args.overrides), str(stored))
    return load_config(args.config, args.overrides)


def train_command(args: argparse.Namespace) -> int:
    """``blobnet train``: the trainer handles SIGINT and SIGTERM itself (it saves, then stops)."""
    config = _run_config(args)
    t0 = time.perf_counter()
    # the progress also goes to the run directory, where ``blobnet web --run`` reads it
    status = Status(enabled=not args.json, path=Path(args.run_dir) / STATUS_FILE)
    trainer = Trainer(Path(args.run_dir), config, resume=args.resume, status=status)
    trainer.prepare()
    result = run_loop(trainer.run())
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print_json(result)
    else:
        print(f"wall time {result['seconds']:.0f} s; run directory {args.run_dir}")
    return 0


def _interruptible(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the command's event loop; SIGTERM cancels it as Ctrl-C does (its ``finally``
    blocks close batchers and end helper processes), then raises KeyboardInterrupt."""

    async def run() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return run_loop(run())


COMMANDS = {
    "selfplay": selfplay_command, "arena": arena_command, "train": train_command, "play": play_command,
    "web": web_command,
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as e:  # bad settings, checkpoints and configs say what is wrong
        print(f"blobnet {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
