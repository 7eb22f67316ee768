"""``blobnet web`` through aiohttp's test client: the page, playing whole rounds and games, the rules'
refusals, bad input, ownership, limits and expiry. Bots sit at the tables; the hint tests use a
tiny fresh checkpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from blobnet.cards import BID0
from blobnet.checkpoint import save_checkpoint
from blobnet.net import make_net
from blobnet.player import NetworkPlayer
from blobnet.rules import Round, View
from clients.cli import main
from clients.web import WebConfig, WebServer, make_app
from clients.web.server import COOKIE, SERVER
from clients.web.sessions import Limits, Registry
from clients.web.table import NotYourTurn, Table


class Clock:
    """A clock the tests move by hand, to age sessions and games."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@asynccontextmanager
async def serving(config: WebConfig | None = None, clock: Clock | None = None) -> AsyncIterator[TestClient]:
    config = config or WebConfig(seed=3)
    registry = Registry(config.limits, clock=clock or Clock())
    client = TestClient(TestServer(make_app(WebServer(config, registry=registry))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def post(client: TestClient, path: str, body: object, status: int = 200) -> dict[str, Any]:
    response = await client.post(path, json=body)
    data = await response.json()
    assert response.status == status, data
    return data


async def get(client: TestClient, path: str, status: int = 200) -> dict[str, Any]:
    response = await client.get(path)
    data = await response.json()
    assert response.status == status, data
    return data


async def play_out(client: TestClient, state: dict[str, Any], pick: Callable[[list[int]], int] = min) -> dict[str, Any]:
    """The person plays ``pick`` of their legal moves until the round is over."""
    while state["scores"] is None:
        assert state["to_play"] == state["seat"] and state["legal"]
        state = await post(client, f"/api/games/{state['id']}/move", {"action": pick(state["legal"])})
    return state


def replayed_scores(record: dict[str, Any]) -> list[int]:
    """The round's deal and moves played again by the rules engine."""
    r = Round.deal(
        players=record["players"],
        cards=record["cards"],
        trump=record["trump"],
        dealer=record["dealer"],
        hands=record["hands"],
    )
    for seat, action in record["moves"]:
        assert r.to_play == seat
        r.play(action)
    return r.scores()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "tiny.pt"
    save_checkpoint(path, preset="tiny", model=make_net("tiny", seed=0).state_dict())
    return path


def test_page_and_its_files_are_served_with_an_httponly_session_cookie():
    async def go() -> None:
        async with serving() as client:
            page = await client.get("/")
            assert page.status == 200 and page.content_type == "text/html"
            assert '<script type="module" src="/static/app.js">' in await page.text()
            cookie = page.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
                response = await client.get(f"/static/{name}")
                assert response.status == 200 and response.content_type == kind
            assert (await client.get("/static/secret.py")).status == 404
            config = await get(client, "/api/config")
            assert (
                config["opponents"] == ["heuristic", "random", "ismcts"]
                and config["model"] is None
                and not config["run"]
            )

    run(go())


def test_a_round_played_through_the_api_scores_as_the_rules_engine_replays_it():
    async def go() -> None:
        async with serving() as client:
            state = await post(
                client,
                "/api/games",
                {"players": 4, "cards": 5, "seat": 2, "opponents": ["random", "heuristic", "random"]},
                201,
            )
            assert state["names"] == ["random", "heuristic", "you", "random"]
            assert len(state["hand"]) == 5 and state["to_play"] == 2 and state["hint"] is None
            assert "hands" not in state  # no other seat's cards while the round is on
            state = await play_out(client, state)
            record = await get(client, f"/api/games/{state['id']}/replay")
            assert len(record["moves"]) == 4 + 4 * 5 and record["hints"] == [None] * 24
            assert replayed_scores(record) == state["scores"] == state["totals"]
            assert state["over"] and state["winners"] == [
                s for s in range(4) if state["totals"][s] == max(state["totals"])
            ]
            assert (await post(client, f"/api/games/{state['id']}/move", {"action": 0}, 409))["error"].startswith(
                "the round is over"
            )

    run(go())


def test_an_illegal_move_is_refused_with_the_rules_reason_and_changes_nothing():
    async def go() -> None:
        async with serving() as client:
            state = await post(client, "/api/games", {"players": 3, "cards": 4}, 201)
            gid = state["id"]
            refusals = {
                BID0 + 9: "you may not bid 9 with 4 cards dealt",
                70: "action 70 is outside 0..69",
                "AS": "Expected `int`, got `str`",
                True: "Expected `int`, got `bool`",
            }
            for action, reason in refusals.items():
                error = (await post(client, f"/api/games/{gid}/move", {"action": action}, 400))["error"]
                assert reason in error
            assert await get(client, f"/api/games/{gid}") == state
            followed = False
            while state["scores"] is None:
                outside = [c for c in state["hand"] if c not in state["legal"]]
                if state["phase"] == "play" and outside:
                    error = (await post(client, f"/api/games/{gid}/move", {"action": outside[0]}, 400))["error"]
                    assert error.startswith("you may not play") and "it must follow" in error
                    assert await get(client, f"/api/games/{gid}") == state
                    followed = True
                state = await post(client, f"/api/games/{gid}/move", {"action": state["legal"][0]})
            assert followed  # seed 3 deals the person a hand that must follow suit at least once

    run(go())


def test_the_dealers_hooked_bid_is_refused_with_the_rules_reason():
    async def go() -> None:
        async with serving() as client:
            for _ in range(12):  # the dealer is drawn at random: the person deals within a few tables
                state = await post(client, "/api/games", {"players": 3, "cards": 2}, 201)
                if state["dealer"] == state["seat"]:
                    break
                await client.delete(f"/api/games/{state['id']}")
            assert state["dealer"] == state["seat"] and state["phase"] == "bid"
            hooked = [b for b in range(3) if BID0 + b not in state["legal"]]
            assert len(hooked) == 1
            error = (await post(client, f"/api/games/{state['id']}/move", {"action": BID0 + hooked[0]}, 400))["error"]
            assert error.startswith(f"you may not bid {hooked[0]}: the dealer may not make the bids total 2")
            assert await get(client, f"/api/games/{state['id']}") == state

    run(go())


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"players": 9}, "players=9: Blob is played by 3 to 8 players"),
        ({"players": -5}, "players=-5: Blob is played by 3 to 8 players"),
        ({"players": 4, "cards": 14}, "cards=14 with 4 players"),
        ({"players": 4, "seat": 4}, "seat 4"),
        ({"players": 4, "seat": -1}, "seat -1"),
        ({"players": 4, "opponents": ["runs/default/best.pt"]}, "choose one of"),
        ({"players": 4, "opponents": ["random", "random"]}, "give one name, or 3"),
        ({"mode": "chess"}, "mode 'chess': give round or game"),
        ({"players": 4, "checkpoint": "x.pt"}, "unknown field `checkpoint`"),
    ],
)
def test_a_bad_new_game_request_is_refused_naming_what_is_wrong(body: dict[str, Any], reason: str):
    async def go() -> None:
        async with serving() as client:
            assert reason in (await post(client, "/api/games", body, 400))["error"]
            assert (await post(client, "/api/games", {}, 201))["players"] == 4  # nothing was held

    run(go())


