"""``python -m servers --listen unix:PATH | tcp:HOST:PORT [--checkpoint FILE] [--preset NAME]``

Serves one batcher over a socket (servers/socket.py); a client on a unix:PATH socket sends its rows
through a shared-memory ring of its own (servers/shm.py). Without a checkpoint it serves a freshly
initialised network of ``--preset`` (for measurement). Prints ``serving on ADDRESS`` on standard
output once it accepts connections (with the real port when PORT is 0). SIGINT and SIGTERM take one
path: stop listening, close the connections, close the batcher, remove the Unix socket, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from blobnet.checkpoint import load_model
from blobnet.config import CPU_ENGINE, DEFAULT_PRESET, PRESETS
from blobnet.net import ENGINES, cpu_engine_for, make_net
from servers.batcher import MODES, Batcher
from servers.socket import Server
from servers.wire import DEFAULT_MAX_FRAME

__all__ = ["main", "build_parser"]

log = logging.getLogger("servers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m servers", description=__doc__.split("\n\n")[1])
    p.add_argument("--listen", required=True, help="unix:PATH or tcp:HOST:PORT (PORT 0: any free port)")
    p.add_argument("--checkpoint", help="serve this checkpoint's model (default: a fresh --preset network)")
    p.add_argument(
        "--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="network size without a checkpoint"
    )
    p.add_argument("--seed", type=int, default=None, help="weights seed of the fresh network")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--mode", default="auto", choices=MODES, help="where the CPU forward pass runs")
    p.add_argument("--dtype", default=None, help="bf16 or fp16 (default float32)")
    p.add_argument(
        "--engine", choices=list(ENGINES), help=f"CPU forward engine (default: {CPU_ENGINE} in float32, else eager)"
    )
    p.add_argument(
        "--dense", dest="sparse", action="store_false",
        help="the first layer as one dense product (default: over each row's nonzero entries)",
    )  # fmt: skip
    p.add_argument("--max-batch", type=int, default=1024, help="rows per forward pass at most")
    p.add_argument("--max-wait", type=float, default=None, help="seconds a batch waits for other clients' rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME, help="largest frame accepted, bytes")
    return p


async def serve(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint) if args.checkpoint else make_net(args.preset, seed=args.seed)
    try:
        batcher = Batcher(
            model, max_batch=args.max_batch, device=args.device, mode=args.mode, dtype=args.dtype,
            max_wait=args.max_wait, threads=args.threads, engine=args.engine, sparse=args.sparse,
        )  # fmt: skip
    except ValueError as e:  # settings that do not go together (--engine onnx --dtype bf16)
        raise SystemExit(f"python -m servers: error: {e}") from None
    server = Server(batcher, args.listen, max_frame=args.max_frame)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        address = await server.start()
        print(f"serving on {address}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.aclose()
        await batcher.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.engine = args.engine or cpu_engine_for(args.dtype)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        import uvloop  # optional (an extra): the standard event loop serves without it
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
