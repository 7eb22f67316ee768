"""The socket front and the remote evaluator: round trips, bad frames, disconnects, shutdown, fuzz."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_batcher import Echo, W, check, expected, mask, one, row  # pytest puts tests/ on sys.path

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.checkpoint import save_checkpoint
from blobnet.encode import WIDTH
from blobnet.net import make_net
from clients.remote import RemoteEvaluator
from servers import Batcher, EvaluationError, Evaluator, EvaluatorClosed
from servers.socket import Server
from servers.wire import Error, Hello, Message, Reply, Request, as_bytes, encode_frame, pack_legal

DECODER: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Message)  # type: ignore[arg-type]
ENCODER = msgspec.msgpack.Encoder()
ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def serving(
    model: torch.nn.Module, kind: str = "unix", max_batch: int = 1024, engine: str = "eager", sparse: bool = False,
    **kw: Any,
) -> AsyncIterator[tuple[Batcher, str]]:  # fmt: skip
    """An in-process server on a fresh address; yields (its batcher, its address)."""
    with tempfile.TemporaryDirectory() as tmp:
        batcher = Batcher(model, max_batch=max_batch, engine=engine, sparse=sparse)
        server = Server(batcher, f"unix:{tmp}/s.sock" if kind == "unix" else "tcp:127.0.0.1:0", **kw)
        address = await server.start()
        try:
            yield batcher, address
        finally:
            await server.aclose()
            await batcher.aclose()


async def raw_connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        head = await reader.readexactly(4)
        return DECODER.decode(await reader.readexactly(int.from_bytes(head, "big")))
    except asyncio.IncompleteReadError:
        return None


def request(ids: list[int], rows: np.ndarray, legal: list[list[int]]) -> bytearray:
    """A Request frame of ``rows`` and the packed masks of ``legal``'s lists of ids."""
    return encode_frame(ENCODER, Request(ids, as_bytes(rows), pack_legal(mask(*legal))))


async def expect_error_then_close(reader: asyncio.StreamReader, match: str) -> None:
    assert isinstance(await read_frame(reader), Hello)
    msg = await read_frame(reader)
    assert isinstance(msg, Error) and match in msg.message, msg
    assert await read_frame(reader) is None  # the server closed this connection


def test_remote_evaluator_is_an_evaluator() -> None:
    async def main() -> None:
        async with serving(Echo()) as (_, address):
            remote = await RemoteEvaluator.connect(address)
            assert (remote.width, remote.n_actions, remote.n_values) == (W, N_ACTIONS, N_VALUES)  # the greeting's
            ev: Evaluator = remote  # mypy checks the protocol here; the call checks the answer
            check(await one(ev, row(2), [4, 9]), expected(row(2), [4, 9]))
            await ev.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_remote_results_equal_in_process_results(kind: str) -> None:
    net = make_net("tiny", seed=0)
    rng = np.random.default_rng(0)
    rows = (rng.random((40, WIDTH)) < 0.05).astype(np.float32)
    legals = [sorted(rng.choice(N_ACTIONS, size=int(rng.integers(1, 15)), replace=False).tolist()) for _ in range(40)]

    async def main() -> None:
        async with asyncio.timeout(20), serving(net, kind) as (local, address):
            remote = await RemoteEvaluator.connect(address, max_rows=16)  # 40 rows: three frames
            got = await asyncio.gather(*(one(remote, rows[i], legals[i]) for i in range(40)))
            want = await asyncio.gather(*(one(local, rows[i], legals[i]) for i in range(40)))
            for (p1, v1), (p2, v2), leg in zip(got, want, legals, strict=True):
                assert p1.shape == (N_ACTIONS,) and p1.dtype == np.float32 and v1.dtype == np.float32
                assert np.allclose(p1, p2, atol=1e-6) and np.allclose(v1, v2, atol=1e-6)
                assert (np.delete(p1, leg) == 0).all()  # exactly 0 at the illegal ids
            # Waves, as the search sends them: 40 rows over frames of 16, and a second request alongside.
            legal = mask(*legals)
            many, other = await asyncio.gather(
                remote.evaluate_many(rows, legal), remote.evaluate_many(rows[:3], legal[:3])
            )
            local_many = await local.evaluate_many(rows, legal)
            assert np.allclose(many[0], local_many[0], atol=1e-6) and np.allclose(many[1], local_many[1], atol=1e-6)
            assert many[0].shape == (40, N_ACTIONS) and many[1].shape == (40, N_VALUES)
            assert np.allclose(other[0], local_many[0][:3], atol=1e-6)
            bad = rows[:2].copy()
            bad[0, 0] = np.nan
            with pytest.raises(ValueError, match="row 0"):
                await remote.evaluate_many(bad, legal[:2])
            stats = await remote.stats(reset=True)
            bad_sent = 2 if remote.transport == "socket" else 0  # a ring client refuses them before sending
            assert stats["rows"] == 80 + 80 + 3 + bad_sent and (await remote.stats())["rows"] == 0
            await remote.aclose()

    asyncio.run(main())


