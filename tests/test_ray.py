"""The Ray backend (clients/raypool.py): the local backend's examples, an actor killed mid-run,
split matches, and a tiny training run that resumes exactly. One local Ray (2 CPUs) serves them all."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from blobnet.aio import run_loop
from blobnet.checkpoint import load_checkpoint
from blobnet.config import ConfigError, GameConfig, SearchConfig, load_config
from blobnet.evaluator import FreeEvaluator
from blobnet.net import make_net
from blobnet.replay import Examples
from blobnet.status import Status
from clients.match import play_match
from clients.players import BotSeat, build_seat
from clients.pool import BatcherSpec, FreeSpec, SelfPlayPool
from clients.raypool import RayPool
from clients.selfplay import SelfPlayEngine
from clients.train import Trainer
from servers import Batcher

ray = pytest.importorskip("ray")

FAST = SearchConfig(dets=2, sims=8, leaves=2)
GAME = GameConfig(players=[4], cards=[3])
TINY = [
    "network.preset=tiny", "search.dets=1", "search.sims=4", "search.leaves=2", "game.cards=[3]",
    "train.rounds_per_iteration=16", "train.concurrency=8", "train.steps_per_iteration=5", "train.batch_size=32",
    "train.replay_size=400", "arena.rounds=4", "arena.cards=3",
    "arena.final_rounds=0", 'arena.baselines=["random"]',
]  # fmt: skip


@pytest.fixture(scope="module")
def pool():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    p = RayPool(2, chunks=3)
    yield p
    p.close()
    ray.shutdown()


def by_content(ex: Examples) -> np.ndarray:
    """The examples as rows in a canonical order, to compare runs whose rounds finish in another order."""
    rows = np.concatenate([ex.features, ex.legal, ex.policy, ex.value], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


async def _selfplay(pool: Any, rounds: int, seed: int) -> tuple[int, Examples]:
    model = make_net("tiny", seed=3)
    batcher = Batcher(model, max_batch=256)
    parts: list[Examples] = []
    try:
        stats = await pool.run(batcher, BatcherSpec(preset="tiny", max_batch=256), model.state_dict(), search=FAST,
                               game=GAME, rounds=rounds, concurrency=6, seed=seed, sink=parts.append)  # fmt: skip
    finally:
        await batcher.aclose()
    return stats.rounds, Examples.concat(parts)


def test_actors_play_exactly_the_examples_the_local_pool_plays(pool):
    rounds, there = asyncio.run(_selfplay(pool, 30, seed=7))
    local = SelfPlayPool(1)  # one share in this process: the same game ids, so the same examples
    try:
        local_rounds, here = asyncio.run(_selfplay(local, 30, seed=7))
    finally:
        local.close()
    assert rounds == local_rounds == 30
    assert len(there) == len(here) > 0
    # the same rows, moves and outcomes; the completed-Q policy targets are made of the network's
    # values, whose last bit an actor's process may round otherwise (another batch, another thread count)
    exact = [np.concatenate([ex.features, ex.legal, ex.value], axis=1) for ex in (there, here)]
    orders = [np.lexsort(rows.T[::-1]) for rows in exact]
    np.testing.assert_array_equal(exact[0][orders[0]], exact[1][orders[1]])
    np.testing.assert_allclose(there.policy[orders[0]], here.policy[orders[1]], rtol=1e-5, atol=1e-6)
    assert pool.mean_batch > 1


def test_an_actor_killed_mid_run_is_restarted_and_no_round_is_lost(pool):
    parts: list[Examples] = []

    async def run():  # type: ignore[no-untyped-def]
        await pool._start()
        before, replayed = list(pool.pids), pool.replayed
        task = asyncio.ensure_future(
            pool.run(FreeEvaluator(), FreeSpec(), None, search=FAST, game=GAME, rounds=600, concurrency=4, seed=5,
                     sink=parts.append)
        )  # fmt: skip
        await asyncio.sleep(0.5)  # both actors are in their first chunk (100 rounds, over a second)
        os.kill(before[0], signal.SIGKILL)
        stats = await task
        return stats, before, pool.replayed - replayed

    stats, before, replayed = asyncio.run(run())
    alone: list[Examples] = []
    engine = SelfPlayEngine(FreeEvaluator(), search=FAST, game=GAME, concurrency=4, seed=5, sink=alone.append)
    single = asyncio.run(engine.run(600))
    assert replayed >= 1  # the killed actor's chunk was played again
    assert stats.rounds == single.rounds == 600
    np.testing.assert_array_equal(by_content(Examples.concat(parts)), by_content(Examples.concat(alone)))


def test_a_match_split_over_actors_equals_the_match_played_in_one_process(pool):
    kw: dict[str, Any] = dict(players=4, cards=3, rounds=40, seed=3, concurrency=8)
    a, b = BotSeat("heuristic", seed=1), BotSeat("heuristic", seed=2)
    split = asyncio.run(pool.split_match(a, b, **kw))
    one = asyncio.run(pool.match(a, b, **kw))
    from_bots = asyncio.run(play_match(build_seat(a), build_seat(b), **kw))
    assert dataclasses.replace(split, seconds=0.0) == dataclasses.replace(one, seconds=0.0)
    assert dataclasses.replace(split, seconds=0.0) == dataclasses.replace(from_bots, seconds=0.0)
    assert split.rounds == 40 and split.deals == 20


class Faults(Status):
    """Kills the second actor of ``trainer.pool`` when the first self-play chunk of iteration 1 ends
    (``kill``); sends this process SIGTERM as iteration ``stop_at`` begins (the trainer saves, then stops)."""

    def __init__(self, *, kill: bool, stop_at: int | None) -> None:
        super().__init__(enabled=False)
        self.trainer: Trainer | None = None
        self.kill = kill
        self.stop_at = stop_at

    def phase(self, iteration: int, iterations: int, name: str, done: int, total: int) -> None:
        super().phase(iteration, iterations, name, done, total)
        if self.kill and name == "self-play" and done > 0:
            assert self.trainer is not None and isinstance(self.trainer.pool, RayPool)
            os.kill(self.trainer.pool.pids[1], signal.SIGKILL)
            self.kill = False
        if iteration == self.stop_at and name == "self-play":
            os.kill(os.getpid(), signal.SIGTERM)
            self.stop_at = None


def _train(
    run_dir: Path, *, backend: str = "ray", resume: bool = False, kill: bool = False, stop_at: int | None = None
) -> Trainer:
    """A tiny run of 2 iterations, in this process."""
    workers = 2 if backend == "ray" else 1  # 1: no helper to start, and the same game ids
    config = load_config(None, [*TINY, "train.iterations=2", f"train.backend={backend}", f"train.workers={workers}"])
    status = Faults(kill=kill, stop_at=stop_at)
    trainer = status.trainer = Trainer(run_dir, config, resume=resume, status=status)
    trainer.prepare()
    run_loop(trainer.run())
    return trainer


def test_a_ray_run_survives_a_killed_actor_and_resumes_exactly(pool, tmp_path):
    pool.close()  # the 2 CPUs go to the trainers' actors (this pool starts new ones when next used)
    straight = _train(tmp_path / "straight", kill=True)
    assert isinstance(straight.pool, RayPool) and straight.pool.replayed >= 1
    stopped = _train(tmp_path / "split", stop_at=2)
    assert stopped.interrupted == "SIGTERM" and stopped.iteration == 1
    _train(tmp_path / "split", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "iter_000002.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "iter_000002.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    local = _train(tmp_path / "local", backend="local", stop_at=2)
    assert local.iteration == 1
    ray_rows = list(csv.DictReader((tmp_path / "straight" / "metrics.csv").open()))
    local_rows = list(csv.DictReader((tmp_path / "local" / "metrics.csv").open()))
    assert int(ray_rows[0]["examples"]) == int(local_rows[0]["examples"]) > 0  # the killed actor lost nothing


def test_backend_settings_are_checked_and_a_missing_ray_is_named(monkeypatch):
    with pytest.raises(ConfigError, match='train.backend = .cluster. is not valid: "local" or "ray"'):
        load_config(None, ["train.backend=cluster"])
    with pytest.raises(ConfigError, match="train.ray_address = 'head' is not valid"):
        load_config(None, ["train.backend=ray", "train.ray_address=head"])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"pip install -e '\.\[ray\]'"):
        RayPool(2)
