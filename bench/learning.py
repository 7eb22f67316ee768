"""What a network has learnt, measured on fresh self-play of its own: data it has not trained on.

    python -m bench.learning CHECKPOINT [--config configs/default.toml] [--set search.sims=100 ...]
                             [--rounds 400] [--concurrency 64] [--seed 99991] [--json]

The network plays ``--rounds`` rounds of self-play with its search, as the config's training run
plays them (its game and search sections: Dirichlet noise, moves drawn from the visits), and every
example the trainer would store is scored against the network's own answers for it:

- value: how much of the variance of the viewing seat's round score the value head explains
  (R^2 = 1 - mean squared error / variance of the outcome; 0 is what predicting the mean gives),
  for the acting seat's rows and the onlooker rows, bids and plays apart, and the squared error
  in points a round;
- policy, on the rows with a search target: the cross-entropy of the target under the network's
  prior, KL(target || prior), the entropies of both, and how often the prior's favourite is the
  search's most visited move: how much the search still adds over the prior.

The outcome of a round seen from one seat has a part no network can predict (the hidden cards, the
other seats' later moves), so an R^2 well below 1 is expected; what the figures are for is
comparing networks and runs, and seeing where the loop's targets carry information.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blobnet.aio import run_loop
from blobnet.cards import BID0
from blobnet.checkpoint import load_model
from blobnet.config import GameConfig, SearchConfig, load_config
from blobnet.encode import value_scale
from blobnet.net import BlobNet, forward_rows
from blobnet.replay import Examples
from clients.selfplay import SelfPlayEngine
from servers import Batcher

__all__ = ["examples_of", "report", "scores", "main"]


async def examples_of(model: BlobNet, search: SearchConfig, game: GameConfig, *, rounds: int, concurrency: int,
                      seed: int) -> Examples:  # fmt: skip
    """The examples ``rounds`` rounds of self-play by ``model`` produce."""
    parts: list[Examples] = []
    batcher = Batcher(model, max_batch=4096, mode="inline")
    try:
        engine = SelfPlayEngine(batcher, search=search, game=game, concurrency=concurrency, seed=seed,
                                sink=parts.append)  # fmt: skip
        await engine.run(rounds)
    finally:
        await batcher.aclose()
    return Examples.concat(parts)


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    var = float(np.var(target))
    return 1.0 - float(np.mean((pred - target) ** 2)) / var if var > 0 else float("nan")


def report(model: BlobNet, ex: Examples, cards: int) -> dict[str, Any]:
    """The value and policy figures (module docstring) of ``model`` on examples ``ex``; errors in
    points for rounds of ``cards`` cards."""
    return scores(*forward_rows(model, ex.features, ex.legal), ex, cards)


def scores(priors: np.ndarray, values: np.ndarray, ex: Examples, cards: int) -> dict[str, Any]:
    """``report``'s figures for the answers ``priors`` and ``values`` to the rows of ``ex``."""
    acting = ex.policy.sum(axis=1) > 0  # rows with a search target; the others are onlookers' rows
    bidding = np.any(ex.legal[:, BID0:], axis=1)
    scale = value_scale(cards)
    value: dict[str, Any] = {}
    for name, rows in (("all", np.ones(len(ex), bool)), ("acting", acting), ("onlooker", ~acting),
                       ("acting_bids", acting & bidding), ("acting_plays", acting & ~bidding)):  # fmt: skip
        pred, target = values[rows, 0], ex.value[rows, 0]
        value[name] = {
            "rows": int(rows.sum()),
            "r2": round(_r2(pred, target), 4),
            "rmse_points": round(float(np.sqrt(np.mean((pred - target) ** 2))) * scale, 3),
            "outcome_sd_points": round(float(np.std(target)) * scale, 3),
        }
    t, p = ex.policy[acting], priors[acting]
    logp = np.log(np.where(t > 0, p, 1.0))
    logt = np.log(np.where(t > 0, t, 1.0))
    target_entropy = -(t * logt).sum(axis=1)
    cross_entropy = -(t * logp).sum(axis=1)
    prior_entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    same = np.equal(t.argmax(axis=1), p.argmax(axis=1))  # the prior's favourite is the most visited move
    policy = {
        "rows": int(acting.sum()),
        "cross_entropy": round(float(cross_entropy.mean()), 4),
        "kl_target_prior": round(float((cross_entropy - target_entropy).mean()), 4),
        "target_entropy": round(float(target_entropy.mean()), 4),
        "prior_entropy": round(float(prior_entropy.mean()), 4),
        "top1_agreement": round(float(same.mean()), 4),
        "top1_agreement_bids": round(float(same[bidding[acting]].mean()), 4),
    }
    return {"examples": len(ex), "value": value, "policy": policy}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--config", default="configs/default.toml", help="the run whose game and search to play")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--rounds", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seed", type=int, default=99991, help="self-play seed (the trainer's runs use others)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.rounds, args.concurrency) < 1:
        p.error("--rounds and --concurrency must be at least 1")
    torch.set_num_threads(1)
    try:
        model = load_model(args.checkpoint)
        cfg = load_config(args.config, args.set)
    except ValueError as e:
        p.error(str(e))
    if cfg.game.mode != "rounds" or len(cfg.game.cards) != 1:
        p.error("the config must play single rounds of one hand size (game.mode = rounds, one game.cards)")
    ex = run_loop(examples_of(model, cfg.search, cfg.game, rounds=args.rounds, concurrency=args.concurrency,
                              seed=args.seed))  # fmt: skip
    out = report(model, ex, cfg.game.cards[0])
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.checkpoint}: {args.rounds} rounds of its own self-play, {out['examples']:,} examples")
    for name, v in out["value"].items():
        print(f"  value R^2 {v['r2']:+.3f} on {v['rows']:6,} {name} rows (error {v['rmse_points']:.2f} points "
              f"a round, outcome sd {v['outcome_sd_points']:.2f})")  # fmt: skip
    pol = out["policy"]
    print(f"  policy on {pol['rows']:,} searched rows: KL(target || prior) {pol['kl_target_prior']:.3f}, "
          f"entropy target {pol['target_entropy']:.3f} prior {pol['prior_entropy']:.3f}, prior's favourite = "
          f"search's {pol['top1_agreement']:.1%} (bids {pol['top1_agreement_bids']:.1%})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