def test_remote_requesters_get_their_own_rows_back() -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (_, address):
            remote = await RemoteEvaluator.connect(address, max_rows=7)

            async def requester(i: int) -> None:
                r = row(i)
                for k in range(4):
                    r[1] = k / 8
                    legal = [1, 2, 3 + i % 60]
                    check(await one(remote, r, legal), expected(row(i, k / 8), legal))

            async with asyncio.TaskGroup() as tg:
                for i in range(50):
                    tg.create_task(requester(i))
            await remote.aclose()

    asyncio.run(main())


def test_a_frame_leaves_early_only_while_the_server_has_none_of_the_clients_rows() -> None:
    """Eight requests of 4 rows in one loop iteration, eager_rows 10: the first three (12 rows) leave
    at once, the server having nothing of this client's; the other 20 rows wait for the iteration's
    end, although they pass 10, because those 12 are then being computed."""
    rows = np.stack([row(i) for i in range(32)])
    legal = mask(*[[1, 2 + i] for i in range(32)])

    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (_, address):
            remote = await RemoteEvaluator.connect(address, eager_rows=10)
            frames: list[int] = []
            write = remote._write

            def spy(msg: Message) -> None:
                if isinstance(msg, Request):
                    frames.append(len(msg.ids))
                write(msg)

            remote._write = spy  # type: ignore[method-assign]
            requests = (remote.evaluate_many(rows[i : i + 4], legal[i : i + 4]) for i in range(0, 32, 4))
            got = await asyncio.gather(*requests)
            assert frames == [12, 20]
            for j, (p, v) in enumerate(got):
                for i in range(4):
                    check((p[i], v[i]), expected(rows[4 * j + i], [1, 2 + 4 * j + i]))
            await remote.aclose()

    asyncio.run(main())
    with pytest.raises(ValueError, match="eager_rows=0"):
        asyncio.run(RemoteEvaluator.connect("unix:/nonexistent", eager_rows=0))


def test_a_frame_the_server_splits_over_batches_comes_back_whole_and_in_order() -> None:
    rng = np.random.default_rng(8)
    feats = rng.random((20, W)).astype(np.float32)
    legal = [sorted(rng.choice(N_ACTIONS, size=int(rng.integers(1, 9)), replace=False).tolist()) for _ in range(20)]
    model = Echo()

    async def main() -> None:
        async with asyncio.timeout(20), serving(model, max_batch=7) as (_, address):
            remote = await RemoteEvaluator.connect(address)
            priors, values = await remote.evaluate_many(feats, mask(*legal))  # one frame, three batches
            assert sorted(model.calls) == [6, 7, 7]
            assert priors.shape == (20, N_ACTIONS) and values.shape == (20, N_VALUES)
            for i in range(20):
                check((priors[i], values[i]), expected(feats[i], legal[i]))
            await remote.aclose()

    asyncio.run(main())


def test_bad_rows_and_failed_batches_reach_only_their_remote_waiters() -> None:
    model = Echo()

    async def main() -> None:
        async with asyncio.timeout(20), serving(model) as (_, address):
            remote = await RemoteEvaluator.connect(address)
            nan = row(1)
            nan[3] = np.nan
            out = await asyncio.gather(
                one(remote, row(0), [1]), one(remote, nan, [1]), one(remote, row(2), []),
                one(remote, row(3), [4]), return_exceptions=True,
            )  # fmt: skip
            check(out[0], expected(row(0), [1]))  # type: ignore[arg-type]
            check(out[3], expected(row(3), [4]))  # type: ignore[arg-type]
            assert isinstance(out[1], ValueError) and "row 0: features hold NaN" in str(out[1])
            assert isinstance(out[2], ValueError) and "row 0: legal holds no legal id" in str(out[2])
            with pytest.raises(ValueError, match=f"expected a \\(k, {W}\\) float32 array"):
                await one(remote, np.zeros(W + 2, dtype=np.float32), [1])
            r, m = row(5).reshape(1, W), mask([6])
            odd_masks: list[Any] = [m.astype(np.int64), m.astype(np.float32), m[:, :-1], [[6]], m]
            odd = await asyncio.gather(*(remote.evaluate_many(r, om) for om in odd_masks), return_exceptions=True)
            check((odd[4][0][0], odd[4][1][0]), expected(row(5), [6]))  # type: ignore[index]
            assert all(isinstance(e, ValueError) and f"(1, {N_ACTIONS}) bool array" in str(e) for e in odd[:4]), odd
            model.fail_next = True
            failed = await asyncio.gather(*(one(remote, row(i), [1]) for i in range(3)), return_exceptions=True)
            assert all(isinstance(f, EvaluationError) and "boom" in str(f) for f in failed)
            check(await one(remote, row(5), [1]), expected(row(5), [1]))
            await remote.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x00\x00\x03abc", "malformed"),  # not msgpack of any message
        (encode_frame(ENCODER, Error("a client may not send this")), "unexpected"),
        (b"\x00\x00\x00\x10" + b"\x01" * 8, "truncated"),  # the stream ends inside the frame
        (b"\x7f\xff\xff\xff", "over the limit"),  # oversized: refused from its length alone
        (request([1, 2], np.zeros((2, W)), [[1]]), "malformed request"),  # 2 ids, 1 legal mask
        (encode_frame(ENCODER, Request([1], as_bytes(np.zeros((1, W))), [[1]])), "malformed frame"),  # type: ignore[arg-type]  # ids, not a mask
        (request([1], np.zeros((1, W + 1)), [[1]]), "malformed request"),  # wrong number of feature bytes
        (request([], np.zeros((0, W)), []), "no rows"),
    ],
)
def test_a_bad_frame_gets_an_error_and_closes_only_its_connection(payload: bytes, match: str) -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo(), max_frame=1 << 20) as (_, address):
            good = await RemoteEvaluator.connect(address)
            reader, writer = await raw_connect(address)
            writer.write(payload)
            writer.write_eof()
            await expect_error_then_close(reader, match)
            writer.close()
            check(await one(good, row(3), [5]), expected(row(3), [5]))
            await good.aclose()

    asyncio.run(main())


