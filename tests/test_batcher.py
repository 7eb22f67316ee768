"""The in-process batcher: the flush rule, splitting, ordering, faults, cancellation, weight changes."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.encode import WIDTH
from blobnet.net import make_net
from servers import Batcher, EvaluationError, Evaluator, EvaluatorClosed, RowsResult

W = 16  # feature width of the echo model


class Echo(nn.Module):
    """A model whose answers say which row they came from: values[:, j] = scale * x[:, 0] + j and
    logits[:, a] = x[:, 1] * a / 10. Records every batch size; can fail or block its next forward."""

    width = W
    n_actions = N_ACTIONS
    n_values = N_VALUES

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[int] = []
        self.fail_next = False
        self.gate: threading.Event | None = None  # thread mode: hold the forward until set

    def forward(self, x: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(x.shape[0])
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        logits = (x[:, 1:2] * torch.arange(N_ACTIONS) / 10).masked_fill(~legal, -1e9)
        values = self.scale * x[:, :1] + torch.arange(N_VALUES)
        return logits, values


def expected(row: np.ndarray, legal: Sequence[int], scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Echo's answer for one row: the prior of each id in ``legal`` (in order; the softmax runs over
    the distinct ids), and the row's values."""
    ids = sorted({int(a) for a in legal})
    z = [float(row[1]) * a / 10 for a in ids]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    p = {a: v / sum(e) for a, v in zip(ids, e, strict=True)}
    return [p[int(a)] for a in legal], [scale * float(row[0]) + j for j in range(N_VALUES)]


def row(i: float, j: float = 0.5) -> np.ndarray:
    r = np.zeros(W, dtype=np.float32)
    r[0], r[1] = i, j
    return r


async def one(ev: Evaluator, features: Any, legal: Sequence[int]) -> tuple[list[float], list[float]]:
    """One row through ``evaluate_many``: (the priors of its legal ids, its values)."""
    features = features.reshape(1, -1) if isinstance(features, np.ndarray) else features
    priors, values = await ev.evaluate_many(features, [legal])
    return priors, values[0]


def check(result: tuple[list[float], list[float]], want: tuple[list[float], list[float]]) -> None:
    priors, values = result
    assert len(priors) == len(want[0]) and len(values) == N_VALUES
    assert all(type(p) is float for p in priors) and all(type(v) is float for v in values)
    assert np.allclose(priors, want[0], atol=1e-6)
    assert np.allclose(values, want[1], atol=1e-5)


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


def test_batcher_is_an_evaluator() -> None:
    async def main() -> None:
        ev: Evaluator = Batcher(Echo())  # mypy checks the protocol here; the call checks the answer
        check(await one(ev, row(2), [4, 9]), expected(row(2), [4, 9]))
        await ev.aclose()

    run(main)


def test_every_waiting_requester_lands_in_one_batch() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model)
        n, rounds = 37, 4

        async def requester(i: int) -> None:
            r = row(i)
            for k in range(rounds):
                r[1] = k / 4  # the caller reuses its row: the batcher must have copied it
                check(await one(b, r, [3, 7, 52]), expected(row(i, k / 4), [3, 7, 52]))

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(requester(i))
        s = b.stats()
        await b.aclose()
        assert model.calls == [n] * rounds
        assert s["batches"] == rounds and s["rows"] == n * rounds and s["p50_batch"] == n

    run(main)


def test_max_batch_splits_a_round_into_full_batches_then_the_rest() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model, max_batch=4, mode="inline")
        results = await asyncio.gather(*(one(b, row(i), [i % N_ACTIONS]) for i in range(10)))
        for i, res in enumerate(results):
            check(res, expected(row(i), [i % N_ACTIONS]))
        await b.aclose()

    run(main)
    assert model.calls == [4, 4, 2]


@pytest.mark.parametrize("mode", ["auto", "inline", "thread"])
def test_results_go_back_to_their_own_requesters_under_concurrency(mode: str) -> None:
    rng = np.random.default_rng(0)

    async def main() -> None:
        b = Batcher(Echo(), max_batch=64, mode=mode)

        async def requester(i: int) -> None:
            r = np.zeros(W, dtype=np.float32)
            for _ in range(5):
                r[:] = rng.random(W)
                legal = sorted(rng.choice(N_ACTIONS, size=int(rng.integers(1, 20)), replace=False).tolist())
                want = expected(r.copy(), legal)
                await asyncio.sleep(0) if rng.random() < 0.3 else None  # stagger the requesters
                check(await one(b, r, legal), want)

        async with asyncio.TaskGroup() as tg:
            for i in range(300):
                tg.create_task(requester(i))
        await b.aclose()

    run(main)