def test_bad_bodies_ids_and_hosts_are_refused():
    async def go() -> None:
        async with serving() as client:
            response = await client.post("/api/games", data="players=4", headers={"Content-Type": "text/plain"})
            assert response.status == 415 and "send JSON" in (await response.json())["error"]
            response = await client.post("/api/games", data="{", headers={"Content-Type": "application/json"})
            assert response.status == 400 and "bad request body" in (await response.json())["error"]
            assert "game id" in (await get(client, "/api/games/bad!id", 400))["error"]
            assert "no game 'nosuchgame'" in (await get(client, "/api/games/nosuchgame", 404))["error"]
            state = await post(client, "/api/games", {}, 201)
            assert "round='x'" in (await get(client, f"/api/games/{state['id']}/replay?round=x", 400))["error"]
            assert "no round" in (await get(client, f"/api/games/{state['id']}/replay", 400))["error"]
            response = await client.get("/api/config", headers={"Host": "blobnet.example.com"})
            assert response.status == 403 and "loopback" in (await response.json())["error"]
            assert "--run" in (await get(client, "/api/run", 404))["error"]

    run(go())


def test_a_game_belongs_to_the_session_that_made_it():
    async def go() -> None:
        async with serving() as client:
            state = await post(client, "/api/games", {}, 201)
            gid = state["id"]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
                for method, path, body in (
                    ("GET", "", None),
                    ("POST", "/move", {"action": state["legal"][0]}),
                    ("POST", "/next", {}),
                    ("GET", "/replay", None),
                    ("DELETE", "", None),
                ):
                    async with other.request(method, client.make_url(f"/api/games/{gid}{path}"), json=body) as r:
                        assert r.status == 404 and "no game" in (await r.json())["error"]
                forged = {COOKIE: "x" * 43}  # a token of the right form that the server never issued
                async with other.get(client.make_url(f"/api/games/{gid}"), cookies=forged) as r:
                    assert r.status == 404
            assert await get(client, f"/api/games/{gid}") == state

    run(go())


