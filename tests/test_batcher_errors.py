"""The in-process batcher's faults: failed forward passes, bad rows and bad arrays, shutdown, settings,
and answers that stay the caller's."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from test_batcher import Echo, W, check, expected, mask, one, row, run  # pytest puts tests/ on sys.path
from torch import nn

from blobnet.cards import N_ACTIONS, N_VALUES
from servers import Batcher, EvaluationError, EvaluatorClosed, RowsResult


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
            one(b, row(5).astype(np.float64), [3]),  # wrong dtype
            one(b, [[0.0] * W], [1]),  # not an array
            one(b, row(9), [4]),
        ]
        out = await asyncio.gather(*calls, return_exceptions=True)
        check(out[0], expected(row(0), [1]))  # type: ignore[arg-type]
        check(out[7], expected(row(9), [4]))  # type: ignore[arg-type]
        for i in range(1, 7):
            assert isinstance(out[i], ValueError), (i, out[i])
        assert "row 0: features hold NaN or inf" in str(out[1]) and "NaN or inf" in str(out[2])
        assert all(f"expected a (k, {W}) float32 array" in str(out[i]) for i in (3, 5, 6))
        assert "row 0: legal holds no legal id" in str(out[4])
        assert model.calls == [5]  # the requests refused at submit never reached the batch
        assert b.stats()["failed_rows"] == 3
        await b.aclose()

    run(main)


def test_a_bad_row_fails_its_whole_request_and_names_the_row() -> None:
    model = Echo()

    async def main() -> None:
        b = Batcher(model)
        rows = np.stack([row(i) for i in range(4)])
        rows[2, 5] = np.inf
        good = asyncio.ensure_future(b.evaluate_many(np.stack([row(7)]), mask([2])))
        with pytest.raises(ValueError, match=r"row 1: legal holds no legal id.*; row 2: features hold NaN or inf"):
            await b.evaluate_many(rows, mask([1], [], [1], [1]))
        priors, values = await good
        check((priors[0], values[0]), expected(row(7), [2]))
        assert model.calls == [5]  # one batch: the bad rows were neutralised, not dropped
        await b.aclose()

    run(main)


def test_odd_legal_arrays_fail_only_their_requester() -> None:
    async def main() -> None:
        b = Batcher(Echo())
        r = row(1).reshape(1, W)
        m = mask([3])
        out = await asyncio.gather(
            b.evaluate_many(r, m),
            b.evaluate_many(r, m.astype(np.int64)),  # ids as 0/1 ints, not bools
            b.evaluate_many(r, m.astype(np.float32)),
            b.evaluate_many(r, np.zeros((1, N_ACTIONS + 1), dtype=np.bool_)),  # one id too many
            b.evaluate_many(r, np.zeros((2, N_ACTIONS), dtype=np.bool_)),  # a mask row too many
            b.evaluate_many(r, [[3]]),  # type: ignore[arg-type]  # the old protocol's legal lists
            b.evaluate_many(r, m[0]),  # one dimension
            b.evaluate_many(r, np.asfortranarray(np.repeat(m, 1, axis=0))),  # any layout will do
            return_exceptions=True,
        )
        for good in (out[0], out[7]):
            check((good[0][0], good[1][0]), expected(row(1), [3]))  # type: ignore[index]
        for e in out[1:7]:
            assert isinstance(e, ValueError) and f"expected a (1, {N_ACTIONS}) bool array" in str(e), e
        await b.aclose()

    run(main)


def test_answers_stay_the_callers_after_later_batches() -> None:
    """No aliasing: a later batch (reusing the staging buffers) never writes into earlier answers."""

    async def main() -> None:
        b = Batcher(Echo(), max_batch=4, mode="inline")
        first = await asyncio.gather(*(b.evaluate_many(np.stack([row(i)]), mask([i])) for i in range(3)))
        kept = [(p.copy(), v.copy()) for p, v in first]
        for i in range(8):
            await asyncio.gather(*(b.evaluate_many(np.stack([row(10 + i + j, 0.1)]), mask([5, 6])) for j in range(4)))
        for (p, v), (p0, v0) in zip(first, kept, strict=True):
            assert np.array_equal(p, p0) and np.array_equal(v, v0)
        first[0][0][:] = 7.0  # the caller may write into its answers: nobody else sees them
        assert np.array_equal(first[1][0], kept[1][0])
        await b.aclose()

    run(main)


def test_aclose_fails_pending_waiters_and_later_submits() -> None:
    async def main() -> None:
        b = Batcher(Echo())
        check(await one(b, row(1), [0]), expected(row(1), [0]))
        pending = [asyncio.create_task(one(b, row(i), [0])) for i in range(3)]
        await asyncio.sleep(0)  # submitted, not yet flushed
        done: list[RowsResult] = []
        b.submit_rows(np.stack([row(4)]), mask([0]), done.append)  # into the same batch
        await b.aclose()
        for t in pending:
            with pytest.raises(EvaluatorClosed):
                await t
        assert len(done) == 1 and isinstance(done[0].error, EvaluatorClosed) and done[0].priors is None
        with pytest.raises(EvaluatorClosed):
            await one(b, row(1), [0])
        with pytest.raises(EvaluatorClosed):
            b.submit_rows(np.stack([row(1)]), mask([0]), done.append)
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


def test_constructor_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        Batcher(Echo(), mode="fork")
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Echo(), max_batch=0)
    with pytest.raises(ValueError, match="dtype"):
        Batcher(Echo(), dtype="int8")
    with pytest.raises(ValueError, match="width"):
        Batcher(nn.Linear(3, 3))


def test_values_come_back_as_float32_rows_of_n_values() -> None:
    async def main() -> None:
        b = Batcher(Echo())
        priors, values = await b.evaluate_many(np.stack([row(2), row(3)]), mask([1], [1, 2]))
        assert values.shape == (2, N_VALUES) and values.dtype == np.float32 and priors.dtype == np.float32
        assert values[:, 0].tolist() == [2.0, 3.0]
        await b.aclose()

    run(main)
