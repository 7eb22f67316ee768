"""The trainer: self-play through the embedded async engine, a replay buffer, learner steps,
evaluation in the arena, checkpoints that resume exactly.

One iteration: self-play (the engine and the batcher share this event loop; with
``train.workers`` > 1, helper processes of ``clients.pool`` play their shares of the rounds on
the other cores, each with its own batcher; with ``train.backend = "ray"``, ``train.workers``
Ray actors of ``clients.raypool`` play every share, on any machine of the cluster) -> the
examples join the replay buffer as one segment file -> learner steps (``blobnet.learn``) -> the
new weights go to the batcher between batches -> arena: the candidate against the baselines
here and, at the same time, against ``best.pt`` in a helper or an actor (the gate: it replaces
``best.pt`` only through it) -> metrics row, charts, checkpoint. On a CPU the phases alternate;
nothing else runs while the learner steps.

Randomness: iteration ``i`` draws self-play from seed ``[seed, i]`` and minibatches from
``[seed, i, 1]``, so a resumed run repeats exactly what the uninterrupted run would have done.
A checkpoint is written last in an iteration; a run killed at any moment resumes from the last
one and loses at most the iteration in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from blobnet.charts import draw_training_charts
from blobnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from blobnet.config import RunConfig
from blobnet.files import atomic_write_bytes
from blobnet.learn import cosine_lr, learner_steps, teacher_examples
from blobnet.net import make_net
from blobnet.player import Player, aclose_player
from blobnet.ratings import EloLadder, MatchResult, gate
from blobnet.replay import Examples, ReplayBuffer
from blobnet.status import Status
from clients.match import play_match
from clients.players import BotSeat, NetworkSeat, arrays_of, bot_name, build_seat, make_bot
from clients.pool import BatcherSpec, EnginePool, SelfPlayPool
from clients.raypool import RayPool
from clients.selfplay import check_opponents
from servers import Batcher

__all__ = ["Trainer", "METRIC_FIELDS"]

_CKPT = re.compile(r"iter_(\d{6})\.pt$")
METRIC_FIELDS = [
    "iteration", "seconds", "rounds", "rounds_per_min", "evals_per_s", "avg_batch", "examples", "replay",
    "uniform_target_fraction", "policy_loss", "value_loss", "lr", "promoted", "elo",
    "vs_heuristic_diff", "vs_heuristic_lo", "vs_heuristic_hi", "vs_random_diff", "vs_random_lo", "vs_random_hi",
    "vs_ismcts_diff", "vs_ismcts_lo", "vs_ismcts_hi", "vs_best_diff", "vs_best_lo", "vs_best_hi",
]  # fmt: skip


class Trainer:
    """One run directory: ``config.json``, ``checkpoints/``, ``best.pt``, ``replay/``,
    ``metrics.csv``, ``elo.json`` and the charts."""

    def __init__(self, run_dir: Path, config: RunConfig, *, resume: bool, status: Status) -> None:
        self.dir = run_dir
        self.cfg = config
        self.resume = resume
        self.status = status
        # the baseline bots by name (metrics.csv's vs_NAME_*) -> spec; a bad one is named before anything runs
        self.baselines: dict[str, str] = {}
        for base in config.arena.baselines:
            try:
                make_bot(base)
            except ValueError as e:
                raise ValueError(f"arena.baselines: {e}") from None
            self.baselines[str(bot_name(base))] = base
        if len(self.baselines) < len(config.arena.baselines):
            raise ValueError(f"arena.baselines={config.arena.baselines}: name each bot at most once")
        try:
            check_opponents(config.train.opponents, config.game)
        except ValueError as e:
            raise ValueError(f"train.opponents: {e}") from None
        self.ckpt_dir = run_dir / "checkpoints"
        self.replay = ReplayBuffer(run_dir / "replay", config.train.replay_size)
        # The learner's device is the server's: on a GPU it steps on its own CUDA stream (``_learn``).
        self.device = torch.device(config.server.device)
        self.model = make_net(config.network.preset, seed=config.train.seed).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        self.iteration = 0
        self.rows: list[dict[str, Any]] = []
        self.ladder = EloLadder()
        self.best_name = "iter_000000"
        self.interrupted: str | None = None
        # Where self-play and the matches run, chosen once; a missing Ray is named here, before anything runs.
        train = config.train
        self.pool: EnginePool = (
            RayPool(train.workers, address=train.ray_address, device=config.server.device)
            if train.backend == "ray"
            else SelfPlayPool(train.workers)
        )

    # -- the run directory ----------------------------------------------------------------
    def prepare(self) -> None:
        existing = sorted(self.ckpt_dir.glob("iter_*.pt"))
        if not self.resume:
            if existing:
                raise ValueError(f"{self.dir} already holds a run (checkpoints/): pass --resume or another --run-dir")
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.dir / "config.json", msgspec.json.format(msgspec.json.encode(self.cfg)))
            if self.cfg.train.warm_start_rounds:
                self._warm_start()
            save_checkpoint(self.dir / "best.pt", preset=self.cfg.network.preset, model=self._weights())
            self._save(promoted=False)  # iteration 0: what --resume starts from
            return
        if not existing:
            raise ValueError(f"--resume: {self.dir} holds no checkpoint to resume from")
        for tmp in self.dir.rglob(".*.tmp"):  # a save cut short by a kill; the target file is whole
            tmp.unlink()
        for path in reversed(existing):  # the newest readable one; a damaged file is reported, not used
            try:
                data = load_checkpoint(path, preset=self.cfg.network.preset)
                break
            except CheckpointError as e:
                print(f"skipping {e}", file=sys.stderr)
        else:
            raise ValueError(f"--resume: no readable checkpoint in {self.ckpt_dir}")
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.iteration = int(data["iteration"])
        self.best_name = str(data["best"])
        torch.set_rng_state(data["torch_rng"])
        self.ladder = EloLadder.from_dict(json.loads(data["ladder"]))
        self.replay.restore(self.iteration)
        self.rows = [r for r in self._read_metrics() if int(r["iteration"]) <= self.iteration]
        for path in existing:  # checkpoints of an interrupted later iteration cannot be trusted
            m = _CKPT.search(path.name)
            if m and int(m.group(1)) > self.iteration:
                path.unlink()

    def _read_metrics(self) -> list[dict[str, Any]]:
        path = self.dir / "metrics.csv"
        if not path.exists():
            return []
        with path.open() as f:
            return list(csv.DictReader(f))

    def _write_metrics(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.dir / "metrics.csv", buf.getvalue().encode())

    def _save(self, promoted: bool) -> None:
        state = self._weights()
        name = f"iter_{self.iteration:06d}"
        if promoted:
            save_checkpoint(self.dir / "best.pt", preset=self.cfg.network.preset, model=state, iteration=self.iteration)
        save_checkpoint(
            self.ckpt_dir / f"{name}.pt",
            preset=self.cfg.network.preset,
            model=state,
            optimizer=self.optimizer.state_dict(),
            iteration=self.iteration,
            best=self.best_name,
            replay_examples=len(self.replay),  # the replay position: segments up to this iteration
            torch_rng=torch.get_rng_state(),
            ladder=json.dumps(self.ladder.to_dict()),
            config=msgspec.json.encode(self.cfg).decode(),
        )
        keep = self.cfg.train.keep_checkpoints
        if keep:
            for old in sorted(self.ckpt_dir.glob("iter_*.pt"))[:-keep]:
                old.unlink()
        self.replay.prune()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig, task)
        server = cfg.server
        batcher = Batcher(
            make_net(cfg.network.preset),
            max_batch=server.max_batch,
            device=server.device,
            mode=server.mode,
            dtype=cfg.network.dtype,
            engine=server.engine,
            sparse=server.sparse,
        )
        batcher.set_weights(self.model.state_dict())
        pool = self.pool
        try:
            while self.iteration < cfg.train.iterations:
                await self._iteration(batcher, pool)
            self.status.done(f"trained {self.iteration} iterations")
            return await self.final_report(pool)
        except asyncio.CancelledError:
            if self.interrupted is None:
                raise
            where = "the final matches" if self.iteration == cfg.train.iterations else f"iteration {self.iteration + 1}"
            self.status.done(
                f"stopped by {self.interrupted} during {where}; "
                f"iteration {self.iteration} is saved: resume with --resume"
            )
            return {"interrupted": self.interrupted, "iteration": self.iteration}
        finally:
            pool.close()
            await batcher.aclose()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals, task: asyncio.Task[Any]) -> None:
        if self.interrupted is None:
            self.interrupted = sig.name
            task.cancel()

    async def _iteration(self, batcher: Batcher, pool: EnginePool) -> None:
        cfg = self.cfg
        it = self.iteration + 1
        t0 = time.perf_counter()
        total = cfg.train.rounds_per_iteration
        self.status.phase(it, cfg.train.iterations, "self-play", 0, total)
        parts: list[Examples] = []

        batcher.reset_stats()
        spec = BatcherSpec(
            preset=cfg.network.preset,
            dtype=cfg.network.dtype,
            max_batch=cfg.server.max_batch,
            mode=cfg.server.mode,
            device=cfg.server.device,
            engine=cfg.server.engine,
            sparse=cfg.server.sparse,
        )
        stats = await pool.run(
            batcher,
            spec,
            self.model.state_dict(),
            search=cfg.search,
            game=cfg.game,
            rounds=total,
            concurrency=cfg.train.concurrency,
            seed=int(np.random.SeedSequence([cfg.train.seed, it]).generate_state(1)[0]),
            sink=parts.append,
            on_progress=lambda done: self.status.phase(it, cfg.train.iterations, "self-play", done, total),
            opponents=tuple(cfg.train.opponents),
        )
        summary = stats.summary()
        self.replay.add(it, Examples.concat(parts))

        self.status.phase(it, cfg.train.iterations, "learn", 0, cfg.train.steps_per_iteration)
        train = cfg.train
        total_steps = train.iterations * train.steps_per_iteration
        first = (it - 1) * train.steps_per_iteration
        policy_loss, value_loss, lr = self._learn(
            it, train.steps_per_iteration, lambda k: cosine_lr(first + k, total_steps, train.lr, train.lr_final)
        )
        batcher.set_weights(self.model.state_dict())  # taken between batches

        self.status.phase(it, cfg.train.iterations, "arena", 0, 1)
        name = f"iter_{it:06d}"
        results = await self._evaluate(name, pool)
        promoted = gate(results["best"], cfg.arena.gate_margin, cfg.arena.gate_confidence)
        if promoted:
            self.best_name = name
        self.iteration = it
        row: dict[str, Any] = {
            "iteration": it,
            "seconds": round(time.perf_counter() - t0, 2),
            "rounds": stats.rounds,
            "rounds_per_min": round(summary["rounds_per_min"], 1),
            "evals_per_s": round(summary["evals_per_s"], 1),
            "avg_batch": round(pool.mean_batch, 2),
            "examples": stats.examples,
            "replay": len(self.replay),
            "uniform_target_fraction": round(summary["uniform_target_fraction"], 5),
            "policy_loss": round(policy_loss, 5),
            "value_loss": round(value_loss, 6),
            "lr": lr,
            "promoted": int(promoted),
            "elo": round(self.ladder.ratings().get(name, 0.0), 1),
        }
        for key, res in results.items():
            row[f"vs_{key}_diff"] = round(res.diff, 3)
            row[f"vs_{key}_lo"] = round(res.ci95[0], 3)
            row[f"vs_{key}_hi"] = round(res.ci95[1], 3)
        self.rows.append(row)
        self._write_metrics()
        self._save(promoted)
        draw_training_charts(self.rows, self.dir)
        self.status.line(
            f"iter {it}: {row['rounds_per_min']:.0f} rounds/min, batch {row['avg_batch']:.0f}, "
            f"loss {policy_loss:.3f}/{value_loss:.4f}, "
            + "".join(f"vs {key} {res.diff:+.2f}, " for key, res in results.items() if key != "best")
            + f"vs best {row['vs_best_diff']:+.2f}{' -> promoted' if promoted else ''}"
        )

    def _warm_start(self) -> None:
        """Iteration 0: HeuristicBot plays ``warm_start_rounds`` rounds; its moves and the rounds'
        scores become the replay's first segment, and the learner takes ``warm_start_steps`` on it
        at the starting learning rate."""
        cfg = self.cfg.train
        self.status.phase(0, cfg.iterations, "warm start", 0, cfg.warm_start_rounds)
        data = teacher_examples(self.cfg.game, cfg.warm_start_rounds, seed=cfg.seed)
        self.replay.add(0, data)
        policy_loss, value_loss, _ = self._learn(0, cfg.warm_start_steps, lambda k: cfg.lr)
        self.status.line(f"warm start: {len(data)} examples from HeuristicBot, loss {policy_loss:.3f}/{value_loss:.4f}")

    def _weights(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights on the CPU (what checkpoints and players take)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _learn(self, it: int, steps: int, lr_at: Callable[[int], float]) -> tuple[float, float, float]:
        """``steps`` learner steps on the replay buffer (``blobnet.learn.learner_steps``), minibatches
        drawn from ``[seed, it, 1]``. On a GPU they run on a CUDA stream of their own, so they never
        queue behind the batcher's copies and forward passes; the stream is synchronised before the
        new weights are handed on."""
        cfg = self.cfg.train
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            out = learner_steps(
                self.model, self.optimizer, self.replay.arrays(), cfg=cfg, steps=steps, lr_at=lr_at,
                rng=np.random.default_rng([cfg.seed, it, 1]),
                on_step=lambda k: self.status.phase(it, cfg.iterations, "learn", k, steps),
            )  # fmt: skip
        if stream is not None:
            stream.synchronize()
        return out

    def _seat(self, state: dict[str, torch.Tensor]) -> NetworkSeat:
        """The network with ``state`` as a player, built here or in a helper (``build_seat``)."""
        return NetworkSeat(preset=self.cfg.network.preset, weights=arrays_of(state), search=self.cfg.search,
                           seed=self.cfg.train.seed, device=self.cfg.server.device)  # fmt: skip

    async def _match(self, a: Player, b: Player, rounds: int, seed: int) -> MatchResult:
        arena = self.cfg.arena
        return await play_match(
            a, b, players=arena.players, cards=arena.cards, rounds=rounds, seed=seed, concurrency=arena.concurrency
        )

    async def _evaluate(self, name: str, pool: EnginePool) -> dict[str, MatchResult]:
        """The candidate against the baseline bots here and, at the same time, against best.pt in
        a helper process (the pool's, so both cores play)."""
        arena = self.cfg.arena
        seat = self._seat(self.model.state_dict())
        candidate = build_seat(seat)
        best_state = load_checkpoint(self.dir / "best.pt", preset=self.cfg.network.preset)["model"]
        seed = self.cfg.train.seed * 7919 + self.iteration + 1
        gate_match = asyncio.ensure_future(
            pool.match(seat, self._seat(best_state), players=arena.players, cards=arena.cards, rounds=arena.rounds,
                       seed=seed, concurrency=arena.concurrency)
        )  # fmt: skip
        results: dict[str, MatchResult] = {}
        try:
            for key, base in self.baselines.items():
                results[key] = res = await self._match(candidate, make_bot(base, seed), arena.rounds, seed)
                self.ladder.record(name, key, res)
            results["best"] = res = await gate_match
            self.ladder.record(name, self.best_name, res)
        finally:
            gate_match.cancel()
            await aclose_player(candidate)
        self.ladder.save(self.dir / "elo.json")
        return results

    async def final_report(self, pool: EnginePool) -> dict[str, Any]:
        """The trained model (best.pt, its default search) against each of ``arena.baselines``:
        every other one here, the rest in a helper process, side by side."""
        arena = self.cfg.arena
        out: dict[str, Any] = {"iterations": self.iteration}
        if arena.final_rounds == 0 or not self.baselines:
            return out
        seat = self._seat(load_checkpoint(self.dir / "best.pt")["model"])
        best = build_seat(seat)
        self.status.phase(self.iteration, self.cfg.train.iterations, "final matches", 0, 1)
        results: dict[str, MatchResult] = {}
        kw: dict[str, Any] = {"rounds": arena.final_rounds, "seed": 10_007}

        bases = list(self.baselines.items())

        async def here() -> None:
            for key, base in bases[0::2]:
                results[key] = await self._match(best, make_bot(base, seed=1), **kw)

        async def there() -> None:
            for key, base in bases[1::2]:
                results[key] = await pool.match(
                    seat, BotSeat(base, seed=1), players=arena.players, cards=arena.cards,
                    concurrency=arena.concurrency, **kw,
                )  # fmt: skip

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(here())
                tg.create_task(there())
        except* Exception as group:
            raise group.exceptions[0] from None
        finally:
            await aclose_player(best)
        for key, base in bases:
            res = results[key]
            out[key] = res.to_dict()
            lo, hi = res.ci95
            self.status.line(
                f"best.pt vs {base}: {res.mean_score_a:.2f} vs {res.mean_score_b:.2f} points/round over "
                f"{res.rounds} mirrored rounds, diff {res.diff:+.2f} (95% CI {lo:+.2f} .. {hi:+.2f}), "
                f"bids made {res.made_rate_a:.0%} vs {res.made_rate_b:.0%}, Elo {res.elo_diff:+.0f}"
            )
        atomic_write_bytes(self.dir / "final.json", json.dumps(out, indent=2).encode())
        return out
