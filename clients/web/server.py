"""``blobnet web``: the page, the tables' JSON API and a training run's live progress, on one port.

One asyncio process: aiohttp serves on the same event loop as the network players' batchers
(``clients.players.batched``) and the hint model's, so a table's bot moves and hints are awaited
like any other search's and batch with the other tables'. The page is three static files
(``static/``: HTML, CSS, one JavaScript module), no build step, nothing fetched from elsewhere.

Endpoints (JSON; an error is ``{"error": message}`` with a 4xx status and changes nothing):

    GET    /                         the page (and the session cookie)
    GET    /api/config               the opponents to choose from, the hint model, whether a run is watched
    POST   /api/games                a new table: {players, mode: round|game, cards, seat, opponents} -> 201
    GET    /api/games/{id}           the table as the person sees it
    POST   /api/games/{id}/move      {action}: the person's move; the others then move up to the person's turn
    POST   /api/games/{id}/next      a game's next round, once the round is over
    GET    /api/games/{id}/replay    a finished round (?round=k, default the last): the deal, every move, the hints
    DELETE /api/games/{id}
    GET    /api/run                  the watched run's progress and curves (``--run``)
    GET    /api/run/events           the same, pushed as server-sent events whenever the run's files change

Safe by default: it binds to 127.0.0.1 and then answers only requests addressed to a loopback name
(a page elsewhere cannot reach it by pointing its own name at 127.0.0.1); the session cookie is
HttpOnly and SameSite=Strict and every change is a JSON POST, which another site's page cannot send
with it; a game is its session's alone (``clients.web.sessions``); opponents are chosen by name
from a menu fixed at start, and every checkpoint comes from the command line, never a request.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
from aiohttp import web
from aiohttp.typedefs import Handler

from blobnet.aio import run_loop
from blobnet.player import AsyncPlayer, Player, aclose_player
from blobnet.rules import check_table
from clients.players import parse_player
from clients.web.hints import Hinter
from clients.web.runwatch import RunWatch
from clients.web.sessions import Full, Limits, NotFound, Registry, Session
from clients.web.table import Mode, NotYourTurn, Table

__all__ = ["WebConfig", "WebServer", "make_app", "serve", "web_command", "COOKIE"]

COOKIE = "blobnet_session"
STATIC = Path(__file__).parent / "static"
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
BUILT_IN = ("heuristic", "random", "ismcts")  # opponents always on the menu: no file behind them
MAX_BODY = 16 * 1024  # bytes: the largest request is a new game, a few dozen bytes
MODES: dict[str, Mode] = {"round": "round", "game": "game"}  # a request's mode, as the table takes it
HEARTBEAT_S = 15.0  # an event stream idle this long gets a comment line, to notice a page gone


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """What ``blobnet web`` is started with; nothing here can be changed by a request."""

    host: str = "127.0.0.1"  # the address to bind; loopback unless the person says otherwise
    port: int = 8000
    run: Path | None = None  # a training run directory to watch
    opponents: tuple[str, ...] = ()  # player specs added to the menu (clients.players.parse_player)
    model: str | None = None  # the checkpoint spec of the hint model (path or path:dets=3,sims=30)
    limits: Limits = field(default_factory=Limits)
    seed: int | None = None  # seeds the deals and the players (None: fresh entropy)
    poll_s: float = 1.0  # how often the run's files are looked at


class NewGame(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request for a table."""

    players: int = 4
    mode: str = "round"  # "round" or "game" (checked with a message saying so)
    cards: int | None = None  # a round's cards, or a game's first round's (None: the defaults)
    seat: int = 0  # the person's seat
    opponents: list[str] = []  # menu names: one for every other seat, or one per other seat in order


