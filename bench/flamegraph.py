"""A flame graph of a live self-play run, recorded by py-spy from outside the process.

    python -m bench.flamegraph [--rounds 300] [--rate 250] [--native] [--out DIR] [-- PROFILE_ARGS...]
    python -m bench.flamegraph --pid PID [--seconds 30] [--rate 250] [--native] [--out DIR]

py-spy samples the running interpreter without changing it (no cProfile overhead), so the picture
is the run as it is. It records ``python -m bench.profile --plain`` (the asyncio engine over an
in-process batcher, 4 players, 5 cards, 3 x 30 search, 64 games by default; arguments after ``--``
go to it) twice: once as an SVG flame graph (open it in a browser, click to zoom) and once as a
speedscope JSON (drop it on https://www.speedscope.app). ``--native`` adds C frames (torch,
numpy). Like bench/profile.py it runs with ``bench.common.TORCH_ENV`` unless ``--torch-default``.
``--pid`` attaches instead to a process already running (a ``blobnet train`` or ``blobnet selfplay``)
and its helper processes (py-spy ``--subprocesses``) for ``--seconds``, without stopping it. The
compiled search kernels show as the Python line that calls them; ``--native`` names the kernels'
own frames. py-spy needs ptrace: it works as root, or with kernel.yama.ptrace_scope = 0, or in a
container started with --cap-add SYS_PTRACE.

Output: bench/results/<date-time>-flamegraph/selfplay.svg and selfplay.speedscope.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import RESULTS, child_env, stamp

__all__ = ["main", "find_py_spy"]


def find_py_spy() -> str:
    """py-spy next to this interpreter (the venv's), else on PATH; RuntimeError saying how to get it."""
    here = Path(sys.executable).parent / "py-spy"
    if here.is_file():
        return str(here)
    found = shutil.which("py-spy")
    if found:
        return found
    raise RuntimeError("py-spy is not installed: `pip install py-spy` (it is in the project's dependencies)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    passthrough: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, passthrough = args[:i], args[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m bench.flamegraph", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300, help="self-play rounds recorded")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--native", action="store_true", help="include native (C/C++) frames")
    p.add_argument("--out", type=Path, help="folder (default bench/results/<date-time>-flamegraph)")
    p.add_argument("--torch-default", action="store_true", help="keep torch's own thread settings (bench/profile.py)")
    p.add_argument("--pid", type=int, help="attach to this running process and its children instead")
    p.add_argument("--seconds", type=int, default=30, help="with --pid: how long to record")
    a = p.parse_args(args)
    if a.rounds < 1 or a.rate < 1 or a.seconds < 1:
        p.error("--rounds, --rate and --seconds must be at least 1")
    if a.pid is not None and passthrough:
        p.error("arguments after -- are for a run this command starts: not with --pid")
    try:
        spy = find_py_spy()
    except RuntimeError as e:
        print(f"bench.flamegraph: {e}", file=sys.stderr)
        return 2
    out: Path = a.out or RESULTS / f"{stamp()}-flamegraph"
    out.mkdir(parents=True, exist_ok=True)
    if a.pid is not None:
        target = ["--pid", str(a.pid), "--subprocesses", "--duration", str(a.seconds)]
    else:
        target = ["--", sys.executable, "-m", "bench.profile", "--plain", "--rounds", str(a.rounds), *passthrough]
        if a.torch_default:
            target.append("--torch-default")
    paths = []
    for fmt, name in (("flamegraph", "selfplay.svg"), ("speedscope", "selfplay.speedscope.json")):
        path = out / name
        cmd = [spy, "record", "--output", str(path), "--format", fmt, "--rate", str(a.rate)]
        if a.native:
            cmd.append("--native")
        print(f"recording ({fmt}): {' '.join([*cmd, *target])}", flush=True)
        env = dict(os.environ) if a.torch_default else child_env()
        proc = subprocess.run([*cmd, *target], env=env)
        if proc.returncode != 0 or not path.is_file():
            print(
                f"bench.flamegraph: py-spy failed (exit {proc.returncode}). It needs ptrace: run as root, or set "
                "kernel.yama.ptrace_scope=0, or start the container with --cap-add SYS_PTRACE.",
                file=sys.stderr,
            )
            return 1
        paths.append(path)
    print("written:")
    for path in paths:
        print(f"  {path}")
    print("open the SVG in a browser; load the JSON at https://www.speedscope.app")
    return 0


if __name__ == "__main__":
    sys.exit(main())
