"""Players: the protocol adapter, parsing player specs, and the network player on a tiny checkpoint."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import numpy as np
import pytest

from blobnet.bots import HeuristicBot, RandomBot
from blobnet.cards import BID0, N_ACTIONS
from blobnet.checkpoint import save_checkpoint
from blobnet.config import PLAYER_ENGINE, SearchConfig
from blobnet.encode import WIDTH
from blobnet.net import DirectEvaluator, make_net
from blobnet.player import NetworkPlayer, aclose_player, act_async, direct, load_player
from blobnet.rules import Round, View
from clients.match import play_match
from clients.players import batched, parse_player
from servers import Batcher


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, preset="tiny", model=make_net("tiny", seed=0).state_dict())
    return path


def views_to_decide() -> list[View]:
    """Views of a few decisions: a bid, the dealer's hooked bid, a lead, a follow."""
    r = Round.deal(players=4, cards=5, trump=1, dealer=3, seed=4)
    out = [r.view(r.to_play)]  # type: ignore[arg-type]
    for b in (1, 2, 1):
        r.play(BID0 + b)
    out.append(r.view(r.to_play))  # type: ignore[arg-type]  # the dealer: bid 1 is hooked
    r.play(BID0 + 0)
    out.append(r.view(r.to_play))  # type: ignore[arg-type]
    r.play(r.legal()[0])
    out.append(r.view(r.to_play))  # type: ignore[arg-type]
    return out


# -- the protocol ------------------------------------------------------------------------------


def test_act_async_awaits_aact_when_there_is_one_else_calls_act() -> None:
    class Both:
        def act(self, view: View) -> int:
            return -1

        async def aact(self, view: View) -> int:
            await asyncio.sleep(0)
            return view.legal_actions()[-1]

    v = views_to_decide()[0]
    assert asyncio.run(act_async(Both(), v)) == v.legal_actions()[-1]
    assert asyncio.run(act_async(RandomBot(seed=1), v)) in v.legal_actions()
    asyncio.run(aclose_player(RandomBot()))  # a bot has nothing to close


# -- parse_player --------------------------------------------------------------------------------


def test_parse_player_knows_the_bots() -> None:
    assert isinstance(parse_player("random", seed=1), RandomBot)
    assert isinstance(parse_player(" Heuristic ", seed=1), HeuristicBot)


def test_parse_player_reads_a_checkpoint_with_settings(tiny_ckpt: Path) -> None:
    p = parse_player(f"{tiny_ckpt}:dets=2,sims=7,leaves=2,c_puct=2.5,root_view=false", seed=3)
    assert isinstance(p, NetworkPlayer)
    assert (p.search.dets, p.search.sims, p.search.leaves, p.search.c_puct) == (2, 7, 2, 2.5)
    assert p.search.temperature == 0.0 and not p.search.root_view
    plain = parse_player(str(tiny_ckpt))
    assert isinstance(plain, NetworkPlayer) and (plain.search.dets, plain.search.sims) == (3, 30)
    assert plain.search.root_view


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (":dets=two", r"dets='two' is not an integer"),
        (":c_puct=high", r"c_puct='high' is not a number"),
        (":root_view=maybe", r"root_view='maybe' is not true or false"),
        (":depth=3", r"bad setting 'depth=3'.*keys dets, sims, leaves, c_puct, root_view"),
        (":dets", r"bad setting 'dets'"),
        (":dets=0", r"search.dets = 0"),
    ],
)
def test_parse_player_names_a_bad_setting(tiny_ckpt: Path, suffix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_player(f"{tiny_ckpt}{suffix}")


def test_parse_player_names_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a bot \(random, heuristic, ismcts\), and no checkpoint file 'nope\.pt'"):
        parse_player("nope.pt:sims=5")
    with pytest.raises(ValueError, match="empty player"):
        parse_player("  ")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        parse_player(str(junk))


# -- the network player ------------------------------------------------------------------------


def test_load_player_acts_legally_on_every_kind_of_decision(tiny_ckpt: Path) -> None:
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0)
    views = views_to_decide()
    for v in views:
        assert p.act(v) in v.legal_actions()
    searched = sum(len(v.legal_actions()) > 1 for v in views)
    assert searched >= 3 and p.decisions == searched and p.evaluations > searched


def test_a_forced_move_is_answered_without_a_search(tiny_ckpt: Path) -> None:
    p = load_player(tiny_ckpt, dets=2, sims=8)
    r = Round.deal(players=3, cards=1, trump=None, dealer=0, seed=1)
    for _ in range(3):
        r.play(r.legal()[0])
    v = r.view(r.to_play)  # type: ignore[arg-type]
    assert p.act(v) == v.legal_actions()[0]
    assert p.decisions == 0


