"""The learner's step: losses, the learning-rate schedule, minibatch steps, and teacher targets.

Pure training arithmetic over ``Examples``; the trainer (``clients.train``) decides when to call it
and what data it sees. Randomness: the caller hands in the generator that draws the minibatches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from blobnet.bots import HeuristicBot
from blobnet.config import GameConfig, TrainConfig
from blobnet.encode import WIDTH, encode
from blobnet.net import BlobNet
from blobnet.replay import Examples, PackedExamples, RoundRecord
from blobnet.rules import choices

__all__ = ["learner_losses", "cosine_lr", "learner_steps", "teacher_examples"]


def learner_losses(
    model: BlobNet, batch: Examples, value_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, policy, value) losses of one minibatch.

    Policy: cross-entropy against the search's policy targets, averaged over the rows that have
    them (not the value-only rows). Value: squared error over the seats at the table
    (``value_mask``: the padding seats past the table's size carry no target)."""
    dev = next(model.parameters()).device
    x, legal, target_pi, target_v, mask = (
        torch.from_numpy(a).to(dev, non_blocking=True)
        for a in (batch.features, batch.legal, batch.policy, batch.value, batch.value_mask)
    )
    logits, values = model(x, legal)
    with_policy = (target_pi.sum(dim=-1) > 0).sum().clamp(min=1)
    policy = -(target_pi * torch.log_softmax(logits, dim=-1)).sum() / with_policy
    seats = mask.float()
    value = (((values - target_v) ** 2) * seats).sum() / seats.sum()
    return policy + value_weight * value, policy, value


def cosine_lr(step: int, total: int, lr: float, lr_final: float) -> float:
    """The learning rate of learner step ``step`` of ``total``: cosine from ``lr`` down to ``lr_final``."""
    return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * step / max(total, 1)))


def learner_steps(
    model: BlobNet,
    optimizer: torch.optim.Optimizer,
    data: Examples | PackedExamples,
    *,
    cfg: TrainConfig,
    steps: int,
    lr_at: Callable[[int], float],
    rng: np.random.Generator,
    on_step: Callable[[int], None] | None = None,
) -> tuple[float, float, float]:
    """``steps`` minibatch steps of ``cfg.batch_size`` rows drawn from ``data`` with ``rng``, step
    ``k`` at learning rate ``lr_at(k)``. Returns the last step's (policy loss, value loss, learning
    rate). ``on_step(k)`` is called every 10 steps."""
    model.train()
    pol = val = torch.zeros(())
    lr = cfg.lr
    for k in range(steps):
        lr = lr_at(k)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = data.take(rng.integers(len(data), size=min(cfg.batch_size, len(data))))
        loss, p, v = learner_losses(model, batch, cfg.value_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pol, val = p.detach(), v.detach()  # read once at the end: .item() would wait for the device
        if on_step is not None and k % 10 == 0:
            on_step(k)
    model.eval()
    return float(pol), float(val), lr


def teacher_examples(game: GameConfig, rounds: int, *, seed: int, smoothing: float = 0.5) -> Examples:
    """Rounds of HeuristicBot at every seat, sampled like self-play's; one example per decision
    with a choice: the round's scores as values, and as policy target the bot's move with weight
    ``1 - smoothing`` and the rest spread over the legal moves. A one-hot target would make the
    prior so sharp that the search never looks at another move; the values then decide."""
    rng = np.random.default_rng([seed, 0, 2])
    bot = HeuristicBot(seed=seed)
    parts = []
    for _ in range(rounds):
        r = game.deal_round(rng)
        record = RoundRecord()
        for seat in choices(r):
            legal = r.legal()
            view = r.view(seat)
            row = np.empty(WIDTH, np.float32)
            encode(view, row)
            action = bot.act(view)
            share = smoothing / len(legal)
            record.add(r, row, legal, [share + (1 - smoothing) * (a == action) for a in legal])
            r.apply(action)
        parts.append(record.examples(r))
    return Examples.concat(parts)