def test_auto_mode_computes_full_batches_on_a_thread_and_the_rest_in_line() -> None:
    """A batch that fills while requesters still run overlaps with them on a worker thread; the
    batch flushed because everyone waits runs on the loop's thread (nothing else could run)."""

    class Where(Echo):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[tuple[int, str]] = []

        def forward(self, x: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.threads.append((x.shape[0], threading.current_thread().name))
            return super().forward(x, legal)

    model = Where()

    async def main() -> None:
        b = Batcher(model, max_batch=4)  # mode "auto" is the default
        results = await asyncio.gather(*(one(b, row(i), [i % N_ACTIONS]) for i in range(10)))
        for i, res in enumerate(results):
            check(res, expected(row(i), [i % N_ACTIONS]))
        await b.aclose()

    run(main)
    # The first full batch goes to the thread; the second, full while the thread is busy, runs in
    # line (both cores on forward passes); the last two rows wait for everyone: in line.
    main_thread = threading.main_thread().name
    assert sorted(model.threads) == sorted([(4, "batcher-forward-0"), (4, main_thread), (2, main_thread)])


def test_blobnet_through_the_batcher_matches_its_direct_forward() -> None:
    net = make_net("small", seed=0)
    rng = np.random.default_rng(1)
    rows = (rng.random((20, WIDTH)) < 0.05).astype(np.float32)
    legals = [sorted(rng.choice(N_ACTIONS, size=5, replace=False).tolist()) for _ in range(20)]

    async def main() -> tuple[list[float], list[list[float]]]:
        b = Batcher(net)
        out = await b.evaluate_many(rows, legals)
        await b.aclose()
        return out

    priors, values = run(main)
    mask = torch.zeros((20, N_ACTIONS), dtype=torch.bool)
    for i, leg in enumerate(legals):
        mask[i, leg] = True
    with torch.inference_mode():
        logits, want_values = net(torch.from_numpy(rows), mask)
    probs = torch.softmax(logits, dim=1)
    want_priors = [float(probs[i, a]) for i, leg in enumerate(legals) for a in leg]
    assert np.allclose(priors, want_priors, atol=1e-6) and np.allclose(values, want_values.numpy(), atol=1e-6)
    for i in range(20):  # the legal ids hold all the probability
        assert abs(sum(priors[5 * i : 5 * i + 5]) - 1) < 1e-5


def test_a_failing_forward_fails_its_batch_and_the_next_batch_succeeds() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model)
        model.fail_next = True
        results = await asyncio.gather(*(one(b, row(i), [1]) for i in range(5)), return_exceptions=True)
        for r in results:
            assert isinstance(r, EvaluationError)
            assert isinstance(r.__cause__, RuntimeError) and "boom" in str(r.__cause__)
        later = await asyncio.gather(*(one(b, row(i), [1]) for i in range(5)))
        for i, res in enumerate(later):
            check(res, expected(row(i), [1]))
        assert b.stats()["failed_batches"] == 1
        await b.aclose()

    run(main)


@pytest.mark.parametrize("mode", ["auto", "inline", "thread"])
def test_a_cancelled_waiter_does_not_disturb_its_batch(mode: str) -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model, mode=mode)
        tasks = [asyncio.create_task(one(b, row(i), [2, 5])) for i in range(8)]
        await asyncio.sleep(0)  # every task has submitted; the flush has not run yet
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        for i, res in enumerate(done):
            if i != 3:
                check(res, expected(row(i), [2, 5]))  # type: ignore[arg-type]
        assert model.calls == [8]
        await b.aclose()

    run(main)


def test_cancelling_while_the_batch_is_in_flight_leaves_the_others_their_results() -> None:
    model = Echo()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, mode="thread")
        tasks = [asyncio.create_task(one(b, row(i), [9])) for i in range(6)]
        while not model.calls:  # the batch is in the worker's forward pass
            await asyncio.sleep(0.001)
        tasks[0].cancel()
        tasks[5].cancel()
        await asyncio.sleep(0.01)
        assert model.gate is not None
        model.gate.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError) and isinstance(done[5], asyncio.CancelledError)
        for i in range(1, 5):
            check(done[i], expected(row(i), [9]))  # type: ignore[arg-type]
        await b.aclose()

    run(main)