def test_the_server_holds_a_bounded_number_of_games():
    async def go() -> None:
        async with serving(WebConfig(limits=Limits(max_tables=3, per_session=2))) as client:
            await post(client, "/api/games", {}, 201)
            second = await post(client, "/api/games", {}, 201)
            assert "this session holds its most games (2)" in (await post(client, "/api/games", {}, 429))["error"]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
                url = client.make_url("/api/games")
                async with other.post(url, json={}) as r:
                    assert r.status == 201
                async with other.post(url, json={}) as r:
                    assert r.status == 503 and "the server holds its most games (3)" in (await r.json())["error"]
            await client.delete(f"/api/games/{second['id']}")
            await post(client, "/api/games", {}, 201)

    run(go())


def test_idle_games_and_sessions_expire():
    async def go() -> None:
        clock = Clock()
        async with serving(WebConfig(limits=Limits(idle_s=60)), clock) as client:
            old = await post(client, "/api/games", {}, 201)
            token = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
            clock.now += 59
            kept = await post(client, f"/api/games/{old['id']}/move", {"action": old["legal"][0]})  # use keeps it
            clock.now += 59
            assert (await get(client, f"/api/games/{old['id']}"))["moves"] == kept["moves"]
            clock.now += 61
            assert "expired" in (await get(client, f"/api/games/{old['id']}", 404))["error"]
            assert client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value != token

    run(go())


def test_a_whole_game_follows_the_standard_schedule_with_next_between_rounds():
    async def go() -> None:
        async with serving() as client:
            state = await post(client, "/api/games", {"players": 3, "cards": 2, "mode": "game", "seat": 1}, 201)
            assert state["rounds"] == 5  # 2, then 1 for each of 3 players, then 2
            gid, totals = state["id"], [0, 0, 0]
            assert "not over yet" in (await post(client, f"/api/games/{gid}/next", {}, 409))["error"]
            for index, cards in enumerate([2, 1, 1, 1, 2]):
                assert (state["round_index"], state["cards"], state["dealer"]) == (index, cards, index % 3)
                state = await play_out(client, state, pick=max)
                record = await get(client, f"/api/games/{gid}/replay?round={index}")
                totals = [t + s for t, s in zip(totals, replayed_scores(record))]
                assert state["totals"] == totals and state["finished"] == index + 1
                if index < 4:
                    assert not state["over"]
                    state = await post(client, f"/api/games/{gid}/next", {})
            assert state["over"] and state["winners"] == [s for s in range(3) if totals[s] == max(totals)]
            assert "no next round" in (await post(client, f"/api/games/{gid}/next", {}, 409))["error"]
            assert "0..4" in (await get(client, f"/api/games/{gid}/replay?round=5", 400))["error"]

    run(go())