class Move(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: int  # RULES.md: a card id 0..51, or 52 + bid


class Opponent:
    """A menu entry: a player spec read once at start (a bad one stops the server with its error).
    A player that waits on the loop (a network player) is shared by every table, so their searches
    share its batcher; any other is made anew for each seat of each table (``clients.web.table``)."""

    def __init__(self, spec: str, seed: int | None) -> None:
        self.spec = spec
        player = parse_player(spec, seed=seed)
        self.shared: Player | None = player if isinstance(player, AsyncPlayer) else None

    def player(self, seed: int) -> Player:
        return self.shared if self.shared is not None else parse_player(self.spec, seed=seed)


class WebServer:
    """The server's state: the registry of sessions and tables, the opponent menu, the hint model
    and the watched run."""

    def __init__(self, config: WebConfig, *, registry: Registry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else Registry(config.limits)
        self.seeds = np.random.SeedSequence(config.seed)
        specs = list(BUILT_IN) + [s for s in config.opponents if s not in BUILT_IN]
        self.menu = {spec: Opponent(spec, seed=config.seed) for spec in dict.fromkeys(specs)}
        self.hinter = Hinter(config.model) if config.model else None
        if config.run is not None and not config.run.is_dir():
            raise ValueError(f"--run {config.run}: no such directory (give a run directory of blobnet train)")
        self.watch = RunWatch(config.run) if config.run is not None else None

    async def aclose(self) -> None:
        """Release the batchers of the shared players and of the hint model."""
        for opponent in self.menu.values():
            if opponent.shared is not None:
                await aclose_player(opponent.shared)
        if self.hinter is not None:
            await self.hinter.aclose()

    # -- tables ----------------------------------------------------------------------------------
    def _opponents(self, req: NewGame) -> list[str]:
        """The menu name of every seat but the person's, in seat order."""
        others = req.players - 1
        names = req.opponents or [BUILT_IN[0]]
        if len(names) == 1:
            names = names * others
        if len(names) != others:
            raise ValueError(f"opponents: give one name, or {others} (one per other seat); got {len(names)}")
        for name in names:
            if name not in self.menu:
                raise ValueError(f"opponent {name!r}: choose one of {', '.join(map(repr, self.menu))}")
        return names

    async def new_table(self, session: Session, req: NewGame) -> Table:
        check_table(req.players, 1)  # the number of players first: the other checks count seats
        if not 0 <= req.seat < req.players:
            raise ValueError(f"seat {req.seat}: the person's seat must be 0..{req.players - 1}")
        if req.mode not in MODES:
            raise ValueError(f"mode {req.mode!r}: give {' or '.join(MODES)}")
        names = self._opponents(req)
        self.registry.check_room(session)
        rng = np.random.default_rng(self.seeds.spawn(1)[0])
        seats: list[Player | None] = [self.menu[n].player(int(rng.integers(2**31))) for n in names]
        seats.insert(req.seat, None)
        names.insert(req.seat, "you")
        table = Table(id=self.registry.new_id(), owner=session.token, players=req.players, seat=req.seat,
                      opponents=seats, names=names, mode=MODES[req.mode], cards=req.cards, rng=rng,
                      hinter=self.hinter, clock=self.registry.clock)  # fmt: skip
        self.registry.add(session, table)  # before the first await: the limits hold under concurrent requests
        try:
            await table.start()
        except BaseException:
            self.registry.remove(session, table.id)
            raise
        return table


SERVER = web.AppKey("server", WebServer)
SESSION = web.RequestKey("session", Session)  # the request's session, set by the middleware


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(obj), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check, session cookie, and every refusal as a JSON error with a 4xx status."""
    server = request.app[SERVER]
    if _loopback(server.config.host) and not _loopback(request.url.host or ""):
        return _error(403, f"host {request.host!r}: this server answers only loopback names (localhost, 127.0.0.1)")
    if request.method == "POST" and request.content_type != "application/json":
        return _error(415, f"content type {request.content_type!r}: send JSON (application/json)")
    registry = server.registry
    registry.expire()
    try:
        session = registry.session(request.cookies.get(COOKIE))
    except Full as e:
        return _error(e.status, str(e))
    request[SESSION] = session
    response = await _answer(request, handler)
    if not response.prepared:  # an event stream sets its cookie itself, before its first event
        max_age = int(registry.limits.idle_s)
        response.set_cookie(COOKIE, session.token, max_age=max_age, httponly=True, samesite="Strict", path="/")
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or its refusal as a JSON error: each kind of refusal has its status."""
    try:
        return await handler(request)
    except NotFound as e:
        return _error(404, str(e))
    except NotYourTurn as e:
        return _error(409, str(e))
    except Full as e:
        return _error(e.status, str(e))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return _error(400, f"bad request body: {e}")
    except ValueError as e:  # IllegalMove included: the rules' reason
        return _error(400, str(e))


async def _body(request: web.Request) -> bytes:
    return await request.read() or b"{}"


async def _page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    if name not in PAGES:
        raise web.HTTPNotFound(text=f"no file {name!r}")
    return web.Response(body=(STATIC / name).read_bytes(), content_type=PAGES[name],
                        headers={"Cache-Control": "no-cache"})  # fmt: skip


async def _config(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    limits = server.config.limits
    return _json({
        "opponents": list(server.menu), "model": server.hinter.name if server.hinter else None,
        "run": server.watch is not None, "per_session": limits.per_session, "idle_s": limits.idle_s,
    })  # fmt: skip


def _table(request: web.Request) -> Table:
    return request.app[SERVER].registry.get(request[SESSION], request.match_info["id"])


async def _create(request: web.Request) -> web.Response:
    req = msgspec.json.decode(await _body(request), type=NewGame)
    table = await request.app[SERVER].new_table(request[SESSION], req)
    return _json(table.state(), 201)


async def _state(request: web.Request) -> web.Response:
    return _json(_table(request).state())


async def _move(request: web.Request) -> web.Response:
    table = _table(request)
    move = msgspec.json.decode(await _body(request), type=Move)
    await table.move(move.action)
    return _json(table.state())


async def _next(request: web.Request) -> web.Response:
    table = _table(request)
    await table.next_round()
    return _json(table.state())


async def _replay(request: web.Request) -> web.Response:
    table = _table(request)
    raw = request.query.get("round")
    if raw is not None and not raw.isdigit():
        raise ValueError(f"round={raw!r}: give a round number 0, 1, ...")
    return _json(table.replay(None if raw is None else int(raw)))


async def _delete(request: web.Request) -> web.Response:
    request.app[SERVER].registry.remove(request[SESSION], request.match_info["id"])
    return _json({"deleted": request.match_info["id"]})


def _watch(request: web.Request) -> RunWatch:
    watch = request.app[SERVER].watch
    if watch is None:
        raise NotFound("no training run is watched: start the server with --run RUN_DIR")
    return watch


async def _run(request: web.Request) -> web.Response:
    return _json(_watch(request).snapshot())


async def _run_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot now and at every change of the run's files; a comment line
    after ``HEARTBEAT_S`` of quiet, whose failed write ends the stream of a page that has gone."""
    watch = _watch(request)
    server = request.app[SERVER]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.set_cookie(COOKIE, request[SESSION].token, httponly=True, samesite="Strict", path="/")
    await response.prepare(request)
    last, quiet = None, 0.0
    try:
        while True:
            stamp = watch.stamp()
            if stamp != last:
                last, quiet = stamp, 0.0
                await response.write(b"data: " + msgspec.json.encode(watch.snapshot()) + b"\n\n")
            elif quiet >= HEARTBEAT_S:
                quiet = 0.0
                await response.write(b": still watching\n\n")
            await asyncio.sleep(server.config.poll_s)
            quiet += server.config.poll_s
    except ConnectionResetError:  # the page has gone
        return response


def make_app(server: WebServer) -> web.Application:
    """The aiohttp application over ``server``; its cleanup closes the server's batchers."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[SERVER] = server
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _page)
    app.router.add_get("/api/config", _config)
    app.router.add_post("/api/games", _create)
    app.router.add_get("/api/games/{id}", _state)
    app.router.add_post("/api/games/{id}/move", _move)
    app.router.add_post("/api/games/{id}/next", _next)
    app.router.add_get("/api/games/{id}/replay", _replay)
    app.router.add_delete("/api/games/{id}", _delete)
    app.router.add_get("/api/run", _run)
    app.router.add_get("/api/run/events", _run_events)

    async def close(app: web.Application) -> None:
        await app[SERVER].aclose()

    app.on_cleanup.append(close)
    return app


async def serve(config: WebConfig, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM (one path for both), then close the tables' batchers."""
    server = WebServer(config)
    runner = web.AppRunner(make_app(server), shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        where = f"[{config.host}]" if ":" in config.host else config.host
        print(f"blobnet web: http://{where}:{config.port}/  (Ctrl-C stops it)", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def web_config(args: argparse.Namespace) -> WebConfig:
    """The command line's settings (``clients.cli``), checked."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: give 0..65535")
    limits = Limits(max_tables=args.max_games, per_session=args.games_per_session, idle_s=args.idle_minutes * 60)
    return WebConfig(host=args.host, port=args.port, run=Path(args.run) if args.run else None,
                     opponents=tuple(args.opponent), model=args.model, limits=limits, seed=args.seed)  # fmt: skip


def web_command(args: argparse.Namespace) -> int:
    """``blobnet web``: serve the page until interrupted."""
    run_loop(serve(web_config(args)))
    return 0