def test_new_weights_apply_between_batches_never_inside_one() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model)
        first = await asyncio.gather(*(one(b, row(i), [0]) for i in range(4)))
        assert [r[1][0] for r in first] == [0.0, 1.0, 2.0, 3.0]
        # Half the batch submits, the weights change, the other half submits: one batch, one set of weights.
        half = [asyncio.create_task(one(b, row(i), [0])) for i in range(4)]
        await asyncio.sleep(0)  # the four have submitted; their flush runs after this coroutine yields
        b.set_weights({"scale": torch.tensor(2.0)})
        rest: list[float] = []
        b.submit_rows(np.stack([row(i) for i in range(4, 8)]), [[0]] * 4, lambda r: rest.extend(r.values[:, 0]))  # type: ignore[index]
        second = await asyncio.gather(*half)
        assert model.calls == [4, 8]
        assert [r[1][0] for r in second] + rest == [2.0 * i for i in range(8)]
        assert (await one(b, row(5), [0]))[1][0] == 10.0  # the new weights stay
        with pytest.raises(ValueError, match="missing"):
            b.set_weights({})
        with pytest.raises(ValueError, match="shape"):
            b.set_weights({"scale": torch.ones(2)})
        await b.aclose()

    run(main)


def test_weights_set_while_a_batch_is_in_flight_wait_for_it() -> None:
    model = Echo()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, mode="thread", max_inflight=2, max_batch=2)
        old = [asyncio.create_task(one(b, row(i), [0])) for i in range(2)]
        while not model.calls:
            await asyncio.sleep(0.001)
        b.set_weights({"scale": torch.tensor(3.0)})
        new = [asyncio.create_task(one(b, row(i), [0])) for i in range(2)]
        await asyncio.sleep(0.02)
        assert model.calls == [2]  # the second batch waits: the weights may not change under the first
        assert model.gate is not None
        model.gate.set()
        assert [r[1][0] for r in await asyncio.gather(*old)] == [0.0, 1.0]
        assert [r[1][0] for r in await asyncio.gather(*new)] == [0.0, 3.0]
        await b.aclose()

    run(main)


def test_bad_rows_fail_only_their_own_requesters() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model)
        nan = row(1)
        nan[4] = np.nan
        inf = row(2)
        inf[7] = np.inf
        calls = [
            one(b, row(0), [1]),
            one(b, nan, [1]),
            one(b, inf, [1]),
            one(b, np.zeros(W + 1, dtype=np.float32), [1]),  # wrong width
            one(b, row(4), []),  # nothing legal
            one(b, row(5), [3, N_ACTIONS]),  # id out of range
            one(b, row(6), [-1]),
            one(b, row(7), [2.5]),  # type: ignore[list-item]
            one(b, [[0.0] * W], [1]),  # not an array
            one(b, row(9), [4]),
        ]
        out = await asyncio.gather(*calls, return_exceptions=True)
        check(out[0], expected(row(0), [1]))  # type: ignore[arg-type]
        check(out[9], expected(row(9), [4]))  # type: ignore[arg-type]
        for i in range(1, 9):
            assert isinstance(out[i], ValueError), (i, out[i])
        assert "NaN or inf" in str(out[1]) and "NaN or inf" in str(out[2])
        assert "shape" in str(out[3]) and "empty" in str(out[4]) and "shape" in str(out[8])
        assert all(f"0..{N_ACTIONS - 1}" in str(out[i]) for i in (5, 6, 7))
        assert model.calls == [7]  # the rows refused at submit never reached the batch
        assert b.stats()["failed_rows"] == 5
        await b.aclose()

    run(main)


def test_aclose_fails_pending_waiters_and_later_submits() -> None:
    async def main() -> None:
        b = Batcher(Echo())
        check(await one(b, row(1), [0]), expected(row(1), [0]))
        pending = [asyncio.create_task(one(b, row(i), [0])) for i in range(3)]
        await asyncio.sleep(0)  # submitted, not yet flushed
        done: list[RowsResult] = []
        b.submit_rows(np.stack([row(4)]), [[0]], done.append)  # into the same batch
        await b.aclose()
        for t in pending:
            with pytest.raises(EvaluatorClosed):
                await t
        assert len(done) == 1 and isinstance(done[0].error, EvaluatorClosed) and done[0].probs is None
        with pytest.raises(EvaluatorClosed):
            await one(b, row(1), [0])
        with pytest.raises(EvaluatorClosed):
            b.submit_rows(np.stack([row(1)]), [[0]], done.append)
        await b.aclose()  # idempotent

    run(main)


