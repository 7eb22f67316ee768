"""The network: presets, shapes, masking, value range, state_dict round trips."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
import torch

from blobnet import dnnl
from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.config import DEFAULT_PRESET, ENGINE_NAMES, PRESETS
from blobnet.encode import WIDTH, encode_rounds
from blobnet.evaluator import Evaluator, FreeEvaluator
from blobnet.net import (
    ENGINES,
    ONEDNN_CHUNK,
    ONNX_CHUNK,
    BlobNet,
    DirectEvaluator,
    count_params,
    forward_rows,
    make_engine,
    make_net,
    padded_rows,
)
from blobnet.rules import random_round
from blobnet.stem import legal_softmax


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((batch, WIDTH), generator=g) < 0.05).float()
    legal = torch.rand((batch, 70), generator=g) < 0.15
    legal[:, 0] = True  # at least one legal action per row
    return x, legal


def test_presets_are_ordered_by_size_and_small_is_the_default() -> None:
    sizes = {name: count_params(make_net(name)) for name in PRESETS}
    assert DEFAULT_PRESET == "small"
    assert sizes["tiny"] < 100_000
    assert 200_000 < sizes["small"] < 1_000_000  # a few hundred thousand: fast on two CPU cores
    assert 1_000_000 < sizes["medium"] < sizes["large"]


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="tiny"):
        make_net("huge")


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_forward_shapes_masking_and_value_range(name: str) -> None:
    net = make_net(name, seed=1)
    x, legal = _inputs(5)
    logits, values = net(x, legal)
    assert logits.shape == (5, 70) and values.shape == (5, 8)
    probs = torch.softmax(logits, dim=1)
    assert torch.all(probs[~legal] == 0.0)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5))
    assert torch.all(torch.isfinite(logits))  # illegal ids are very negative, never -inf
    assert torch.all((values >= 0) & (values <= 1))


def test_cross_entropy_against_a_legal_target_is_finite_and_trains() -> None:
    net = BlobNet("tiny")
    x, legal = _inputs(8)
    target = legal.float() / legal.float().sum(dim=1, keepdim=True)  # zero on illegal ids
    logits, values = net(x, legal)
    loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean() + ((values - 0.5) ** 2).mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.all(torch.isfinite(p.grad)) for p in net.parameters())


def test_seed_makes_weights_repeatable_without_touching_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_net("tiny", seed=7)
    after = torch.rand(1)
    b = make_net("tiny", seed=7)
    assert before == after
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_state_dict_round_trips_through_weights_only_load() -> None:
    net = make_net("small", seed=3)
    buf = io.BytesIO()
    torch.save({"preset": net.config.name, "state_dict": net.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    restored = make_net(saved["preset"])
    restored.load_state_dict(saved["state_dict"])
    x, legal = _inputs(4)
    with torch.inference_mode():
        for a, b in zip(net(x, legal), restored(x, legal), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_masks_illegal_ids(dtype: torch.dtype) -> None:
    net = make_net("tiny", seed=0).to(dtype)
    x, legal = _inputs(3)
    with torch.inference_mode():
        logits, values = net(x.to(dtype), legal)
    probs = torch.softmax(logits.float(), dim=1)
    assert torch.all(probs[~legal] == 0.0)
    assert torch.all(torch.isfinite(values.float()))


def test_padded_rows_cost_at_most_an_eighth_more_in_few_sizes() -> None:
    sizes = [padded_rows(n) for n in range(1, 4097)]
    assert all(n <= m <= n + max(7, n // 8) for n, m in enumerate(sizes, 1))
    assert len(set(sizes)) <= 64 and padded_rows(1024) == 1024


@pytest.mark.parametrize("engine", ["eager", "eager-sparse"])
@pytest.mark.parametrize("n", [1, 9, 37, 130])
def test_bf16_forward_pads_its_batch_and_answers_only_the_rows_asked(engine: str, n: int) -> None:
    net = make_net("tiny", seed=0)
    low = make_net("tiny", seed=0).to(torch.bfloat16)
    x, legal = (a.numpy() for a in _inputs(n, seed=n))
    want = make_engine("eager", net)(x, legal)
    got = make_engine("eager", low, dtype=torch.bfloat16, sparse=engine.endswith("sparse"))(x, legal)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        assert np.allclose(g, w, atol=2e-2) and not np.array_equal(g, w)
    assert (got[0][~legal] == 0).all()


@pytest.mark.parametrize("kind", ["direct", "free"])
def test_the_evaluators_here_answer_arrays_and_refuse_bad_requests(kind: str) -> None:
    net = make_net("tiny", seed=2)
    ev: Evaluator = DirectEvaluator(net) if kind == "direct" else FreeEvaluator(0.5, width=WIDTH)
    x, legal = (a.numpy() for a in _inputs(6, seed=3))
    priors, values = asyncio.run(ev.evaluate_many(x, legal))
    assert priors.shape == (6, N_ACTIONS) and values.shape == (6, N_VALUES)
    assert priors.dtype == np.float32 and values.dtype == np.float32
    assert (priors[~legal] == 0).all() and np.allclose(priors.sum(axis=1), 1, atol=1e-5)
    if kind == "direct":
        with torch.inference_mode():
            logits, want = net(torch.from_numpy(x), torch.from_numpy(legal))
        assert np.allclose(priors, torch.softmax(logits, dim=1).numpy(), atol=1e-6)
        assert np.allclose(values, want.numpy(), atol=1e-6)
    else:
        assert np.allclose(priors[legal], np.repeat(1 / legal.sum(axis=1), legal.sum(axis=1)))
        assert (values == 0.5).all()
    bad_x, bad_legal = x.copy(), legal.copy()
    bad_x[1, 2] = np.inf
    bad_legal[4] = False
    with pytest.raises(ValueError, match="row 1: features hold NaN or inf.*row 4: legal holds no legal id"):
        asyncio.run(ev.evaluate_many(bad_x, bad_legal))
    with pytest.raises(ValueError, match=rf"expected a \(6, {N_ACTIONS}\) bool array"):
        asyncio.run(ev.evaluate_many(x, legal.astype(np.int8)))
    with pytest.raises(ValueError, match=rf"expected a \(k, {WIDTH}\) float32 array"):
        asyncio.run(ev.evaluate_many(x.astype(np.float64), legal))


def _encoded_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows of real positions: every seat's view of random rounds, bids and plays."""
    rows, masks = [], []
    rng = np.random.default_rng(0)
    for seed in range(40):
        players = 3 + seed % 6
        r = random_round(players, int(rng.integers(1, 52 // players + 1)), rng)
        for _ in range(int(rng.integers(0, 12))):
            if r.to_play is None:
                break
            r.play(int(rng.choice(r.legal_actions())))
        if r.to_play is None:
            continue
        row = np.zeros((1, WIDTH), np.float32)
        encode_rounds([r], row)
        mask = np.zeros(N_ACTIONS, np.bool_)
        mask[r.legal_actions()] = True
        rows.append(row[0])
        masks.append(mask)
    return np.stack(rows), np.stack(masks)


def test_the_sparse_first_layer_equals_the_dense_one() -> None:
    net = make_net("small", seed=3)
    x, legal = _encoded_rows()
    engine = make_engine("eager", net, sparse=True)
    dense = torch.nn.functional.linear(torch.from_numpy(x), net.stem.weight, net.stem.bias).detach().numpy()
    assert np.abs(engine.first_layer(x) - dense).max() < 1e-5
    x2 = x.copy()
    x2[:, 7] += 0.25  # not only one-hots: any value of any entry counts
    dense2 = torch.nn.functional.linear(torch.from_numpy(x2), net.stem.weight, net.stem.bias).detach().numpy()
    assert np.abs(engine.first_layer(x2) - dense2).max() < 1e-5


def test_the_softmax_over_legal_ids_is_torchs_masked_softmax() -> None:
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((64, N_ACTIONS)) * np.array([1.0, 30.0, 1e4, 1e-3])[rng.integers(0, 4, 64), None]
    logits = logits.astype(np.float32)
    legal = rng.random((64, N_ACTIONS)) < 0.1
    legal[0] = False
    legal[0, 3] = True  # one legal id
    legal[1] = True  # every id
    legal[2:, 0] |= ~legal[2:].any(axis=1)  # at least one each
    legal[-1] = False  # but the last: none
    want = torch.softmax(torch.from_numpy(logits).masked_fill(~torch.from_numpy(legal), float("-inf")), dim=1).numpy()
    got = np.full_like(logits, np.nan)
    legal_softmax(logits, legal, got)
    assert np.abs(got[:-1] - want[:-1]).max() < 1e-6
    assert (got[~legal] == 0).all() and got[0, 3] == 1.0


NEEDS_ONEDNN = pytest.mark.skipif(not dnnl.available(), reason=f"engine onednn cannot run: {dnnl.unavailable_reason()}")


@pytest.mark.parametrize(
    ("name", "sparse"),
    [("eager", True), ("onnx", False), ("onnx", True),
     pytest.param("onednn", False, marks=NEEDS_ONEDNN), pytest.param("onednn", True, marks=NEEDS_ONEDNN)],
)  # fmt: skip
def test_every_cpu_engine_answers_what_the_eager_model_does_and_follows_new_weights(name: str, sparse: bool) -> None:
    net = make_net("small", seed=3)
    x, legal = _encoded_rows()
    reps = max(ONNX_CHUNK, ONEDNN_CHUNK) // len(x) + 2  # more rows than one run takes, and a part run
    x, legal = np.tile(x, (reps, 1)), np.tile(legal, (reps, 1))
    engine = make_engine(name, net, threads=1, sparse=sparse)
    for want, got in zip(forward_rows(net, x, legal), engine(x, legal), strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4
    net.load_state_dict(make_net("small", seed=4).state_dict())
    engine.reload()
    for want, got in zip(forward_rows(net, x, legal), engine(x, legal), strict=True):
        assert np.abs(got - want).max() < 1e-4


@NEEDS_ONEDNN
@pytest.mark.parametrize("rows", [1, 7, ONEDNN_CHUNK + 1])
def test_the_onednn_engine_on_any_net_and_row_count_and_on_threads_at_once(rows: int) -> None:
    """Other widths than small's (tiny's), runs shorter than a chunk (their products pad the rows),
    and two threads on one engine (the batcher's thread mode): each answer within 1e-4 of eager's."""
    net = make_net("tiny", seed=5)
    x, legal = _encoded_rows()
    x, legal = np.tile(x, (rows // len(x) + 1, 1))[:rows], np.tile(legal, (rows // len(x) + 1, 1))[:rows]
    engine = make_engine("onednn", net, threads=1, sparse=True)
    want = forward_rows(net, x, legal)
    answers: list[tuple[np.ndarray, np.ndarray]] = []

    def run() -> None:
        for _ in range(5):
            answers.append(engine(x, legal))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 10
    for got in answers:
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


def test_engine_onednn_where_it_cannot_run_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnnl, "available", lambda: False)
    monkeypatch.setattr(dnnl, "unavailable_reason", lambda: "this CPU has no AMX bf16 units")
    with pytest.raises(ValueError, match="engine onednn: this CPU has no AMX bf16 units; use engine onnx"):
        make_engine("onednn", make_net("tiny"))


def test_the_config_knows_every_engine_by_name() -> None:
    assert sorted(ENGINE_NAMES) == sorted(ENGINES)  # server.engine is checked against the one, run by the other


def test_engines_refuse_what_they_cannot_run_by_name() -> None:
    with pytest.raises(ValueError, match="engine 'tpu'"):
        make_engine("tpu", make_net("tiny"))
    for name in ("onnx", "onednn") if dnnl.available() else ("onnx",):
        with pytest.raises(ValueError, match=f"engine {name} runs float32 only"):
            make_engine(name, make_net("tiny"), dtype=torch.bfloat16)
    if dnnl.available():
        with pytest.raises(ValueError, match="engine onednn runs a BlobNet, not a Linear"):
            make_engine("onednn", torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="no sparse first layer"):
        make_engine("compile", make_net("tiny"), sparse=True)
    with pytest.raises(ValueError, match="needs a BlobNet"):
        make_engine("eager", torch.nn.Linear(3, 3), sparse=True)