def test_the_hints_give_each_legal_moves_prior_visit_share_and_expected_score(tiny_checkpoint: Path):
    async def go() -> None:
        spec = f"{tiny_checkpoint}:dets=2,sims=8"
        config = WebConfig(seed=5, model=spec, opponents=(spec,))
        async with serving(config) as client:
            assert (await get(client, "/api/config"))["model"] == f"{tiny_checkpoint} (2x8)"
            state = await post(client, "/api/games", {"players": 3, "cards": 3, "opponents": [spec]}, 201)
            server = client.app[SERVER]
            while state["scores"] is None:
                hint = state["hint"]
                assert [a["action"] for a in hint["actions"]] == state["legal"] and hint["choice"] in state["legal"]
                if len(state["legal"]) > 1:
                    assert sum(a["prior"] for a in hint["actions"]) == pytest.approx(1, abs=1e-3)
                    assert sum(a["share"] for a in hint["actions"]) == pytest.approx(1, abs=1e-3)
                    assert sum(a["visits"] for a in hint["actions"]) == 2 * 8 == hint["simulations"]
                    top = max(hint["actions"], key=lambda a: a["visits"])["visits"]
                    assert [a["action"] for a in hint["actions"] if a["visits"] == top][0] == hint["choice"]
                    worst, best = 0, 10 + state["cards"]
                    assert all(worst <= a["expected"] <= best for a in hint["actions"] if a["expected"] is not None)
                state = await post(client, f"/api/games/{state['id']}/move", {"action": hint["choice"]})
            record = await get(client, f"/api/games/{state['id']}/replay")
            mine = [h for (seat, _), h in zip(record["moves"], record["hints"]) if seat == state["seat"]]
            others = [h for (seat, _), h in zip(record["moves"], record["hints"]) if seat != state["seat"]]
            assert len(mine) == 1 + 3 and all(mine) and not any(others)
            opponent = server.menu[spec].shared
            assert isinstance(opponent, NetworkPlayer) and opponent.decisions > 0  # the network seats searched

    run(go())


def test_without_a_model_there_are_no_hints_and_a_model_must_be_a_checkpoint():
    async def go() -> None:
        async with serving() as client:
            state = await post(client, "/api/games", {}, 201)
            assert state["hint"] is None and state["model"] is False

    run(go())
    with pytest.raises(ValueError, match="give a checkpoint path"):
        WebServer(WebConfig(model="heuristic"))
    with pytest.raises(ValueError, match="no checkpoint file"):
        WebServer(WebConfig(opponents=("missing.pt",)))
    with pytest.raises(ValueError, match="no such directory"):
        WebServer(WebConfig(run=Path("no/such/run")))


class Gate:
    """A network-like opponent (it waits on the loop) that holds its first move until released."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    def act(self, view: View) -> int:
        return view.legal_actions()[0]

    async def aact(self, view: View) -> int:
        self.waiting.set()
        await self.release.wait()
        return view.legal_actions()[0]


class ThreadBot:
    """A synchronous opponent that notes the threads it is asked on."""

    def __init__(self) -> None:
        self.threads: set[threading.Thread] = set()

    def act(self, view: View) -> int:
        self.threads.add(threading.current_thread())
        return view.legal_actions()[0]


def test_a_request_while_the_table_answers_another_is_refused_and_sync_players_think_off_the_loop():
    async def go() -> None:
        gate, bot = Gate(), ThreadBot()
        table = Table(id="t", owner="o", players=3, seat=0, opponents=[None, gate, bot], names=["you", "g", "b"],
                      mode="round", cards=2, rng=np.random.default_rng(0))  # fmt: skip
        busy = asyncio.create_task(table.start())
        await asyncio.wait([busy, asyncio.create_task(gate.waiting.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not gate.waiting.is_set():  # the person moves before the gated seat
            busy = asyncio.create_task(table.move(table.state().legal[0]))
            await gate.waiting.wait()
        before = table.state()
        with pytest.raises(NotYourTurn, match="still answering"):
            await table.move(BID0)
        assert table.state() == before
        gate.release.set()
        await busy
        while table.round.to_play is not None:
            await table.move(table.state().legal[0])
        assert table.records and bot.threads and threading.main_thread() not in bot.threads

    run(go())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "70000"], "--port 70000: give 0..65535"),
        (["--idle-minutes", "0"], "idle_s=0.0: give a positive number of seconds"),
        (["--max-games", "0"], "max_tables=0: give at least 1"),
        (["--opponent", "nosuch.pt"], "player 'nosuch.pt'"),
    ],
)
def test_blobnet_web_refuses_bad_settings_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["web", *argv]) == 2
    assert message in capsys.readouterr().err
