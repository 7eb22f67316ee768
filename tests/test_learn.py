"""The learner's step: losses over value masks and policy rows, the schedule, teacher targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blobnet.cards import N_VALUES
from blobnet.config import GameConfig, TrainConfig
from blobnet.learn import cosine_lr, learner_losses, learner_steps, teacher_examples
from blobnet.net import make_net


def test_onlooker_rows_count_in_the_value_loss_alone():
    """The value-only rows (a decision seen by another seat) leave the policy loss as it is on
    the acting seats' rows, and join the value loss."""
    ex = teacher_examples(GameConfig(players=[4], cards=[3]), 3, seed=0)
    acting, onlookers = ex.take(slice(0, None, 2)), ex.take(slice(1, None, 2))
    assert (acting.policy.sum(axis=1) > 0.99).all() and (onlookers.policy == 0).all()
    model = make_net("tiny", seed=0).eval()
    with torch.no_grad():
        _, pol_all, val_all = learner_losses(model, ex, 1.0)
        _, pol_acting, val_acting = learner_losses(model, acting, 1.0)
        _, _, val_onlookers = learner_losses(model, onlookers, 1.0)
    assert float(pol_all) == pytest.approx(float(pol_acting), rel=1e-5)
    assert float(val_all) == pytest.approx((float(val_acting) + float(val_onlookers)) / 2, rel=1e-5)


def test_value_targets_of_the_seats_past_the_table_do_not_count():
    ex = teacher_examples(GameConfig(players=[3, 5], cards=[2]), 6, seed=1)
    assert set(ex.value_mask.sum(axis=1)) == {3, 5}
    model = make_net("tiny", seed=0).eval()
    changed = ex.take(slice(None))
    changed.value = np.where(ex.value_mask, ex.value, 123.0).astype(np.float32)
    with torch.no_grad():
        base = learner_losses(model, ex, 1.0)[2]
        other = learner_losses(model, changed, 1.0)[2]
        unmasked = ex.take(slice(None))
        unmasked.value_mask = np.ones_like(ex.value_mask)
        everything = learner_losses(model, unmasked, 1.0)[2]
    assert float(other) == float(base)
    assert float(everything) != float(base)  # the mask is what excludes them
    assert ex.value_mask.shape == (len(ex), N_VALUES)


def test_the_schedule_runs_from_lr_down_to_lr_final():
    assert cosine_lr(0, 100, 1e-3, 1e-4) == pytest.approx(1e-3)
    assert cosine_lr(50, 100, 1e-3, 1e-4) == pytest.approx(5.5e-4)
    assert cosine_lr(100, 100, 1e-3, 1e-4) == pytest.approx(1e-4)


def test_learner_steps_lower_the_loss_and_repeat_with_the_same_generator():
    ex = teacher_examples(GameConfig(players=[4], cards=[3]), 20, seed=2)
    cfg = TrainConfig(batch_size=64, lr=3e-3, lr_final=3e-3)

    def run() -> tuple[float, float, float, float]:
        model = make_net("tiny", seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        with torch.no_grad():
            before = float(learner_losses(model, ex, 1.0)[0])
        pol, val, lr = learner_steps(model, opt, ex, cfg=cfg, steps=60, lr_at=lambda k: cfg.lr,
                                     rng=np.random.default_rng(0))  # fmt: skip
        with torch.no_grad():
            after = float(learner_losses(model, ex, 1.0)[0])
        assert lr == cfg.lr and not model.training
        return before, after, pol, val

    first, second = run(), run()
    assert first[1] < first[0]
    assert first == second


def test_take_selects_the_same_rows_of_every_field_without_copying_the_rest():
    ex = teacher_examples(GameConfig(players=[4], cards=[3]), 4, seed=2)
    rows = np.array([5, 0, 3])
    picked = ex.take(rows)
    for name in ("features", "legal", "policy", "value", "value_mask"):
        assert np.array_equal(getattr(picked, name), getattr(ex, name)[rows])
    window = ex.take(slice(2, 6))
    # a slice is a view: a learner's minibatch must not copy the whole buffer first
    assert all(np.shares_memory(getattr(window, n), getattr(ex, n)) for n in ("features", "value", "value_mask"))