def test_aclose_lets_the_batch_in_flight_finish() -> None:
    model = Echo()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, mode="thread")
        t = asyncio.create_task(one(b, row(4), [0]))
        while not model.calls:
            await asyncio.sleep(0.001)
        closing = asyncio.create_task(b.aclose())
        await asyncio.sleep(0.01)
        assert not closing.done()
        assert model.gate is not None
        model.gate.set()
        await closing
        check(await t, expected(row(4), [0]))

    run(main)


def test_submit_rows_spans_batches_and_reports_bad_rows_alone() -> None:
    rng = np.random.default_rng(2)
    feats = rng.random((10, W)).astype(np.float32)
    feats[6, 3] = np.nan
    legal = [[int(a) for a in rng.choice(N_ACTIONS, size=3, replace=False)] for _ in range(10)]

    async def main() -> None:
        b = Batcher(Echo(), max_batch=4)
        parts: list[RowsResult] = []

        def keep(r: RowsResult) -> None:  # the arrays are only valid during the callback
            assert r.probs is not None and r.values is not None
            parts.append(RowsResult(r.start, r.count, r.probs.copy(), r.values.copy(), r.row_errors, r.error))

        b.submit_rows(feats, legal, keep)
        while sum(p.count for p in parts) < 10:
            await asyncio.sleep(0)
        # One callback per batch; a full batch may finish on the worker thread after a later one.
        assert sorted((p.start, p.count) for p in parts) == [(0, 4), (4, 4), (8, 2)]
        for p in parts:
            assert p.error is None and p.probs is not None and p.values is not None
            off = 0
            for j in range(p.count):
                i = p.start + j
                if i == 6:
                    assert "NaN" in p.row_errors[6]
                else:
                    want = expected(feats[i], legal[i])
                    assert np.allclose(p.probs[off : off + 3], want[0], atol=1e-6)
                    assert np.allclose(p.values[j], want[1], atol=1e-5)
                off += 3
        await b.aclose()

    run(main)


def test_evaluate_many_answers_flat_priors_in_row_order_across_batches() -> None:
    rng = np.random.default_rng(4)
    feats = rng.random((9, W)).astype(np.float32)
    legal = [
        sorted(int(a) for a in rng.choice(N_ACTIONS, size=int(rng.integers(1, 6)), replace=False)) for _ in range(9)
    ]
    model = Echo()

    async def main() -> None:
        b = Batcher(model, max_batch=4, mode="inline")
        buf = feats.copy()
        task = asyncio.ensure_future(b.evaluate_many(buf, legal))
        await asyncio.sleep(0)
        buf[:] = 0  # the caller reuses its rows at once: they were copied
        priors, values = await task
        want_p = [p for i in range(9) for p in expected(feats[i], legal[i])[0]]
        assert len(priors) == sum(map(len, legal)) and all(type(p) is float for p in priors)
        assert np.allclose(priors, want_p, atol=1e-6)
        assert np.allclose(values, [expected(feats[i], legal[i])[1] for i in range(9)], atol=1e-5)
        assert model.calls == [4, 4, 1]
        bad = feats[:2].copy()
        bad[1, 0] = np.inf
        with pytest.raises(ValueError, match="row 1"):
            await b.evaluate_many(bad, legal[:2])
        with pytest.raises(ValueError, match="empty"):
            await b.evaluate_many(feats[:2], [[1], []])
        with pytest.raises(ValueError, match="shape"):
            await b.evaluate_many(feats[:3], legal[:2])
        assert await b.evaluate_many(feats[:0], []) == ([], [])
        await b.aclose()

    run(main)


def test_max_wait_gathers_rows_submitted_in_different_loop_iterations() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model, max_wait=0.05)
        got: list[int] = []
        b.submit_rows(np.stack([row(0)]), [[1]], lambda r: got.append(r.count))
        await asyncio.sleep(0.001)
        b.submit_rows(np.stack([row(1), row(2)]), [[1], [2]], lambda r: got.append(r.count))
        while sum(got) < 3:
            await asyncio.sleep(0.01)
        assert model.calls == [3]
        await b.aclose()

    run(main)


