"""The shared-memory transport: packed rows, the ring, its notices, and what happens when a side fails."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_features import game_rounds, rounds  # pytest puts tests/ on sys.path
from test_socket import ENCODER, raw_connect, read_frame, serving

from blobnet.cards import N_ACTIONS
from blobnet.compact import SCALAR_AT, SCALAR_COLS, PackedRows, pack_rows, unpack_rows
from blobnet.encode import WIDTH, encode_rounds
from blobnet.net import make_engine, make_net
from blobnet.rules import Round
from blobnet.stem import nonzero_packed, nonzero_rows
from clients.pool import RemoteSpec, build_evaluator
from clients.remote import RemoteEvaluator
from servers import Batcher, EvaluatorClosed, RowsResult
from servers.backends import unpack_torch
from servers.batch import Batch, Slot, check_rows
from servers.shm import SHM_DIR, Ring
from servers.socket import Server
from servers.wire import Done, Error, Hello, Message, Rows, ShmAsk, ShmAttached, ShmOffer, encode_frame

ROOT = Path(__file__).resolve().parents[1]
NET = make_net("tiny", seed=0)


def rings_of(pid: int) -> list[str]:
    """Ring files a process has left under /dev/shm."""
    return sorted(p.name for p in SHM_DIR.glob(f"blobnet-{pid}-*"))


def batch_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n encoded positions of random rounds (their own legal masks): real rows, scalars included."""
    rs = []
    while len(rs) < n:
        players = int(rng.integers(3, 9))
        r = Round.deal(players=players, cards=int(rng.integers(1, 52 // players + 1)), trump=None, dealer=0, rng=rng)
        for _ in range(int(rng.integers(0, 12))):
            if r.phase == "over":
                break
            legal = r.legal_actions()
            r.play(legal[int(rng.integers(len(legal)))])
        if r.phase != "over":
            rs.append(r)
    x = np.zeros((n, WIDTH), np.float32)
    encode_rounds(rs, x)
    m = np.zeros((n, N_ACTIONS), np.bool_)
    for i, r in enumerate(rs):
        m[i, r.legal_actions()] = True
    return x, m


def answers(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NET's priors and values for rows x, m, computed here in one forward pass."""
    with torch.inference_mode():
        logits, values = NET(torch.from_numpy(x), torch.from_numpy(m))
    return torch.softmax(logits, dim=1).numpy(), values.numpy()


ROWS = batch_rows(np.random.default_rng(3), 200)
WANT = answers(*ROWS)


def roundtrip(x: np.ndarray, m: np.ndarray) -> None:
    packed = PackedRows.empty(len(x))
    pack_rows(x, m, packed)
    got_x, got_m = np.full_like(x, 7.0), np.ones_like(m)  # every column must be written
    unpack_rows(packed, got_x, got_m)
    assert np.array_equal(got_x.view(np.uint32), x.view(np.uint32)) and np.array_equal(got_m, m)
    tx, tm = unpack_torch(*(torch.from_numpy(a) for a in (packed.bits, packed.scalars, packed.legal)))
    assert np.array_equal(tx.numpy().view(np.uint32), x.view(np.uint32)) and np.array_equal(tm.numpy(), m)


@settings(max_examples=60, deadline=None)
@given(r=rounds(), g=game_rounds())
def test_packing_round_trips_exactly_for_encoded_positions(r: Round, g: list[Round]) -> None:
    """Rows from every seat of a round and of rounds inside a game (totals, schedule: the scalars)."""
    positions = [r, *g]
    x = np.zeros((sum(p.players for p in positions), WIDTH), np.float32)
    k = 0
    for p in positions:
        for seat in range(p.players):
            encode_rounds([p], x[k : k + 1], seat=seat)
            k += 1
    m = np.zeros((len(x), N_ACTIONS), np.bool_)
    m[np.arange(len(x)), np.arange(len(x)) % N_ACTIONS] = True
    roundtrip(x, m)


def test_pack_refuses_what_it_cannot_carry_naming_row_column_and_field() -> None:
    x, m = batch_rows(np.random.default_rng(0), 3)
    roundtrip(x, m)
    out = PackedRows.empty(3)
    bad = x.copy()
    bad[1, 3] = 0.5  # a card of the hand
    with pytest.raises(ValueError, match=r"row 1: feature 3 \(field 'hand'\) is 0.5"):
        pack_rows(bad, m, out)
    bad = x.copy()
    bad[2, SCALAR_COLS[0]] = np.nan
    with pytest.raises(ValueError, match=r"row 12: .*\(field 'cards'\) is nan: features must be finite"):
        pack_rows(bad, m, out, first=10)
    none = m.copy()
    none[0] = False
    with pytest.raises(ValueError, match="row 0: legal holds no legal id"):
        pack_rows(x, none, out)
    with pytest.raises(ValueError, match="at row 2 of 3 packed rows"):
        pack_rows(x, m, out, row0=2)


def test_a_batch_of_packed_rows_is_checked_and_neutralised_packed_or_unpacked_when_mixed() -> None:
    """The CUDA path's staging (a slot with packed rows), on a CPU: bad packed rows fail alone."""
    x, m = batch_rows(np.random.default_rng(1), 4)
    for mixed in (False, True):
        slot = Slot(4, WIDTH, N_ACTIONS, 8, pinned=False)
        slot.packed = PackedRows.empty(4)
        b = Batch(asyncio.new_event_loop().create_future(), slot, 0.0)
        pack_rows(x, m, slot.packed)
        slot.packed.scalars[1, 0] = np.inf
        slot.packed.legal[2] = 0
        b.n = 4
        b.packed = [(0, 4)]
        if mixed:
            b.packed = [(1, 3)]
            slot.feat[0], slot.mask[0] = x[0], m[0]
        check_rows(b)
        assert b.bad is not None and sorted(b.bad) == [1, 2], b.bad
        if mixed:
            assert b.packed == [] and np.array_equal(slot.feat[3], x[3]) and np.array_equal(slot.feat[1], 0 * x[1])
        else:
            assert b.packed == [(0, 4)] and slot.packed.legal[2].all() and not slot.packed.scalars[1].any()


def test_the_first_layer_from_packed_bits_equals_the_sparse_one_bit_for_bit() -> None:
    x, m = ROWS
    packed = PackedRows.empty(len(x))
    pack_rows(x, m, packed)
    n = len(x)
    want = (np.empty(n * WIDTH, np.int64), np.empty(n * WIDTH, np.float32), np.empty(n, np.int64))
    got = (np.empty(n * WIDTH, np.int64), np.empty(n * WIDTH, np.float32), np.empty(n, np.int64))
    k = nonzero_rows(x, *want)
    assert nonzero_packed(packed.bits, packed.scalars, SCALAR_AT, *got) == k
    assert all(np.array_equal(a[:k], b[:k]) for a, b in zip(want, got, strict=True))
    engine = make_engine("eager", make_net("small", seed=4), sparse=True)
    assert np.array_equal(engine.packed(packed, m)[0], engine(x, m)[0])


@pytest.mark.parametrize("engine, sparse", [("eager", False), ("onnx", True)])
def test_answers_through_shared_memory_equal_the_in_process_batcher(engine: str, sparse: bool) -> None:
    """A dense engine gets the rows unpacked; a sparse one reads the bits."""
    x, m = batch_rows(np.random.default_rng(2), 300)

    async def main() -> None:
        async with asyncio.timeout(30), serving(NET, max_batch=128, engine=engine, sparse=sparse) as (_, address):
            local = Batcher(NET, max_batch=128, engine=engine, sparse=sparse)
            remote = await RemoteEvaluator.connect(address, ring_rows=100, max_rows=40)
            assert (remote.transport, remote.ring_rows) == ("shm", 100)
            built = await build_evaluator(RemoteSpec(address, ring_rows=64), None)  # a pool helper's
            assert isinstance(built, RemoteEvaluator) and (built.transport, built.ring_rows) == ("shm", 64)
            await built.aclose()
            await remote.stats()  # a round trip: the server has read ShmAttached
            assert rings_of(os.getpid()) == []  # unlinked once the client had mapped it
            want = await local.evaluate_many(x, m)
            got = await remote.evaluate_many(x, m)  # 300 rows through a ring of 100: split and wrapped
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
            plain = await RemoteEvaluator.connect(address, shm=False)  # the old path stays
            assert plain.transport == "socket"
            np.testing.assert_allclose((await plain.evaluate_many(x[:5], m[:5]))[0], want[0][:5], atol=1e-6)
            bad = x[:5].copy()
            bad[3, 0] = 2.0
            with pytest.raises(ValueError, match="row 3: feature 0 .* is 2.0"):
                await remote.evaluate_many(bad, m[:5])
            bad[0, 0] = np.nan  # the first row: its frame holds nothing and goes
            with pytest.raises(ValueError, match="row 0: feature 0 .* is nan"):
                await remote.evaluate_many(bad, m[:5])
            got = await remote.evaluate_many(x[:50], m[:50])  # the ring is whole: from slot 0 again
            np.testing.assert_allclose(got[0], want[0][:50], rtol=0, atol=1e-6)
            for ev in (remote, plain, local):
                await ev.aclose()

    asyncio.run(main())
    assert rings_of(os.getpid()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.lists(st.integers(1, 70), min_size=1, max_size=6), min_size=1, max_size=3),
    ring=st.integers(8, 48),
    max_rows=st.integers(1, 32),
    eager=st.integers(1, 40),
)
def test_fuzzed_request_sizes_and_concurrent_clients_get_their_own_answers(
    sizes: list[list[int]], ring: int, max_rows: int, eager: int
) -> None:
    """Each client (one list of sizes) sends its requests at once, some larger than its ring."""
    x, m = ROWS

    async def main() -> None:
        async with asyncio.timeout(30), serving(NET, max_batch=32) as (_, address):
            clients = [
                await RemoteEvaluator.connect(address, ring_rows=ring, max_rows=max_rows, eager_rows=eager)
                for _ in sizes
            ]
            jobs, offsets = [], []
            for c, reqs in zip(clients, sizes, strict=True):
                for j, k in enumerate(reqs):
                    at = (7 * j + 13 * len(offsets)) % (len(x) - k)
                    offsets.append((at, k))
                    jobs.append(c.evaluate_many(x[at : at + k], m[at : at + k]))
            answers = await asyncio.gather(*jobs)
            for (at, k), (p, v) in zip(offsets, answers, strict=True):
                np.testing.assert_allclose(p, WANT[0][at : at + k], atol=1e-6)
                np.testing.assert_allclose(v, WANT[1][at : at + k], atol=1e-6)
            for c in clients:
                await c.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    "ask, notice, match",
    [
        (True, Rows(5, 10), r"malformed notice: rows 5 \.\. 14 of a ring of 8 rows"),
        (True, Rows(0, 0), r"malformed notice: rows 0 \.\. -1 of a ring of 8 rows"),
        (True, Rows(-1, 2), r"malformed notice: rows -1 \.\. 0 of a ring"),
        (False, Rows(0, 1), r"malformed notice: Rows before a ring was made \(send ShmAsk first\)"),
        (False, ShmAsk(0), r"malformed notice: a ring of 0 rows asked for \(1 to \d+\)"),
        (False, ShmAttached(), r"malformed notice: ShmAttached without a ring offered"),
        (True, Done(0, 1), r"unexpected message Done from a client"),
    ],
)
def test_a_malformed_notice_gets_a_clear_error_and_others_are_served(ask: bool, notice: Message, match: str) -> None:
    x, m = ROWS

    async def main() -> None:
        async with asyncio.timeout(20), serving(NET) as (_, address):
            good = await RemoteEvaluator.connect(address)
            p0, _ = await good.evaluate_many(x[:3], m[:3])
            reader, writer = await raw_connect(address)
            assert isinstance(await read_frame(reader), Hello)
            if ask:
                writer.write(encode_frame(ENCODER, ShmAsk(8)))
                offer = await read_frame(reader)
                assert isinstance(offer, ShmOffer) and Path(offer.path).exists()
            writer.write(encode_frame(ENCODER, notice))
            err = await read_frame(reader)
            assert isinstance(err, Error) and re.search(match, err.message), err
            assert await read_frame(reader) is None  # that connection, and its ring, closed
            writer.close()
            assert rings_of(os.getpid()) == []
            p, _ = await good.evaluate_many(x[:3], m[:3])  # the other client is still served
            np.testing.assert_allclose(p, p0, atol=0)
            await good.aclose()

    asyncio.run(main())


def test_a_half_closed_ring_client_gets_its_answers_then_the_connection_closes() -> None:
    """The protocol by hand: ask, map, write packed rows, announce them, stop sending, read Done."""
    x, m = ROWS

    async def main() -> None:
        async with asyncio.timeout(20), serving(NET) as (_, address):
            reader, writer = await raw_connect(address)
            hello = await read_frame(reader)
            assert isinstance(hello, Hello)
            writer.write(encode_frame(ENCODER, ShmAsk(8)))
            offer = await read_frame(reader)
            assert isinstance(offer, ShmOffer)
            ring = Ring.attach(offer.path, offer.rows, hello.n_actions, hello.n_values)
            pack_rows(x[:3], m[:3], ring.request, 5)
            for notice in (ShmAttached(), Rows(5, 3)):
                writer.write(encode_frame(ENCODER, notice))
            writer.write_eof()
            done = await read_frame(reader)
            assert done == Done(5, 3), done
            np.testing.assert_allclose(ring.priors[5:8], WANT[0][:3], atol=1e-6)
            np.testing.assert_allclose(ring.values[5:8], WANT[1][:3], atol=1e-6)
            assert await read_frame(reader) is None  # every answer given: the server closed
            assert not Path(offer.path).exists()
            ring.close()
            writer.close()

    asyncio.run(main())


def test_rows_overlapping_rows_not_yet_answered_are_refused() -> None:
    async def main() -> None:
        async with asyncio.timeout(20):
            with tempfile.TemporaryDirectory() as tmp:
                batcher = Batcher(NET, max_wait=30.0)  # the first rows wait: still unanswered
                server = Server(batcher, f"unix:{tmp}/s.sock")
                reader, writer = await raw_connect(await server.start())
                assert isinstance(await read_frame(reader), Hello)
                writer.write(encode_frame(ENCODER, ShmAsk(8)))
                assert isinstance(await read_frame(reader), ShmOffer)
                for notice in (ShmAttached(), Rows(0, 4), Rows(2, 4)):
                    writer.write(encode_frame(ENCODER, notice))
                err = await read_frame(reader)
                assert isinstance(err, Error) and "rows 2 .. 5 overlap rows not yet answered" in err.message, err
                writer.close()
                await server.aclose()
                await batcher.aclose()

    asyncio.run(main())


def test_a_killed_server_fails_waiting_clients_at_once_and_leaves_no_ring() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers", "--preset", "tiny", "--listen", f"unix:{tmp}/s.sock", "--max-wait", "60"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("serving on "), line
            address = line.split("serving on ", 1)[1].strip()
            x, m = ROWS

            async def main() -> None:
                async with asyncio.timeout(20):
                    clients = [await RemoteEvaluator.connect(address, ring_rows=16) for _ in range(2)]
                    assert all(c.transport == "shm" for c in clients)
                    # A batch held for 60 s: every request waits; the second client's is larger than its ring.
                    jobs = [asyncio.ensure_future(c.evaluate_many(x[:k], m[:k])) for c, k in zip(clients, (5, 40))]
                    await asyncio.sleep(0.3)
                    assert not any(j.done() for j in jobs)
                    os.kill(proc.pid, signal.SIGKILL)
                    for j in jobs:
                        with pytest.raises(EvaluatorClosed, match="connection to the server was lost"):
                            await j
                    with pytest.raises(EvaluatorClosed):
                        await clients[0].evaluate_many(x[:1], m[:1])
                    for c in clients:
                        await c.aclose()

            asyncio.run(main())
            proc.wait(10)
            assert rings_of(proc.pid) == []  # each was unlinked as soon as its client had mapped it
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_sparse_engines_batcher_lists_each_request_as_it_takes_it_and_answers_as_its_engine() -> None:
    """Behind a sparse engine the batcher stages the rows' nonzero entries, listed per request (and
    per packed submission), not the rows: the answers are the engine's on the same rows, requests
    split across batches included, and a bad row fails its request alone."""
    x, m = batch_rows(np.random.default_rng(5), 40)
    want_p, want_v = make_engine("onnx", NET, sparse=True)(x, m)
    packed = PackedRows.empty(len(x))
    pack_rows(x, m, packed)
    sizes = [1, 7, 3, 9, 5, 15]  # 40 rows, in batches of at most 16: some requests span two

    async def main() -> None:
        b = Batcher(NET, max_batch=16, engine="onnx", sparse=True, mode="inline")
        assert b.lists
        starts = np.cumsum([0, *sizes])
        got = await asyncio.gather(*(b.evaluate_many(x[s:e], m[s:e]) for s, e in zip(starts, starts[1:])))
        assert np.abs(np.concatenate([p for p, _ in got]) - want_p).max() < 1e-6
        assert np.abs(np.concatenate([v for _, v in got]) - want_v).max() < 1e-6
        results: list[RowsResult] = []
        b.submit_packed(packed, results.append, wait=False)
        await asyncio.sleep(0.05)
        assert sum(r.count for r in results) == len(x) and not any(r.row_errors or r.error for r in results)
        p = np.concatenate([r.priors for r in sorted(results, key=lambda r: r.start)])  # type: ignore[misc]
        assert np.abs(p - want_p).max() < 1e-6

        bad_x, bad_m = x[:4].copy(), m[:4].copy()
        bad_x[1, 0] = np.nan
        bad_m[3] = False
        good = asyncio.ensure_future(b.evaluate_many(x[4:6], m[4:6]))
        with pytest.raises(ValueError, match=r"row 1: features hold NaN or inf.*; row 3: legal holds no legal id"):
            await b.evaluate_many(bad_x, bad_m)
        assert np.abs((await good)[0] - want_p[4:6]).max() < 1e-6
        bad_packed = PackedRows(packed.bits[:3].copy(), packed.scalars[:3].copy(), packed.legal[:3].copy())
        bad_packed.scalars[0, 0] = np.inf
        bad_packed.legal[2] = 0
        results.clear()
        b.submit_packed(bad_packed, results.append, wait=False)
        await asyncio.sleep(0.05)
        assert [sorted(r.row_errors) for r in results] == [[0, 2]]
        assert np.abs(results[0].priors[1] - want_p[1]).max() < 1e-6  # type: ignore[index]
        await b.aclose()

    asyncio.run(main())
