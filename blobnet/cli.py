"""The ``blobnet`` command (INTERFACES.md). Each subcommand parses here and runs elsewhere.

Every command that measures or rates something accepts ``--json`` and then prints exactly one
JSON object on the last line of standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "print_json"]


def print_json(obj: dict[str, object]) -> None:
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
    sp.add_argument("--mode", default="auto", choices=["auto", "inline", "thread"], help="CPU forward pass")
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
    ar.add_argument("--concurrency", type=int, default=128, help="tables live at once")
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
    return p


def _cpu_threads() -> None:
    """One torch thread unless OMP_NUM_THREADS says otherwise (set before torch is imported, so
    torch reads it). The event loop's Python keeps one core busy; a second torch thread helps only
    while the other core is idle, and its spin-waits turn a 7 ms forward pass of 512 rows into
    200 ms as soon as anything else runs there (measured on the 2-core machine)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _cpu_threads()
    try:
        if args.command == "selfplay":
            from clients.selfplay import selfplay_command

            return selfplay_command(args)
        if args.command == "arena":
            from blobnet.arena import arena_command

            return arena_command(args)
        if args.command == "train":
            from blobnet.train import train_command

            return train_command(args)
        from clients.terminal import play_command

        return play_command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as e:  # bad settings, checkpoints and configs say what is wrong
        print(f"blobnet {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
