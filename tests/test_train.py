"""Training runs end to end in a subprocess: smoke, exact resume, SIGKILL at random moments."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blobnet.checkpoint import load_checkpoint

TINY = [
    "network.preset=tiny",
    "search.dets=1",
    "search.sims=4",
    "search.leaves=2",
    "game.cards=[3]",
    "train.rounds_per_iteration=16",
    "train.concurrency=8",
    "train.steps_per_iteration=5",
    "train.batch_size=32",
    "train.replay_size=400",
    "arena.rounds=4",
    "arena.cards=3",
    "arena.final_rounds=0",
]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_cmd(run_dir: Path, *extra: str, iterations: int = 2, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "clients.cli", "train", "--run-dir", str(run_dir), "--json"]
    cmd += ["--resume"] if resume else []
    for item in [*TINY, f"train.iterations={iterations}", *extra]:
        cmd += ["--set", item]
    return cmd


def train(run_dir: Path, *extra: str, iterations: int = 2, resume: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_cmd(run_dir, *extra, iterations=iterations, resume=resume), capture_output=True, text=True,
        timeout=240, env=ENV,
    )  # fmt: skip


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_tiny_run_writes_its_run_directory(tmp_path):
    run = tmp_path / "run"
    out = train(run)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["iterations"] == 2
    for name in ("config.json", "best.pt", "metrics.csv", "elo.json", "loss.png", "elo.png", "baselines.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"iter_00000{i}.pt" for i in range(3)]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(float(r["policy_loss"]) > 0 for r in rows)
    data = load_checkpoint(run / "checkpoints" / "iter_000002.pt")
    assert data["iteration"] == 2 and "optimizer" in data and "torch_rng" in data
    assert json.loads((run / "config.json").read_text())["network"]["preset"] == "tiny"


def test_a_run_keeps_its_newest_checkpoints_and_resumes_from_them(tmp_path):
    run = tmp_path / "run"
    out = train(run, "train.keep_checkpoints=2", iterations=3)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000002.pt", "iter_000003.pt"]
    out = train(run, "train.keep_checkpoints=2", iterations=4, resume=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000003.pt", "iter_000004.pt"]
    assert [int(r["iteration"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1, 2, 3, 4]
    assert (run / "best.pt").is_file()


def test_a_run_against_fixed_opponents_learns_from_the_network_seats_alone(tmp_path):
    """Three bots at each table of four: the one network seat makes at most 4 searched decisions a
    round (one bid, three cards), two examples each."""
    run = tmp_path / "run"
    out = train(run, 'train.opponents=["heuristic","random","ismcts:sims=50"]', "train.workers=2", iterations=1)
    assert out.returncode == 0, out.stderr
    (row,) = csv.DictReader((run / "metrics.csv").open())
    assert 0 < int(row["examples"]) <= 16 * 4 * 2
    assert json.loads((run / "config.json").read_text())["train"]["opponents"][2] == "ismcts:sims=50"


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_continues_exactly_where_the_uninterrupted_run_would_be(tmp_path, workers):
    """With 2 workers a helper process plays half the self-play and the gate and final matches."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    # iteration 3 lasts long enough to be interrupted
    longer = ["train.rounds_per_iteration=48", f"train.workers={workers}", "arena.final_rounds=4"]
    out = train(straight, *longer, iterations=3)
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) >= {"heuristic", "random"}
    proc = subprocess.Popen(
        train_cmd(split, *longer, iterations=3), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )
    deadline = time.monotonic() + 120
    while not (split / "checkpoints" / "iter_000002.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert not (split / "checkpoints" / "iter_000003.pt").exists()
    out = train(split, *longer, iterations=3, resume=True)
    assert out.returncode == 0, out.stderr
    a, b = weights(straight / "checkpoints" / "iter_000003.pt"), weights(split / "checkpoints" / "iter_000003.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rows = list(csv.DictReader((split / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]


def test_a_run_killed_at_random_moments_resumes_and_finishes(tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(7)
    cmd = train_cmd(run, iterations=4)
    env = ENV
    first = True
    for _ in range(3):
        args = cmd + ([] if first else ["--resume"])
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        time.sleep(float(rng.uniform(2.0, 6.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (run / "checkpoints").exists() and any((run / "checkpoints").iterdir()):
            first = False
        for path in run.rglob("*"):
            if path.is_file() and path.suffix == ".pt" and not path.name.startswith("."):
                load_checkpoint(path)  # every checkpoint on disk is whole
    out = subprocess.run(cmd + ([] if first else ["--resume"]), capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert not list(run.rglob(".*.tmp"))


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    cmd = [c for c in train_cmd(run, iterations=50) if c != "--json"]  # the status lines go to stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "iter_000001.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err and "--resume" in err


def test_new_run_refuses_a_directory_holding_a_run(tmp_path):
    run = tmp_path / "run"
    assert train(run, iterations=1).returncode == 0
    out = train(run, iterations=1)
    assert out.returncode == 2 and "--resume" in out.stderr


def test_resume_without_a_run_is_refused(tmp_path):
    out = train(tmp_path / "nothing", resume=True)
    assert out.returncode == 2 and "no checkpoint" in out.stderr


@pytest.mark.parametrize(
    "bad, named",
    [
        ("search.sims=0", "search.sims"),
        ("train.lr=-1", "train.lr"),
        ("train.keep_checkpoints=1", "train.keep_checkpoints"),
        ('arena.baselines=["ismcts:sims=0"]', "arena.baselines: player 'ismcts:sims=0'"),
        ('arena.baselines=["random","random:"]', "name each bot at most once"),
        ('train.opponents=["nobody"]', "train.opponents: bot 'nobody'"),
        (
            'train.opponents=["heuristic","random","ismcts","random"]',
            "train.opponents: 4 opponents at tables of 4 players",
        ),
    ],
)
def test_bad_config_is_refused_before_anything_is_written(tmp_path, bad, named):
    out = train(tmp_path / "run", bad)
    assert out.returncode == 2 and named in out.stderr
    assert not (tmp_path / "run").exists()