def test_the_same_seed_plays_the_same_move(tiny_ckpt: Path) -> None:
    v = views_to_decide()[2]
    one = load_player(tiny_ckpt, dets=2, sims=10, seed=7)
    two = load_player(tiny_ckpt, dets=2, sims=10, seed=7)
    assert one.act(v) == two.act(v)


def test_act_works_inside_a_running_loop(tiny_ckpt: Path) -> None:
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0)
    v = views_to_decide()[0]

    async def inside() -> int:
        return p.act(v)  # a program with its own loop may still call the synchronous act

    assert asyncio.run(inside()) in v.legal_actions()


def test_network_player_plays_a_match_through_one_batcher(tiny_ckpt: Path) -> None:
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0, evaluator=batched())

    async def main() -> tuple[float, object, dict[str, float]]:
        try:
            res = await play_match(p, RandomBot(seed=1), players=4, cards=3, rounds=8, seed=0, concurrency=8)
            batcher = p._evaluator
            assert isinstance(batcher, Batcher)
            stats = batcher.stats()
        finally:
            await p.aclose()
        await p.aclose()  # idempotent
        return res.diff, batcher, stats

    diff, batcher, stats = asyncio.run(main())
    assert p.decisions > 0
    assert stats["rows"] == p.evaluations
    assert stats["mean_batch"] > 1  # the tables' searches were batched together
    # used again on a new loop, the player makes a new batcher
    v = views_to_decide()[3]
    assert asyncio.run(p.aact(v)) in v.legal_actions()
    assert p._evaluator is not batcher


def test_a_network_player_keeps_its_search_and_cache_from_one_decision_to_the_next(tiny_ckpt: Path) -> None:
    # The rows of a decision seen before are answered by the search's network cache: a player
    # that built a new Search (and cache) per decision would ask the network for all of them again.
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0)
    v = views_to_decide()[2]

    async def twice() -> tuple[int, int]:
        try:
            await p.aact(v)
            first = p._evaluator.rows  # type: ignore[union-attr]
            await p.aact(v)
            return first, p._evaluator.rows - first  # type: ignore[union-attr]
        finally:
            await p.aclose()

    first, second = asyncio.run(twice())
    assert first > 0 and second < first
    assert p.decisions == 2


def test_act_keeps_its_evaluator_and_search_until_close(tiny_ckpt: Path) -> None:
    # What aact's test above asks of a player used through the synchronous act alone (a program
    # without a loop): the second ask of a decision finds its rows in the kept network cache.
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0)
    v = views_to_decide()[2]
    p.act(v)
    evaluator = p._private[0]  # type: ignore[index]
    first = evaluator.rows  # type: ignore[attr-defined]
    p.act(v)
    assert p._private[0] is evaluator  # type: ignore[index]
    assert 0 < evaluator.rows - first < first  # type: ignore[attr-defined]
    p.close()
    p.close()  # idempotent
    assert p.act(v) in v.legal_actions()  # after close, act makes a new loop and evaluator
    assert p._private[0] is not evaluator  # type: ignore[index]
    p.close()


def test_a_player_dropped_without_close_ends_its_loop(tiny_ckpt: Path) -> None:
    p = load_player(tiny_ckpt, dets=2, sims=8, seed=0)
    p.act(views_to_decide()[0])
    loop = p._runner.get_loop()  # type: ignore[union-attr]
    del p
    gc.collect()
    assert loop.is_closed()


def test_the_default_evaluator_answers_as_the_network_does() -> None:
    # load_player's default: the CPU engine of the batchers on one thread, not torch as it is
    model = make_net("tiny", seed=5)
    rng = np.random.default_rng(1)
    x = (rng.random((24, WIDTH)) < 0.05).astype(np.float32)
    legal = rng.random((24, N_ACTIONS)) < 0.15
    legal[:, BID0] = True
    want_p, want_v = DirectEvaluator(model).run_rows(x, legal)
    evaluator = direct(model, 24)
    priors, values = evaluator.run_rows(x, legal)  # type: ignore[attr-defined]
    assert evaluator.engine.name == PLAYER_ENGINE  # type: ignore[attr-defined]
    np.testing.assert_allclose(priors, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)


def test_two_network_players_on_one_model_share_nothing_but_the_weights(tiny_ckpt: Path) -> None:
    model = make_net("tiny", seed=1)
    a = NetworkPlayer(model, SearchConfig(dets=1, sims=4), seed=1, name="a")
    b = NetworkPlayer(model, SearchConfig(dets=1, sims=4), seed=2, name="b")

    async def main() -> None:
        try:
            res = await play_match(a, b, players=3, cards=2, rounds=4, seed=0, concurrency=4)
            assert res.rounds == 4
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())
    assert a.decisions > 0 and b.decisions > 0
