"""Self-play over helper processes (clients.pool) and the `blobnet selfplay` command."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from blobnet.config import GameConfig, SearchConfig
from blobnet.evaluator import FreeEvaluator
from blobnet.net import make_net
from blobnet.player import aclose_player
from blobnet.replay import Examples
from clients.match import play_match
from clients.players import BotSeat, NetworkSeat, arrays_of, build_seat
from clients.pool import BatcherSpec, FreeSpec, RemoteSpec, SelfPlayPool, ShareJob, play_share, split
from clients.selfplay import EngineError, SelfPlayEngine
from servers import Batcher

FAST = SearchConfig(dets=2, sims=8, leaves=2)
GAME = GameConfig(players=[4], cards=[3])


@pytest.fixture(scope="module")
def pool():
    p = SelfPlayPool(2)
    yield p
    p.close()


def by_content(ex: Examples) -> np.ndarray:
    """The examples as rows in a canonical order, to compare runs whose rounds finish in another order."""
    rows = np.concatenate([ex.features, ex.legal, ex.policy, ex.value], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_split_is_even_and_complete():
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 4) == [1, 1, 0, 0]
    assert sum(split(1001, 7)) == 1001


@pytest.mark.parametrize("opponents", [(), ("ismcts:sims=50", "heuristic")])
def test_the_pool_plays_exactly_the_games_one_engine_plays(pool, opponents):
    parts: list[Examples] = []
    stats = asyncio.run(
        pool.run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME, rounds=12,
                 concurrency=4, seed=5, sink=parts.append, opponents=opponents)
    )  # fmt: skip
    alone: list[Examples] = []
    engine = SelfPlayEngine(FreeEvaluator(), search=FAST, game=GAME, concurrency=1, seed=5, sink=alone.append,
                            opponents=opponents)  # fmt: skip
    single = asyncio.run(engine.run(12))
    assert stats.rounds == single.rounds == 12
    assert stats.examples == single.examples == sum(len(p) for p in parts)
    np.testing.assert_array_equal(by_content(Examples.concat(parts)), by_content(Examples.concat(alone)))


def test_helpers_evaluate_with_the_weights_they_are_sent(pool):
    async def run() -> tuple[int, float, dict]:
        model = make_net("tiny", seed=3)
        batcher = Batcher(model, max_batch=256)
        progress: list[int] = []
        try:
            stats = await pool.run(batcher, BatcherSpec(preset="tiny", max_batch=256), model.state_dict(),
                                   search=FAST, game=GAME, rounds=20, concurrency=8, seed=1,
                                   on_progress=progress.append)  # fmt: skip
        finally:
            await batcher.aclose()
        return stats.rounds, pool.mean_batch, {"progress": progress, "evals": stats.evaluations}

    rounds, mean_batch, info = asyncio.run(run())
    assert rounds == 20
    assert mean_batch > 1  # both processes' batchers counted
    assert info["progress"] == sorted(info["progress"]) and info["progress"][-1] == 20
    assert info["evals"] > 0


@pytest.mark.parametrize("wanted", [True, False])
def test_a_share_sends_its_examples_back_only_when_the_run_keeps_them(wanted):
    job = ShareJob(spec=FreeSpec(), weights=None, search=FAST, game=GAME, rounds=4, concurrency=2, seed=0,
                   first_game=0, game_stride=1, examples=wanted)  # fmt: skip
    done = asyncio.run(play_share(job))
    assert done.error is None and done.stats is not None and done.stats.examples > 0
    if wanted:
        assert done.examples is not None and len(done.examples) == done.stats.examples
    else:
        assert done.examples is None  # made and counted, not shipped


def test_a_helper_that_fails_is_reported_and_this_process_keeps_its_examples(pool):
    parts: list[Examples] = []
    spec = RemoteSpec("unix:/nonexistent/blobnet.sock")
    with pytest.raises(EngineError, match="helper 1: no evaluator"):
        asyncio.run(
            pool.run(FreeEvaluator(), spec, None, search=FAST, game=GAME, rounds=6, concurrency=2, seed=0,
                     sink=parts.append)
        )  # fmt: skip
    assert sum(len(p) for p in parts) > 0  # this process's share reached the sink


def test_a_game_failing_here_stops_the_helpers_and_keeps_what_they_produced(pool):
    class Broken(FreeEvaluator):
        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.2)  # the helper plays a few rounds meanwhile
            raise RuntimeError("this evaluator is broken")

    parts: list[Examples] = []
    with pytest.raises(EngineError, match="broken"):
        asyncio.run(
            pool.run(Broken(), FreeSpec(), None, search=FAST, game=GAME, rounds=100_000,
                     concurrency=2, seed=0, sink=parts.append)
        )  # fmt: skip
    # Nothing came from this process (its first evaluation failed): every example is the helper's,
    # sent back when it was told to stop instead of after its 50,000 rounds.
    assert sum(len(p) for p in parts) > 0
    stats = asyncio.run(
        pool.run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME, rounds=4,
                 concurrency=2, seed=0)
    )  # fmt: skip
    assert stats.rounds == 4  # the same helper serves the next run


def test_a_helper_that_dies_is_reported_and_the_next_run_starts_a_new_one():
    """At once: this process's share (here one that would take hours) ends with the rounds it is
    playing, and keeps their examples."""
    pool = SelfPlayPool(2)
    kept: list[Examples] = []
    try:

        def kill_helper(done: int) -> None:
            proc = pool._helpers[0][0]
            if done >= 1 and proc.is_alive():
                proc.kill()

        async def doomed() -> None:
            async with asyncio.timeout(120):
                await pool.run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME, rounds=10**7,
                               concurrency=2, seed=0, sink=kept.append, on_progress=kill_helper)  # fmt: skip

        with pytest.raises(EngineError, match="died"):
            asyncio.run(doomed())
        assert kept  # the rounds this process finished
        stats = asyncio.run(
            pool.run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME, rounds=4,
                     concurrency=2, seed=0)
        )  # fmt: skip
        assert stats.rounds == 4
    finally:
        pool.close()
    assert pool._helpers == []


def test_a_helper_that_dies_fails_a_split_match_at_once():
    """This process's share (here one that would take hours) stops when the helper playing the
    other share dies; the next match starts a new helper."""
    pool = SelfPlayPool(2)
    kw = dict(players=4, cards=3, seed=0, concurrency=2)
    try:

        def kill_helper(done: int, total: int) -> None:
            proc = pool._helpers[0][0]
            if done >= 1 and proc.is_alive():
                proc.kill()

        async def doomed() -> None:
            async with asyncio.timeout(120):
                await pool.split_match(BotSeat("random", 1), BotSeat("random", 2), rounds=10**7, on_round=kill_helper,
                                       **kw)  # fmt: skip

        with pytest.raises(EngineError, match="died"):
            asyncio.run(doomed())
        result = asyncio.run(pool.split_match(BotSeat("random", 1), BotSeat("random", 2), rounds=8, **kw))
        assert result.rounds == 8
    finally:
        pool.close()


def test_a_match_in_a_helper_equals_the_same_match_played_here(pool):
    net = NetworkSeat(preset="tiny", weights=arrays_of(make_net("tiny", seed=4).state_dict()),
                      search=SearchConfig(dets=2, sims=6, leaves=2), seed=2)  # fmt: skip
    bot = BotSeat("heuristic", seed=3)
    kw = dict(players=4, cards=3, rounds=12, seed=9, concurrency=4)
    there = asyncio.run(pool.match(net, bot, **kw))

    async def here():  # type: ignore[no-untyped-def]
        a, b = build_seat(net), build_seat(bot)
        try:
            return await play_match(a, b, **kw)
        finally:
            await aclose_player(a)

    same = asyncio.run(here())
    assert dataclasses.replace(there, seconds=0.0) == dataclasses.replace(same, seconds=0.0)
    assert there.rounds == 12
    with pytest.raises(RuntimeError, match="bot 'nobody': use one of random, heuristic"):
        asyncio.run(pool.match(BotSeat("nobody"), bot, **kw))


def test_bad_pool_settings_are_named():
    with pytest.raises(ValueError, match="workers=0"):
        SelfPlayPool(0)
    with pytest.raises(ValueError, match="concurrency=0"):
        asyncio.run(SelfPlayPool(1).run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME,
                                        rounds=1, concurrency=0, seed=0))  # fmt: skip


def test_selfplay_command_prints_the_documented_keys(tmp_path):
    out = tmp_path / "examples.npz"
    cmd = [sys.executable, "-m", "clients.cli", "selfplay", "--players", "4", "--cards", "3", "--dets", "2",
           "--sims", "6", "--concurrency", "6", "--rounds", "10", "--preset", "tiny", "--workers", "2",
           "--out", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(result) == ["rounds", "rounds_per_min", "sims_per_s", "evals_per_s", "avg_batch", "examples",
                            "searched_decisions", "uniform_target_fraction", "cache_hit_rate", "cache_collisions",
                            "seconds"]  # fmt: skip
    assert result["rounds"] == 10 and result["examples"] == 2 * result["searched_decisions"] > 0
    assert result["avg_batch"] > 1 and 0 <= result["uniform_target_fraction"] <= 1
    # the searcher's own view after its move is the same row in both deals: the cache answers it
    assert 0 < result["cache_hit_rate"] < 1 and result["cache_collisions"] == 0
    with np.load(out) as z:
        assert z["features"].shape[0] == result["examples"]


def _selfplay_with_a_helper() -> tuple[subprocess.Popen[str], psutil.Process]:
    """`blobnet selfplay` with two engine processes, once its helper process is playing. Its rounds
    are long (5 x 10 cards, 4 x 600 simulations: over ten seconds each), so a helper that only looked
    for its parent between rounds would outlive it by seconds."""
    cmd = [sys.executable, "-m", "clients.cli", "selfplay", "--free", "--players", "5", "--cards", "10", "--dets",
           "4", "--sims", "600", "--concurrency", "4", "--rounds", "1000", "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        helpers = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
        if helpers and sum(helpers[0].cpu_times()[:2]) > 4:  # its imports take about 2 s: playing its share
            return proc, helpers[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the helper process never started playing")


def _gone(p: psutil.Process) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet (an orphan's reaper may be slow)."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_helper_ends_with_its_parent(sig):
    """SIGTERM takes Ctrl-C's path (the pool closes its helpers, the command says it was
    interrupted); after SIGKILL, which nothing can catch, the helper sees its parent gone."""
    proc, helper = _selfplay_with_a_helper()
    proc.send_signal(sig)
    deadline = time.monotonic() + 5
    while not _gone(helper):
        assert time.monotonic() < deadline, "the helper outlived its parent by 5 s"
        time.sleep(0.05)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in err


def test_live_counts_grow_during_a_run_and_add_up_to_its_stats(pool):
    """``counts()`` is what a progress display or a benchmark window reads while helpers play."""
    seen: list[int] = []

    async def run():  # type: ignore[no-untyped-def]
        model = make_net("tiny", seed=3)
        batcher = Batcher(model, max_batch=256)
        sampler = asyncio.get_running_loop()

        def sample(_: int) -> None:
            seen.append(pool.counts().simulations)

        try:
            stats = await pool.run(batcher, BatcherSpec(preset="tiny", max_batch=256), model.state_dict(),
                                   search=FAST, game=GAME, rounds=40, concurrency=8, seed=2,
                                   on_progress=sample)  # fmt: skip
        finally:
            await batcher.aclose()
        assert sampler is asyncio.get_running_loop()
        return stats

    stats = asyncio.run(run())
    final = pool.counts()
    assert (final.rounds, final.searched_decisions, final.simulations, final.evaluations) == (
        stats.rounds, stats.searched_decisions, stats.simulations, stats.evaluations)  # fmt: skip
    assert final.rows == stats.evaluations and final.batches > 0  # every row went through a batcher
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1] <= final.simulations
