"""A training run in the page: the status file the trainer's Status writes, the run directory read
as a snapshot, and the snapshots pushed as server-sent events when the run's files change."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from blobnet.status import STATUS_FILE, Status
from clients.train import METRIC_FIELDS
from clients.web import WebConfig, WebServer, make_app
from clients.web.runwatch import RunWatch


def write_metrics(run: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    (run / "metrics.csv").write_text(buf.getvalue())


def row(it: int, **extra: Any) -> dict[str, Any]:
    return {"iteration": it, "policy_loss": 1.0 / it, "value_loss": 0.1, "rounds_per_min": 3000 + it,
            "avg_batch": 400, "elo": 10.0 * it, "promoted": it % 2, **extra}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "tiny-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"iterations": 4}}))
    arena = {"vs_heuristic_diff": 0.5, "vs_heuristic_lo": 0.1, "vs_heuristic_hi": 0.9,
             "vs_best_diff": -0.2, "vs_best_lo": -0.6, "vs_best_hi": 0.2}  # fmt: skip
    write_metrics(run, [row(1, **arena), row(2, **{k: v + 1 for k, v in arena.items()})])
    return run


def test_status_writes_iteration_phase_progress_and_eta_to_its_file_even_when_silent(tmp_path: Path):
    path = tmp_path / STATUS_FILE
    status = Status(enabled=False, path=path)
    status.phase(1, 3, "self-play", 0, 100)
    first = json.loads(path.read_text())
    assert first | {"updated": 0} == {"iteration": 1, "iterations": 3, "phase": "self-play", "done": 0, "total": 100,
                                      "elapsed_s": first["elapsed_s"], "eta_s": None, "updated": 0}  # fmt: skip
    status.phase(1, 3, "self-play", 50, 100)  # within a second of the last write, same phase: not rewritten
    assert json.loads(path.read_text())["done"] == 0
    status.phase(1, 3, "learn", 5, 10)  # a new phase is written at once
    assert json.loads(path.read_text())["phase"] == "learn"
    status.phase(2, 3, "self-play", 0, 100)  # one iteration done: an ETA for the two left
    assert json.loads(path.read_text())["eta_s"] is not None
    status.line("iter 1: fine")
    status.done("trained 3 iterations")
    last = json.loads(path.read_text())
    assert last["phase"] == "done" and last["line"] == "trained 3 iterations" and last["iteration"] == 2


def test_a_snapshot_holds_the_curves_and_the_last_iterations_arena(run_dir: Path):
    (run_dir / STATUS_FILE).write_text(json.dumps({"iteration": 3, "phase": "learn", "done": 5, "total": 10}))
    snap = RunWatch(run_dir).snapshot()
    assert snap.run == "tiny-run" and snap.iterations == 4 and snap.status is not None
    assert snap.status["phase"] == "learn"
    assert snap.metrics["iteration"] == [1.0, 2.0] and snap.metrics["policy_loss"] == [1.0, 0.5]
    assert snap.metrics["vs_random_diff"] == [None, None]  # a column the run left empty
    assert [(a.opponent, a.diff, a.lo, a.hi) for a in snap.arena] == [
        ("heuristic", 1.5, 1.1, 1.9),
        ("best", 0.8, 0.4, 1.2),
    ]
    assert snap.promoted is False and snap.final is None


def test_a_run_not_started_yet_reads_as_empty(tmp_path: Path):
    snap = RunWatch(tmp_path).snapshot()
    assert snap.status is None and snap.metrics == {} and snap.arena == [] and snap.iterations is None
    (tmp_path / STATUS_FILE).write_text('{"iteration": 1, "pha')  # caught while being written by hand
    assert RunWatch(tmp_path).snapshot().status is None


def test_the_run_is_served_and_pushed_again_whenever_its_files_change(run_dir: Path):
    async def go() -> None:
        client = TestClient(TestServer(make_app(WebServer(WebConfig(run=run_dir, poll_s=0.02)))))
        await client.start_server()
        try:
            assert (await (await client.get("/api/config")).json())["run"] is True
            response = await client.get("/api/run")
            assert response.status == 200 and (await response.json())["metrics"]["elo"] == [10.0, 20.0]
            events = await client.get("/api/run/events")
            assert events.headers["Content-Type"] == "text/event-stream"

            async def next_event() -> dict[str, Any]:
                while True:
                    line = (await asyncio.wait_for(events.content.readline(), 5)).decode()
                    if line.startswith("data: "):
                        return json.loads(line[6:])

            assert (await next_event())["status"] is None
            (run_dir / STATUS_FILE).write_text(json.dumps({"iteration": 3, "phase": "arena", "done": 0, "total": 1}))
            assert (await next_event())["status"]["phase"] == "arena"
            write_metrics(run_dir, [row(1), row(2), row(3)])
            assert (await next_event())["metrics"]["iteration"] == [1.0, 2.0, 3.0]
            events.close()
        finally:
            await client.close()

    asyncio.run(go())
