"""The learning diagnostic (bench/learning.py): its figures on answers whose quality is known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.learning import examples_of, scores
from blobnet.aio import run_loop
from blobnet.checkpoint import save_checkpoint
from blobnet.config import GameConfig, SearchConfig
from blobnet.net import make_net

ROOT = Path(__file__).resolve().parents[1]
NET = make_net("tiny", seed=0)
EX = run_loop(examples_of(NET, SearchConfig(dets=2, sims=8), GameConfig(players=[4], cards=[3]), rounds=6,
                          concurrency=3, seed=1))  # fmt: skip


def test_perfect_answers_explain_everything_and_agree_with_the_search() -> None:
    acting = EX.policy.sum(axis=1) > 0
    s = scores(EX.policy.copy(), EX.value.copy(), EX, cards=3)
    assert s["examples"] == len(EX) and s["policy"]["rows"] == acting.sum() == (~acting).sum()
    assert all(v["r2"] == 1.0 and v["rmse_points"] == 0.0 for v in s["value"].values())
    assert s["policy"]["kl_target_prior"] == pytest.approx(0.0, abs=1e-6)
    assert s["policy"]["top1_agreement"] == 1.0 and s["policy"]["cross_entropy"] == s["policy"]["target_entropy"]


def test_predicting_the_mean_explains_nothing_and_a_uniform_prior_pays_its_kl() -> None:
    values = np.full_like(EX.value, EX.value[:, 0].mean())
    uniform = EX.legal / EX.legal.sum(axis=1, keepdims=True).clip(min=1)
    s = scores(uniform.astype(np.float32), values, EX, cards=3)
    assert s["value"]["all"]["r2"] == pytest.approx(0.0, abs=1e-4)
    assert s["value"]["all"]["rmse_points"] == pytest.approx(s["value"]["all"]["outcome_sd_points"], abs=1e-3)
    acting = EX.policy.sum(axis=1) > 0
    legal_counts = EX.legal[acting].sum(axis=1)
    want = np.mean(np.log(legal_counts)) - s["policy"]["target_entropy"]  # KL(t || uniform) = log n - H(t)
    assert s["policy"]["kl_target_prior"] == pytest.approx(want, abs=1e-3)
    assert s["policy"]["prior_entropy"] == pytest.approx(np.mean(np.log(legal_counts)), abs=1e-3)


def test_the_command_reports_a_checkpoint_and_names_a_bad_one(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, preset="tiny", model=NET.state_dict())
    cmd = [sys.executable, "-m", "bench.learning", str(ckpt), "--rounds", "4", "--concurrency", "2", "--json"]
    cmd += ["--set", "search.sims=4", "--set", "game.cards=[2]"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["policy"]["rows"] == got["value"]["acting"]["rows"] == got["value"]["onlooker"]["rows"] > 0
    assert got["value"]["acting_bids"]["rows"] == 4 * 4  # every seat bids once a round
    bad = subprocess.run([*cmd[:3], str(tmp_path / "missing.pt")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.pt" in bad.stderr
