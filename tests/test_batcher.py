"""The in-process batcher: the flush rule, splitting, ordering, cancellation, weight changes.
Its faults (failed passes, bad rows and arrays, shutdown) are in test_batcher_errors.py."""

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
from servers import Batcher, Evaluator, RowsResult

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


def mask(*legal: Sequence[int]) -> np.ndarray:
    """The (len(legal), N_ACTIONS) bool mask of rows of legal ids."""
    m = np.zeros((len(legal), N_ACTIONS), dtype=np.bool_)
    for i, ids in enumerate(legal):
        m[i, list(ids)] = True
    return m


def expected(row: np.ndarray, legal: Sequence[int], scale: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """Echo's answer for one row: its priors (N_ACTIONS,), the softmax over the ids in ``legal`` and
    exactly 0 elsewhere, and its values."""
    ids = sorted({int(a) for a in legal})
    z = [float(row[1]) * a / 10 for a in ids]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    priors = np.zeros(N_ACTIONS)
    priors[ids] = [v / sum(e) for v in e]
    return priors, [scale * float(row[0]) + j for j in range(N_VALUES)]


def row(i: float, j: float = 0.5) -> np.ndarray:
    r = np.zeros(W, dtype=np.float32)
    r[0], r[1] = i, j
    return r


async def one(ev: Evaluator, features: Any, legal: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One row through ``evaluate_many``: (its priors (N_ACTIONS,), its values (N_VALUES,))."""
    features = features.reshape(1, -1) if isinstance(features, np.ndarray) else features
    priors, values = await ev.evaluate_many(features, mask(legal))
    assert priors.shape == (1, N_ACTIONS) and values.shape == (1, N_VALUES)
    return priors[0], values[0]


def check(result: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, list[float]]) -> None:
    priors, values = result
    assert priors.shape == (N_ACTIONS,) and values.shape == (N_VALUES,)
    assert priors.dtype == np.float32 and values.dtype == np.float32
    assert np.allclose(priors, want[0], atol=1e-6)
    assert (priors[want[0] == 0] == 0).all()  # exactly 0 at the illegal ids
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
    legal = mask(*(rng.choice(N_ACTIONS, size=5, replace=False).tolist() for _ in range(20)))

    async def main() -> tuple[np.ndarray, np.ndarray]:
        b = Batcher(net)
        out = await b.evaluate_many(rows, legal)
        await b.aclose()
        return out

    priors, values = run(main)
    with torch.inference_mode():
        logits, want_values = net(torch.from_numpy(rows), torch.from_numpy(legal))
    want_priors = torch.softmax(logits, dim=1).numpy()
    assert priors.shape == (20, N_ACTIONS) and values.shape == (20, N_VALUES)
    assert np.allclose(priors, want_priors, atol=1e-6) and np.allclose(values, want_values.numpy(), atol=1e-6)
    assert (priors[~legal] == 0).all()  # the legal ids hold all the probability
    assert np.allclose(priors.sum(axis=1), 1, atol=1e-5)


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
        b.submit_rows(np.stack([row(i) for i in range(4, 8)]), mask(*[[0]] * 4), lambda r: rest.extend(r.values[:, 0]))  # type: ignore[index]
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


def test_submit_rows_spans_batches_and_reports_bad_rows_alone() -> None:
    rng = np.random.default_rng(2)
    feats = rng.random((10, W)).astype(np.float32)
    feats[6, 3] = np.nan
    legal = [[int(a) for a in rng.choice(N_ACTIONS, size=3, replace=False)] for _ in range(10)]

    async def main() -> None:
        b = Batcher(Echo(), max_batch=4)
        parts: list[RowsResult] = []
        buf, m = feats.copy(), mask(*legal)
        b.submit_rows(buf, m, parts.append)  # the arrays are the batch's own: they may be kept
        buf[:] = 0  # copied at submit: the caller may reuse its arrays at once
        m[:] = False
        while sum(p.count for p in parts) < 10:
            await asyncio.sleep(0)
        # One callback per batch; a full batch may finish on the worker thread after a later one.
        assert sorted((p.start, p.count) for p in parts) == [(0, 4), (4, 4), (8, 2)]
        for p in parts:
            assert p.error is None and p.priors is not None and p.values is not None
            assert p.priors.shape == (p.count, N_ACTIONS) and p.values.shape == (p.count, N_VALUES)
            for j in range(p.count):
                i = p.start + j
                if i == 6:
                    assert "NaN" in p.row_errors[6]
                else:
                    check((p.priors[j], p.values[j]), expected(feats[i], legal[i]))
        await b.aclose()

    run(main)


def test_evaluate_many_answers_its_rows_in_order_across_batches() -> None:
    rng = np.random.default_rng(4)
    feats = rng.random((9, W)).astype(np.float32)
    legal = [
        sorted(int(a) for a in rng.choice(N_ACTIONS, size=int(rng.integers(1, 6)), replace=False)) for _ in range(9)
    ]
    model = Echo()

    async def main() -> None:
        b = Batcher(model, max_batch=4, mode="inline")
        buf, m = feats.copy(), mask(*legal)
        task = asyncio.ensure_future(b.evaluate_many(buf, m))
        await asyncio.sleep(0)
        buf[:] = 0  # the caller reuses its rows and masks at once: they were copied
        m[:] = False
        priors, values = await task
        assert priors.shape == (9, N_ACTIONS) and priors.dtype == np.float32
        assert values.shape == (9, N_VALUES) and values.dtype == np.float32
        for i in range(9):
            check((priors[i], values[i]), expected(feats[i], legal[i]))
        assert model.calls == [4, 4, 1]
        bad = feats[:2].copy()
        bad[1, 0] = np.inf
        with pytest.raises(ValueError, match="row 1"):
            await b.evaluate_many(bad, mask(*legal[:2]))
        with pytest.raises(ValueError, match="row 1: legal holds no legal id"):
            await b.evaluate_many(feats[:2], mask([1], []))
        with pytest.raises(ValueError, match=r"expected a \(3, 70\) bool array"):
            await b.evaluate_many(feats[:3], mask(*legal[:2]))
        none = await b.evaluate_many(feats[:0], mask())
        assert none[0].shape == (0, N_ACTIONS) and none[1].shape == (0, N_VALUES)
        await b.aclose()

    run(main)


def test_max_wait_gathers_rows_submitted_in_different_loop_iterations() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model, max_wait=0.05)
        got: list[int] = []
        b.submit_rows(np.stack([row(0)]), mask([1]), lambda r: got.append(r.count))
        await asyncio.sleep(0.001)
        b.submit_rows(np.stack([row(1), row(2)]), mask([1], [2]), lambda r: got.append(r.count))
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
        assert (s["batches"], s["rows"], s["mean_batch"]) == (4, 20, 5.0) and b.counts() == (4, 20)
        assert (s["p50_batch"], s["p99_batch"], s["max_batch"]) == (3, 8, 8)
        assert s["histogram"] == {"1": 1, "2-3": 1, "4-7": 0, "8": 2}
        assert s["forward_total_s"] > 0 and 0 <= s["device_idle_fraction"] <= 1
        b.reset_stats()
        assert b.stats()["batches"] == 0 and b.counts() == (0, 0)
        await b.aclose()

    run(main)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_batcher_answers_close_to_fp32(dtype: str) -> None:
    net = make_net("tiny", seed=0)
    rng = np.random.default_rng(3)
    rows = (rng.random((6, WIDTH)) < 0.05).astype(np.float32)

    async def main(d: str | None) -> tuple[np.ndarray, np.ndarray]:
        b = Batcher(make_net("tiny", seed=0) if d else net, dtype=d)
        out = await b.evaluate_many(rows, mask(*[[1, 2, 60]] * 6))
        await b.aclose()
        return out

    p1, v1 = asyncio.run(main(None))
    p2, v2 = asyncio.run(main(dtype))
    assert np.allclose(p1, p2, atol=0.05) and np.allclose(v1, v2, atol=0.05)
    assert not np.allclose(p1, p2, atol=1e-7)  # the half-precision pass did run in half precision
    assert p2.dtype == np.float32 and (p2[:, [0, 3, 69]] == 0).all()  # float32 out, illegal ids still 0


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
                priors, values = await b.evaluate_many(rows, mask(*legal))
                assert [priors[r, ids[0]] for r, ids in enumerate(legal)] == [1.0, 1.0, 1.0]
                assert (priors.sum(axis=1) == 1.0).all() and values[:, 0].tolist() == [i, k, -i]

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
        b.submit_rows(np.stack([row(i) for i in range(5)]), mask(*[[0]] * 5), lambda r: done.append(r.count))
        while len(model.calls) < 2:  # two full batches held in the workers; the third (1 row) waits, due
            await asyncio.sleep(0.001)
        b.submit_rows(np.stack([row(i) for i in range(4)]), mask(*[[0]] * 4), lambda r: done.append(r.count))
        await asyncio.sleep(0.01)  # two more full batches ready, and an open one whose flush is deferred
        assert model.gate is not None
        model.gate.set()
        async with asyncio.timeout(10):
            while sum(done) < 9:
                await asyncio.sleep(0.001)
        assert sorted(model.calls) == [1, 2, 2, 2, 2]
        await b.aclose()

    run(main)