def test_stats_count_batches_and_sizes() -> None:
    async def main() -> None:
        b = Batcher(Echo(), max_batch=8)
        for n in (1, 3, 8, 8):
            await asyncio.gather(*(one(b, row(i), [0]) for i in range(n)))
        s = b.stats()
        assert (s["batches"], s["rows"], s["mean_batch"]) == (4, 20, 5.0)
        assert (s["p50_batch"], s["p99_batch"], s["max_batch"]) == (3, 8, 8)
        assert s["histogram"] == {"1": 1, "2-3": 1, "4-7": 0, "8": 2}
        assert s["forward_total_s"] > 0 and 0 <= s["device_idle_fraction"] <= 1
        b.reset_stats()
        assert b.stats()["batches"] == 0
        await b.aclose()

    run(main)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_batcher_answers_close_to_fp32(dtype: str) -> None:
    net = make_net("tiny", seed=0)
    rng = np.random.default_rng(3)
    rows = (rng.random((6, WIDTH)) < 0.05).astype(np.float32)

    async def main(d: str | None) -> tuple[list[float], list[list[float]]]:
        b = Batcher(make_net("tiny", seed=0) if d else net, dtype=d)
        out = await b.evaluate_many(rows, [[1, 2, 60]] * 6)
        await b.aclose()
        return out

    p1, v1 = asyncio.run(main(None))
    p2, v2 = asyncio.run(main(dtype))
    assert np.allclose(p1, p2, atol=0.05) and np.allclose(v1, v2, atol=0.05)
    assert not np.allclose(p1, p2, atol=1e-7)  # the half-precision pass did run in half precision


def test_constructor_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        Batcher(Echo(), mode="fork")
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Echo(), max_batch=0)
    with pytest.raises(ValueError, match="dtype"):
        Batcher(Echo(), dtype="int8")
    with pytest.raises(ValueError, match="width"):
        Batcher(nn.Linear(3, 3))


def test_odd_legal_ids_fail_only_their_requester() -> None:
    async def main() -> None:
        b = Batcher(Echo())
        out = await asyncio.gather(
            one(b, row(0), [np.int64(3), True]),  # type: ignore[list-item]
            one(b, row(1), ["x"]),  # type: ignore[list-item]
            one(b, row(2), [2**70]),
            one(b, row(3), np.array([5, 6])),  # type: ignore[arg-type]
            one(b, row(4), ["3"]),  # type: ignore[list-item]
            return_exceptions=True,
        )
        check(out[0], expected(row(0), [3, 1]))  # type: ignore[arg-type]
        check(out[3], expected(row(3), [5, 6]))  # type: ignore[arg-type]
        assert all(isinstance(e, ValueError) for e in (out[1], out[2], out[4])), out
        await b.aclose()

    run(main)


@pytest.mark.parametrize("mode", ["auto", "inline", "thread"])
def test_waves_spanning_batches_keep_flowing_with_every_launch_slot_busy(mode: str) -> None:
    """Requests split over a full batch and the open one, while both launch slots are busy: the open
    batch's flush, deferred then, must still happen once a slot frees (no requester left waiting)."""
    model = Echo()
    rng = np.random.default_rng(6)

    async def main() -> None:
        b = Batcher(model, mode=mode, max_batch=5, max_inflight=2)

        async def requester(i: int) -> None:
            rows = np.zeros((3, W), dtype=np.float32)
            for k in range(20):
                rows[:, 0] = [i, k, -i]
                legal = [[int(rng.integers(N_ACTIONS))] for _ in range(3)]
                priors, values = await b.evaluate_many(rows, legal)
                assert priors == [1.0, 1.0, 1.0] and [v[0] for v in values] == [i, k, -i]

        async with asyncio.timeout(30):
            async with asyncio.TaskGroup() as tg:
                for i in range(7):
                    tg.create_task(requester(i))
        assert sum(model.calls) == 7 * 20 * 3 and max(model.calls) == 5
        await b.aclose()

    run(main)


def test_an_open_batch_deferred_while_slots_are_busy_is_launched_after_the_full_ones() -> None:
    model = Echo()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, mode="thread", max_batch=2, max_inflight=2)
        done: list[int] = []
        b.submit_rows(np.stack([row(i) for i in range(5)]), [[0]] * 5, lambda r: done.append(r.count))
        while len(model.calls) < 2:  # two full batches held in the workers; the third (1 row) waits, due
            await asyncio.sleep(0.001)
        b.submit_rows(np.stack([row(i) for i in range(4)]), [[0]] * 4, lambda r: done.append(r.count))
        await asyncio.sleep(0.01)  # two more full batches ready, and an open one whose flush is deferred
        assert model.gate is not None
        model.gate.set()
        async with asyncio.timeout(10):
            while sum(done) < 9:
                await asyncio.sleep(0.001)
        assert sorted(model.calls) == [1, 2, 2, 2, 2]
        await b.aclose()

    run(main)
