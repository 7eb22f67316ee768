"""The diagnostic suite: the sweep's pipeline end to end (tiny), and advice that follows the data."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.common import Adapted, ThreadBatcher, drive, forward_rows, rate
from bench.report import advise
from bench.sweep import parse
from blobnet.encode import WIDTH
from blobnet.net import make_net

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = {
    "sweep", "strategy", "concurrency", "workers", "setting", "cards", "rounds_per_min", "sims_per_s",
    "evals_per_s", "mean_batch", "batch_p10", "batch_p90", "latency_p50_ms", "latency_p99_ms", "cpu_percent",
    "peak_rss_mb", "gpu_util", "gpu_mem_mb", "search_ceiling_rpm", "inference_ceiling_rpm", "error",
}  # fmt: skip


@pytest.mark.timeout(180)
def test_tiny_sweep_writes_results_charts_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--quick", "--tiny", "--out", str(out)], cwd=ROOT, capture_output=True,
        text=True, timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("results.csv", "results.json", "meta.json", "summary.md"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert COLUMNS <= set(df.columns), COLUMNS - set(df.columns)
    assert set(df["strategy"]) >= {"asyncio", "asyncio-thread", "direct", "threads", "processes", "free"}
    assert set(df["sweep"]) >= {"scaling", "search", "hands"}
    assert len(pd.read_json(out / "results.json")) == len(df)
    ran = df[df["error"].isna()]
    assert (ran["sims_per_s"] > 0).all() and (ran["rounds_per_min"] > 0).all()
    for chart in ("scaling", "batching", "ceilings", "settings"):
        data = (out / f"{chart}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, chart
    summary = (out / "summary.md").read_text()
    assert "Recommended configuration" in summary and "Training-time estimate" in summary
    assert "no GPU" in summary  # this machine has none; the summary says so plainly


# ---- advice from synthetic results ------------------------------------------------------------------


def _row(strategy: str, concurrency: int, rpm: float, batch: float, search: float, inference: float,
         sweep: str = "scaling", setting: str = "medium", cards: int = 5) -> dict[str, object]:  # fmt: skip
    return {
        "sweep": sweep, "strategy": strategy, "concurrency": concurrency, "workers": 1, "setting": setting,
        "cards": cards, "dets": 3, "sims": 30, "rounds_per_min": rpm, "sims_per_s": rpm * 20, "mean_batch": batch,
        "batch_key": max(1, round(batch)), "search_ceiling_rpm": search, "inference_ceiling_rpm": inference,
        "search_share": rpm / search, "inference_share": rpm / inference, "error": "",
    }  # fmt: skip


def test_advice_says_batching_is_slower_when_direct_beats_it() -> None:
    df = pd.DataFrame([
        _row("direct", 16, 900, 1, 2000, 5000),
        _row("asyncio", 16, 600, 60, 2000, 50_000),
        _row("asyncio", 256, 500, 300, 1800, 90_000),
    ])  # fmt: skip
    a = advise(df)
    assert "direct_beats_batching" in a.flags and "batching_pays" not in a.flags
    assert any("Batching is slower than direct" in line for line in a.lines)
    assert a.recommended is not None and a.recommended["strategy"] == "direct"


def test_advice_says_batching_pays_when_it_does() -> None:
    df = pd.DataFrame([_row("direct", 16, 300, 1, 2000, 600), _row("asyncio", 64, 1500, 200, 2000, 40_000)])
    a = advise(df)
    assert "batching_pays" in a.flags and "direct_beats_batching" not in a.flags


def test_advice_asks_for_more_games_when_batches_are_tiny() -> None:
    df = pd.DataFrame([_row("asyncio", 1, 300, 1.2, 2500, 3000), _row("asyncio", 4, 700, 3.5, 2500, 6000)])
    a = advise(df)
    assert "more_concurrency" in a.flags
    assert any("Too little batching" in line and "more games at once" in line for line in a.lines)


def test_advice_does_not_ask_for_more_games_that_were_measured_slower() -> None:
    df = pd.DataFrame([_row("asyncio", 4, 900, 3.5, 2500, 6000), _row("asyncio", 64, 400, 40, 2000, 30_000)])
    a = advise(df)
    assert "more_concurrency" not in a.flags and "larger_batches_slower" in a.flags


def test_advice_names_the_search_when_achieved_is_near_the_search_ceiling() -> None:
    a = advise(pd.DataFrame([_row("asyncio", 64, 1800, 200, 2000, 40_000)]))
    assert a.bottleneck == "search" and "search_bound" in a.flags
    assert any(line.startswith("Search-bound") for line in a.lines)


def test_advice_names_the_forward_pass_when_near_the_inference_ceiling() -> None:
    a = advise(pd.DataFrame([_row("asyncio", 64, 900, 200, 20_000, 1000)]))
    assert a.bottleneck == "inference" and any(line.startswith("Inference-bound") for line in a.lines)


def test_advice_names_the_overhead_when_neither_ceiling_is_near() -> None:
    a = advise(pd.DataFrame([_row("asyncio", 64, 500, 200, 2000, 3000)]))
    assert a.bottleneck == "overhead" and any(line.startswith("Overhead-bound") for line in a.lines)


def test_training_estimate_follows_the_measured_rate_and_the_plan() -> None:
    df = pd.DataFrame([
        _row("asyncio", 64, 1000, 200, 2000, 40_000),
        _row("asyncio", 64, 2000, 150, 4000, 40_000, sweep="search", setting="light"),
        _row("asyncio", 64, 250, 250, 500, 40_000, sweep="search", setting="heavy"),
    ])  # fmt: skip
    a = advise(df, iterations=500, rounds_per_iteration=10_000)
    hours = {t["label"].split()[0]: t["hours"] for t in a.training}
    assert hours["medium"] == pytest.approx(5_000_000 / 1000 / 60)
    assert hours["light"] == pytest.approx(hours["medium"] / 2)
    assert hours["heavy"] == pytest.approx(hours["medium"] * 4)
    assert advise(df, iterations=5, rounds_per_iteration=100).training[0]["hours"] < 0.01


def test_advice_with_no_successful_point_says_so() -> None:
    row = _row("asyncio", 64, math.nan, 1.0, 1, 1) | {"mean_batch": math.nan}
    a = advise(pd.DataFrame([row | {"error": "RuntimeError: boom"}]))
    assert a.recommended is None and a.bottleneck == "unknown" and "no_data" in a.flags


# ---- the pieces ----------------------------------------------------------------------------------


def test_sweep_refuses_bad_flags() -> None:
    for argv in (["--strategies", "asyncio,bogus"], ["--concurrency", "0,4"], ["--concurrency", "x"],
                 ["--preset", "huge"], ["--players", "9"], ["--budget", "0"], ["--iterations", "0"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse(argv)


def test_thread_batcher_answers_each_request_as_a_direct_forward_would() -> None:
    model = make_net("tiny", seed=0)
    rng = np.random.default_rng(0)
    x = (rng.random((5, WIDTH)) < 0.05).astype(np.float32)
    legal = [[0, 3, 7], [52, 53], [10, 11, 12, 13], [1, 2], [60, 61, 62]]
    tb = ThreadBatcher(model, fill=1, timeout=0.01)
    priors, values = drive(tb.evaluate_many(x, legal))
    want_p, want_v = forward_rows(model, x, legal)
    np.testing.assert_allclose(priors, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)


def test_adapter_turns_per_row_evaluators_into_the_search_protocol() -> None:
    class PerRow:
        async def evaluate(self, features: np.ndarray, legal: list[int]) -> tuple[list[float], list[float]]:
            priors = [0.0] * 70
            for a in legal:
                priors[a] = 1.0 / len(legal)
            return priors, [float(features[0])] * 8

        async def aclose(self) -> None:
            return None

    x = np.zeros((2, WIDTH), dtype=np.float32)
    x[1, 0] = 1.0
    priors, values = asyncio.run(Adapted(PerRow()).evaluate_many(x, [[1, 2], [5, 6, 7, 8]]))
    assert priors == [0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert values == [[0.0] * 8, [1.0] * 8]


def test_rate_is_the_slope_through_bursty_counters() -> None:
    t = np.arange(0, 10, 0.1)
    bursts = 1000 * np.floor(t)  # +1000 once a second
    assert rate([(a, b) for a, b in zip(t, bursts)], 1) == pytest.approx(1000, rel=0.05)


def test_gpu_check_exits_cleanly_without_a_gpu() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check itself runs instead")
    assert proc.returncode == 0 and "no GPU: nothing to check" in proc.stdout