def test_a_client_that_leaves_with_rows_pending_loses_only_its_own() -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (batcher, address):
            other = await RemoteEvaluator.connect(address)
            reader, writer = await raw_connect(address)
            assert isinstance(await read_frame(reader), Hello)
            writer.write(request(list(range(5)), np.stack([row(i) for i in range(5)]), [[1]] * 5))
            writer.close()  # gone before its replies
            await writer.wait_closed()
            check(await one(other, row(8), [2]), expected(row(8), [2]))
            while batcher.stats()["rows"] < 6:  # the leaver's rows ran too; their replies were dropped
                await asyncio.sleep(0.01)
            check(await one(other, row(9), [2]), expected(row(9), [2]))
            await other.aclose()

    asyncio.run(main())


def test_a_half_closed_client_still_gets_its_replies() -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (_, address):
            reader, writer = await raw_connect(address)
            assert isinstance(await read_frame(reader), Hello)
            writer.write(request([7, 8], np.stack([row(1), row(2)]), [[3], [3, 4]]))
            writer.write_eof()
            reply = await read_frame(reader)
            assert isinstance(reply, Reply) and reply.ids == [7, 8] and not reply.err and not reply.fail
            assert np.allclose(np.frombuffer(reply.v, "<f4").reshape(2, N_VALUES)[:, 0], [1.0, 2.0])
            priors = np.frombuffer(reply.p, "<f4").reshape(2, N_ACTIONS)  # every id's prior, 0 where illegal
            assert priors[0, 3] == 1.0 and np.allclose(priors[1], expected(row(2), [3, 4])[0], atol=1e-6)
            assert await read_frame(reader) is None
            writer.close()

    asyncio.run(main())


def test_a_cancelled_remote_waiter_does_not_disturb_its_frame() -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (_, address):
            remote = await RemoteEvaluator.connect(address)
            tasks = [asyncio.create_task(one(remote, row(i), [2, 5])) for i in range(6)]
            await asyncio.sleep(0)  # every task has put its row in the frame; it is not sent yet
            tasks[2].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(done[2], asyncio.CancelledError)
            for i in (0, 1, 3, 4, 5):
                check(done[i], expected(row(i), [2, 5]))  # type: ignore[arg-type]
            check(await one(remote, row(7), [1]), expected(row(7), [1]))
            await remote.aclose()

    asyncio.run(main())


def test_closing_the_remote_evaluator_fails_its_waiters_and_later_calls() -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo()) as (_, address):
            remote = await RemoteEvaluator.connect(address)
            pending = asyncio.ensure_future(one(remote, row(1), [1]))
            await asyncio.sleep(0)  # submitted; its frame is not sent yet
            await remote.aclose()
            with pytest.raises(EvaluatorClosed):
                await pending
            with pytest.raises(EvaluatorClosed):
                await one(remote, row(1), [1])

    asyncio.run(main())


