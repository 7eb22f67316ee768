"""The diagnostic suite: the sweep's pipeline end to end (tiny), and advice that follows the data."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.advice import ADVICE, Advice, Facts, advise, best_row
from bench.common import Timed, rate
from bench.forward_engines import main as forward_engines_main
from bench.forward_engines import op_profile
from bench.ismcts_bound import main as bound_main
from bench.ismcts_bound import player_among_random
from bench.point import PointSpec
from bench.predecessor import RowByRow, SyncPlayer, ThreadBatcher, drive
from bench.strategies import ENGINE_EVALUATORS, STRATEGIES, run_point
from bench.sweep import PLANS, PRECISION_STRATEGIES, QUICK, TINY, Mode, derive, parse, plan_scaling
from bench.think_time import decision_times, measure
from bench.think_time import main as think_main
from blobnet.aio import run_loop
from blobnet.cards import BID0, N_ACTIONS, N_VALUES
from blobnet.config import GameConfig, SearchConfig
from blobnet.encode import WIDTH
from blobnet.evaluator import FreeEvaluator
from blobnet.net import DirectEvaluator, make_net
from blobnet.rules import View
from blobnet.search import Search
from servers import Batcher

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
    assert set(df["strategy"]) >= {*STRATEGIES, "free"}
    pooled = df[df["strategy"].isin(["asyncio-pool", "processes+server"])]
    assert pooled["error"].isna().all(), pooled["error"].tolist()  # clients.pool ran them
    # a whole run of the pool with every game live from its start: at least a round a game, batched
    assert (pooled["rounds_done"] >= pooled["concurrency"]).all() and (pooled["mean_batch"] > 1).all()
    assert (df[df["strategy"] == "asyncio-pool"]["workers"] == (os.cpu_count() or 1)).all()
    assert set(df["sweep"]) >= {"scaling", "search", "hands"}
    precision = df[df["sweep"] == "precision"]  # where the best strategy runs batchers of its own: a pair
    if len(precision):
        assert precision["dtype"].tolist() == ["float32", "bf16"] and precision["strategy"].nunique() == 1
        assert precision["strategy"].isin(PRECISION_STRATEGIES).all() and (precision["rounds_per_min"] > 0).all()
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
         sweep: str = "scaling", setting: str = "medium", cards: int = 5, dtype: str = "float32",
         ) -> dict[str, object]:  # fmt: skip
    return {
        "sweep": sweep, "strategy": strategy, "concurrency": concurrency, "workers": 1, "setting": setting,
        "dtype": dtype,
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


@pytest.mark.parametrize("bf16_rpm, pays", [(1300, True), (800, False)])
def test_advice_on_precision_compares_bf16_with_the_float32_point_beside_it(bf16_rpm: int, pays: bool) -> None:
    df = pd.DataFrame([
        _row("asyncio", 64, 1000, 200, 2000, 40_000),  # the scaling sweep's point: not the reference
        _row("asyncio", 64, 1100, 200, 2000, 40_000, sweep="precision"),
        _row("asyncio", 64, bf16_rpm, 200, 2000, 40_000, sweep="precision", dtype="bf16"),
        _row("direct", 16, 5000, 1, 2000, 5000, sweep="precision", dtype="bf16"),  # another strategy's: not read
    ])  # fmt: skip
    a = advise(df)
    (line,) = [line for line in a.lines if line.startswith("In bf16")]
    assert f"{bf16_rpm / 1100:.2f}x float32 measured beside it (1,100)" in line
    assert ("bf16_pays" in a.flags) == pays
    assert ("float32 stays the default" in line) == pays and ("keep float32" in line) == (not pays)
    alone = advise(df[(df["sweep"] != "precision") | (df["dtype"] == "bf16")])  # no float32 beside it: no claim
    assert not any(line.startswith("In bf16") for line in alone.lines) and "bf16_pays" not in alone.flags


def test_a_bf16_point_runs_its_batchers_in_bf16_on_the_eager_engine() -> None:
    fp32 = ENGINE_EVALUATORS["asyncio"](PointSpec(strategy="asyncio", preset="tiny"))
    bf16 = ENGINE_EVALUATORS["asyncio"](PointSpec(strategy="asyncio", preset="tiny", dtype="bf16"))
    assert isinstance(bf16, Batcher) and bf16.dtype == torch.bfloat16
    rng = np.random.default_rng(0)
    x = (rng.random((8, WIDTH)) < 0.05).astype(np.float32)
    legal = np.ones((8, N_ACTIONS), np.bool_)

    async def both() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        try:
            return await fp32.evaluate_many(x, legal), await bf16.evaluate_many(x, legal)
        finally:
            await fp32.aclose()
            await bf16.aclose()

    (p32, v32), (p16, v16) = asyncio.run(both())
    assert np.abs(p16 - p32).max() < 0.02 and np.abs(v16 - v32).max() < 0.02


def test_advice_for_a_pool_names_the_workers_to_run() -> None:
    df = pd.DataFrame([
        _row("asyncio", 256, 1000, 200, 1200, 40_000),
        _row("asyncio-pool", 256, 1800, 100, 2400, 80_000) | {"workers": 2},
        _row("asyncio-pool", 16, 900, 8, 2000, 20_000) | {"workers": 2},
    ])  # fmt: skip
    a = advise(df)
    assert a.recommended is not None and a.recommended["strategy"] == "asyncio-pool"
    assert {"use_workers", "pool_faster"} <= a.flags and "use_one_worker" not in a.flags
    assert "(2 processes)" in a.lines[0]
    assert any("blobnet selfplay --workers 2 --concurrency 256" in line and "train.workers = 2" in line
               for line in a.lines)  # fmt: skip
    assert any("1.80x one asyncio process" in line for line in a.lines)
    # search-bound in a pool: the cores are in use already, no advice to add processes
    assert a.bottleneck == "search" and not any("--workers N" in line for line in a.lines)


def test_advice_keeps_one_process_when_the_pool_is_slower() -> None:
    df = pd.DataFrame([
        _row("asyncio", 256, 1500, 200, 1600, 40_000),
        _row("asyncio-pool", 256, 1000, 100, 3000, 80_000) | {"workers": 4},
    ])  # fmt: skip
    a = advise(df)
    assert a.recommended is not None and a.recommended["strategy"] == "asyncio"
    assert {"pool_slower", "use_one_worker"} <= a.flags and "use_workers" not in a.flags
    assert any("--workers 1" in line and "train.workers = 1" in line for line in a.lines)
    assert any(line.startswith("Search-bound") and "--workers N" in line for line in a.lines)


def test_advice_with_no_successful_point_says_so() -> None:
    row = _row("asyncio", 64, math.nan, 1.0, 1, 1) | {"mean_batch": math.nan}
    a = advise(pd.DataFrame([row | {"error": "RuntimeError: boom"}]))
    assert a.recommended is None and a.bottleneck == "unknown" and "no_data" in a.flags


def test_each_piece_of_advice_says_nothing_the_data_do_not_bear_on() -> None:
    df = pd.DataFrame([_row("asyncio", 64, 500, 200, 2000, 3000)])  # one point, big batches, no overlap
    facts = Facts(df, df, best_row(df), 500, 10_000, 16.0, 0.7)
    said = {piece.__name__: piece(facts, Advice(None, "unknown")) for piece in ADVICE}
    assert {name for name, lines in said.items() if lines} == {"recommendation", "bottleneck", "training_time"}


# ---- the pieces ----------------------------------------------------------------------------------


def test_plan_runs_the_pool_with_one_process_per_cpu() -> None:
    def pool(mode: Mode, cpus: int, engine: tuple[int, ...] | None = None) -> list[PointSpec]:
        plan = plan_scaling(mode, ("asyncio", "asyncio-pool"), players=4, preset="tiny", cpus=cpus, engine=engine)
        specs = [spec for _, spec in plan if spec.strategy == "asyncio-pool"]
        for spec in specs:
            spec.check()
        return specs

    for cpus in (1, 2, 3):
        specs = pool(QUICK, cpus)
        assert [s.concurrency for s in specs] == list(QUICK.pool)
        assert {s.workers for s in specs} == {cpus}
    assert [(s.concurrency, s.workers) for s in pool(QUICK, 32)] == [(c, 32) for c in QUICK.pool if c >= 32]
    big = 4 * max(TINY.pool)  # more cores than games: one point with a game per process
    assert [(s.concurrency, s.workers) for s in pool(TINY, big)] == [(big, big)]
    assert [s.concurrency for s in pool(QUICK, 4, engine=(1, 4, 64))] == [4, 64]
    assert 1 <= len(pool(QUICK, 2)) <= 3  # the quick sweep stays short


def test_point_spec_wants_a_game_per_client_process() -> None:
    for strategy in ("asyncio-pool", "processes+server"):
        with pytest.raises(ValueError, match="every client needs a game"):
            PointSpec(strategy=strategy, concurrency=3, workers=4).check()
        PointSpec(strategy=strategy, concurrency=4, workers=4).check()
    PointSpec(strategy="processes", concurrency=1, workers=4).check()  # workers there play a game each anyway


def test_asyncio_uses_the_batchers_default_mode_and_asyncio_thread_a_thread() -> None:
    default = Batcher(make_net("tiny", seed=0)).mode
    made = {name: ENGINE_EVALUATORS[name](PointSpec(strategy=name, preset="tiny")) for name in ENGINE_EVALUATORS}
    assert isinstance(made["asyncio"], Batcher) and made["asyncio"].mode == default
    assert isinstance(made["asyncio-thread"], Batcher) and made["asyncio-thread"].mode == "thread"
    assert isinstance(made["direct"], RowByRow) and isinstance(made["free"], FreeEvaluator)


def test_every_strategy_has_a_plan_and_a_point_refuses_an_unknown_one() -> None:
    assert set(PLANS) == set(STRATEGIES)
    with pytest.raises(ValueError, match="use one of"):
        run_point(PointSpec(strategy="bogus"))


def test_pool_ceilings_count_every_process() -> None:
    base = {"sweep": "scaling", "setting": "medium", "cards": 5, "dets": 3, "sims": 30, "rounds_done": 0,
            "window_s": 2.0, "cpu_cores": 1.0, "error": ""}  # fmt: skip
    df = pd.DataFrame([
        base | {"strategy": "free", "concurrency": 16, "workers": 1, "sims_per_s": 9000.0, "evals_per_s": 0.0,
                "mean_batch": math.nan},
        base | {"strategy": "asyncio", "concurrency": 16, "workers": 1, "sims_per_s": 3000.0,
                "evals_per_s": 1000.0, "mean_batch": 10.0},
        base | {"strategy": "asyncio-pool", "concurrency": 32, "workers": 2, "sims_per_s": 5000.0,
                "evals_per_s": 2000.0, "mean_batch": 10.0},
        base | {"strategy": "asyncio-pool", "concurrency": 64, "workers": 4, "sims_per_s": 5000.0,
                "evals_per_s": 2000.0, "mean_batch": 10.0},
    ])  # fmt: skip
    calibration = {"5": {"decisions_per_round": 10.0}}
    out = derive(df, calibration, {"1": 100.0, "10": 5000.0}, cpus=2).set_index(["strategy", "concurrency"])
    free = out.loc[("free", 16), "rounds_per_min"]
    # 16 games per process: the free ceiling at 16, once per process that can run at once (2 cores)
    assert out.loc[("asyncio", 16), "search_ceiling_rpm"] == pytest.approx(free)
    assert out.loc[("asyncio-pool", 32), "search_ceiling_rpm"] == pytest.approx(2 * free)
    assert out.loc[("asyncio-pool", 64), "search_ceiling_rpm"] == pytest.approx(2 * free)  # 4 workers, 2 cores
    # each client runs its own network: twice the raw rate of one
    one = out.loc[("asyncio", 16), "inference_ceiling_rpm"]
    per_round = out.loc[("asyncio", 16), "evals_per_round"] / out.loc[("asyncio-pool", 32), "evals_per_round"]
    assert out.loc[("asyncio-pool", 32), "inference_ceiling_rpm"] == pytest.approx(2 * one * per_round)


def test_sweep_refuses_bad_flags() -> None:
    for argv in (["--strategies", "asyncio,bogus"], ["--concurrency", "0,4"], ["--concurrency", "x"],
                 ["--preset", "huge"], ["--players", "9"], ["--budget", "0"], ["--iterations", "0"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse(argv)


def _mask(*legal: list[int]) -> np.ndarray:
    m = np.zeros((len(legal), N_ACTIONS), dtype=np.bool_)
    for i, ids in enumerate(legal):
        m[i, ids] = True
    return m


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    legal = [[0, 3, 7], [BID0, BID0 + 1], [10, 11, 12, 13], [1, 2], [BID0 + 8, BID0 + 9, BID0 + 10]][:n]
    return (rng.random((n, WIDTH)) < 0.05).astype(np.float32), _mask(*legal)


def test_thread_batcher_answers_each_request_as_a_direct_forward_would() -> None:
    model = make_net("tiny", seed=0)
    x, legal = _rows(5)
    tb = ThreadBatcher(model, fill=1, timeout=0.01)
    priors, values = drive(tb.evaluate_many(x, legal))
    want_p, want_v = DirectEvaluator(model).run_rows(x, legal)
    assert priors.shape == (5, N_ACTIONS) and values.shape == (5, N_VALUES) and (priors[~legal] == 0).all()
    np.testing.assert_allclose(priors, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    assert tb.sizes == [5]  # one request filled the batch: one forward pass of its 5 rows


def test_row_by_row_runs_a_forward_pass_per_row_with_the_batched_answers() -> None:
    model = make_net("tiny", seed=0)
    calls: list[int] = []
    model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    x, legal = _rows(5)
    priors, values = drive(RowByRow(model, yield_each=False).evaluate_many(x, legal))
    assert calls == [1] * 5
    want_p, want_v = DirectEvaluator(model).run_rows(x, legal)
    assert priors.shape == (5, N_ACTIONS) and values.shape == (5, N_VALUES)
    np.testing.assert_allclose(priors, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)


def test_drive_refuses_an_evaluator_that_suspends() -> None:
    search = Search(FreeEvaluator(), SearchConfig(dets=1, sims=2, leaves=1))
    player = SyncPlayer(search, np.random.default_rng(0), GameConfig(players=[4], cards=[3]))
    with pytest.raises(RuntimeError, match="suspended"):
        player.play_round(lambda: False)


def test_sync_player_searches_the_real_choices_of_whole_rounds() -> None:
    torch.manual_seed(0)
    ev = RowByRow(make_net("tiny", seed=0), yield_each=False)
    search = Search(ev, SearchConfig(dets=1, sims=4, leaves=2))
    player = SyncPlayer(search, np.random.default_rng(0), GameConfig(players=[4], cards=[2]))
    seen = []
    player.play_round(lambda: False, lambda: seen.append(player.decisions))
    assert player.rounds == 1 and seen == list(range(1, player.decisions + 1))
    assert 4 <= player.decisions <= 8  # 4 bids and 8 cards: the bids and some of the first trick searched
    assert search.simulations == 4 * player.decisions
    player.play_round(lambda: True)  # told to stop before its first decision: not a round
    assert player.rounds == 1 and len(seen) == player.decisions


def test_timed_passes_answers_through_and_times_them_while_active() -> None:
    ev = Timed(FreeEvaluator(0.25))
    x = np.zeros((2, WIDTH), dtype=np.float32)
    priors, values = asyncio.run(ev.evaluate_many(x, _mask([1, 2], [5, 6, 7, 8])))
    want = np.zeros((2, N_ACTIONS), dtype=np.float32)
    want[0, [1, 2]], want[1, [5, 6, 7, 8]] = 0.5, 0.25
    assert priors.dtype == np.float32 and np.array_equal(priors, want)  # uniform over the legal ids, 0 elsewhere
    assert values.dtype == np.float32 and values.tolist() == [[0.25] * N_VALUES, [0.25] * N_VALUES]
    assert ev.seconds == []  # not timed until started
    ev.start()
    asyncio.run(ev.evaluate_many(x, _mask([1, 2], [3, 4])))
    assert len(ev.stop()) == 1 and ev.seconds[0] >= 0 and not ev.active


def test_rate_is_the_slope_through_bursty_counters() -> None:
    t = np.arange(0, 10, 0.1)
    bursts = 1000 * np.floor(t)  # +1000 once a second
    assert rate([(a, b) for a, b in zip(t, bursts)], 1) == pytest.approx(1000, rel=0.05)


def test_op_profile_times_every_node_of_the_onnx_graph_and_rates_its_products() -> None:
    model = make_net("tiny", seed=0)
    nodes = op_profile(model, 64, seconds=0.05)
    products = {n.name.removeprefix("fused ") for n in nodes if n.gflops is not None}
    assert products == {"b0.fc1", "b0.fc2", "logits", "value1", "value2"}  # tiny: one block
    assert all(("Gemm" in n.op) == (n.gflops is not None) for n in nodes)
    assert {"LayerNormalization", "Relu", "Add"} <= {n.op for n in nodes}  # the sigmoid is fused into value2
    assert all(n.us_per_row > 0 for n in nodes) and all(n.gflops > 0 for n in nodes if n.gflops is not None)
    assert [n.us_per_row for n in nodes] == sorted((n.us_per_row for n in nodes), reverse=True)


def test_forward_engines_ops_prints_one_json_object_last(capsys: pytest.CaptureFixture[str]) -> None:
    forward_engines_main(["--ops", "--preset", "tiny", "--batches", "16,32", "--seconds", "0.05", "--json"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["preset"] == "tiny" and set(last["ops"]) == {"16", "32"}
    assert all(v["plain_gflops"] > 0 and v["nodes"] for v in last["ops"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the check itself would run")
def test_gpu_check_exits_cleanly_without_a_gpu() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "no GPU: nothing to check" in proc.stdout


def test_gpu_check_dry_run_on_the_cpu_checks_parity_and_keeps_to_its_budget(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--preset", "tiny"]
    cmd += ["--engines", "1", "--concurrency", "8"]
    proc = subprocess.run(
        [*cmd, "--budget", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (md,) = tmp_path.glob("*.md")
    text = md.read_text()
    assert text.count("| ok |") == 4 and "FAIL" not in text  # the network twice, the batcher twice
    assert "Skipped (time budget): 1 engines sharing the server: out of time; 8 games, max_inflight=2" in text


def test_gpu_check_dry_run_measures_engine_processes_sharing_one_server(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--preset", "tiny", "--dtype", "float32"]
    cmd += ["--engines", "2", "--games-per-engine", "4", "--warmup", "0.5", "--window", "1", "--concurrency", "8"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (js,) = tmp_path.glob("*.json")
    result = json.loads(js.read_text())
    assert result["meta"]["dtype"] == "float32" and not result["skipped"]
    (served,) = result["served"]
    assert (served["engines"], served["games"], served["error"]) == (2, 8, "")
    assert served["rounds_per_min"] > 0 and served["mean_batch"] >= 1
    assert [r["max_inflight"] for r in result["throughput"]] == [2, 1]


def test_think_time_times_the_searched_decisions_alone() -> None:
    class Slow:
        """Takes 2 ms over every decision; counts what it is asked and what has a choice."""

        def __init__(self) -> None:
            self.asked = self.choices = 0

        def act(self, view: View) -> int:
            raise AssertionError("the bench awaits aact")

        async def aact(self, view: View) -> int:
            legal = view.legal_or_raise()
            self.asked += 1
            self.choices += len(legal) > 1
            await asyncio.sleep(0.002)
            return legal[0]

    p = Slow()
    times = asyncio.run(decision_times(p, players=4, cards=3, rounds=3, seed=0))
    assert p.asked == 3 * 4 * 4  # every decision of three rounds asked (4 bids and 12 cards a round)
    assert len(times) == p.choices < p.asked  # the forced ones (a seat's last card at least) not timed
    assert min(times) >= 0.002


def test_think_time_reports_every_player_and_refuses_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    rows = asyncio.run(measure(["random", "heuristic"], players=4, cards=3, rounds=2, warmup=1, repeats=2, seed=0))
    assert [r["spec"] for r in rows] == ["random", "heuristic"]
    for r in rows:
        assert len(r["runs_ms"]) == 2 and r["ms"] == pytest.approx(sum(r["runs_ms"]) / 2, abs=2e-3)
        assert r["ms"] > 0 and r["decisions"] > 0
    with pytest.raises(SystemExit) as e:
        think_main(["heuristic", "nonsense:sims=3"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err


def test_a_player_among_random_bots_scores_the_same_however_many_tables_run_at_once() -> None:
    one, many = (run_loop(player_among_random("heuristic", rounds=12, players=3, cards=3, seed=1, tables=n))
                 for n in (1, 12))  # fmt: skip
    assert one.shape == (12,) and np.array_equal(one, many) and one.max() > 0


def test_ismcts_bound_measures_the_seat_blind_and_seeing_and_names_bad_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--rounds", "4", "--sims", "20,30", "--c", "10", "--players", "3", "--cards", "3", "--json",
            "--player", "ismcts:sims=20", "--player", "random"]  # fmt: skip
    assert bound_main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ways = [(r.get("sims"), r["way"]) for r in report["results"]]
    assert ways == [(n, w) for n in (20, 30) for w in ("blind", "sees bids", "sees plays", "sees all")] + [
        (None, "player"), (None, "player")]  # fmt: skip
    assert all(0 <= r["mean"] <= 13 for r in report["results"])  # 10 + bid at most, bids up to 3
    assert [r["player"] for r in report["results"][-2:]] == ["ismcts:sims=20", "random"]
    for argv, message in [(["--sims", "0"], "at least 1"), (["--c", "-1"], "c=-1.0: give a finite"),
                          (["--rounds", "1", "--players", "9"], "players"),
                          (["--rounds", "1", "--sims", "5", "--player", "nonsense:x=1"], "nonsense")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            bound_main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