def _start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers", "--preset", "tiny", "--seed", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("serving on "), (line, proc.stderr.read() if proc.stderr else "")
    return proc, line.split("serving on ", 1)[1].strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_shuts_the_server_subprocess_down_cleanly(sig: signal.Signals) -> None:
    """SIGTERM: a fresh network over TCP. SIGINT: a checkpoint's network over a Unix socket."""
    with tempfile.TemporaryDirectory() as tmp:
        if sig == signal.SIGTERM:
            net = make_net("tiny", seed=0)
            proc, address = _start_server("--listen", listen := "tcp:127.0.0.1:0")
        else:
            net = make_net("tiny", seed=3)
            save_checkpoint(f"{tmp}/c.pt", preset="tiny", model=net.state_dict())
            proc, address = _start_server("--listen", listen := f"unix:{tmp}/s.sock", "--checkpoint", f"{tmp}/c.pt")
        try:
            r = (np.random.default_rng(5).random(WIDTH) < 0.05).astype(np.float32)

            async def main() -> None:
                async with asyncio.timeout(20):
                    remote = await RemoteEvaluator.connect(address)
                    local = Batcher(net)
                    got, want = await one(remote, r, [52, 53, 54]), await one(local, r, [52, 53, 54])
                    assert np.allclose(got[0], want[0], atol=1e-6) and np.allclose(got[1], want[1], atol=1e-6)
                    proc.send_signal(sig)
                    assert await asyncio.to_thread(proc.wait, 20) == 0
                    with pytest.raises(EvaluatorClosed):  # the connection went with the server
                        await one(remote, r, [52])
                    await remote.aclose()
                    await local.aclose()

            asyncio.run(main())
            if listen.startswith("unix:"):
                assert not os.path.exists(listen[5:])  # the socket file went too
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
_request_like = st.builds(
    lambda ids, x, legal: ["req", ids, x, legal],
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    st.binary(max_size=3 * W * 4),
    st.binary(max_size=3 * 9 + 2) | st.lists(st.lists(st.integers(-(2**63), 2**64 - 1), max_size=4), max_size=3),
)
_garbage = st.one_of(
    st.binary(max_size=200),  # any bytes at all
    st.builds(lambda obj: bytes(encode_frame(ENCODER, obj)), _json),  # well-framed msgpack of anything
    st.builds(lambda obj: bytes(encode_frame(ENCODER, obj)), _request_like),  # request-shaped, wrong inside
    st.builds(lambda n, data: n.to_bytes(4, "big") + data, st.integers(0, 2**32 - 1), st.binary(max_size=64)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_garbage)
def test_fuzzed_bytes_never_stop_the_server_answering(payload: bytes) -> None:
    async def main() -> None:
        async with asyncio.timeout(20), serving(Echo(), max_frame=1 << 16) as (_, address):
            reader, writer = await raw_connect(address)
            writer.write(payload)
            writer.write_eof()
            while await read_frame(reader) is not None:  # whatever it says, the server ends this connection
                pass
            writer.close()
            remote = await RemoteEvaluator.connect(address)
            check(await one(remote, row(2), [0, N_ACTIONS - 1]), expected(row(2), [0, N_ACTIONS - 1]))
            await remote.aclose()

    asyncio.run(main())


def test_a_stale_socket_file_is_replaced_but_a_live_server_is_not() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/s.sock"
            dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            dead.bind(path)  # a socket file nobody listens on, as a killed server leaves it
            dead.close()
            batcher = Batcher(Echo())
            server = Server(batcher, f"unix:{path}")
            await server.start()
            with pytest.raises(OSError, match="in use"):
                await Server(batcher, f"unix:{path}").start()
            remote = await RemoteEvaluator.connect(f"unix:{path}")
            check(await one(remote, row(1), [3]), expected(row(1), [3]))
            await remote.aclose()
            await server.aclose()
            await batcher.aclose()
            assert not os.path.exists(path)

    asyncio.run(main())


def test_the_server_picks_an_engine_for_its_dtype_and_names_settings_that_do_not_go_together() -> None:
    """bf16 without --engine: eager, the engine that runs it (onnx, the float32 default, does not)."""
    proc, address = _start_server("--listen", "tcp:127.0.0.1:0", "--dtype", "bf16")
    try:
        r = (np.random.default_rng(5).random(WIDTH) < 0.05).astype(np.float32)

        async def main() -> None:
            async with asyncio.timeout(20):
                remote = await RemoteEvaluator.connect(address)
                local = Batcher(make_net("tiny", seed=0))
                got, want = await one(remote, r, [52, 53, 54]), await one(local, r, [52, 53, 54])
                assert np.allclose(got[0], want[0], atol=5e-2) and np.allclose(got[1], want[1], atol=5e-2)
                await remote.aclose()
                await local.aclose()

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    for args, message in [
        (["--dtype", "fp64"], "dtype 'fp64': use one of bf16"),
        (["--dtype", "bf16", "--engine", "onnx"], "engine onnx runs float32 only"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "servers", "--preset", "tiny", "--listen", "tcp:127.0.0.1:0", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
