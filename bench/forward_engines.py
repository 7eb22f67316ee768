"""Which CPU forward engine serves the network fastest: PyTorch eager, ``torch.compile``, ONNX Runtime,
and (where the CPU has AMX units) float32 products as bf16 ones through oneDNN.

    python -m bench.forward_engines [--preset small] [--batches 16,64,256,1024,4096] [--threads 1] [--json]

Each engine (``blobnet.net.ENGINES``; "-sparse": with the first layer over the rows' nonzero
entries, ``blobnet.stem``; "-bf16": the network in bfloat16, ``network.dtype``) runs the same
network on the same rows (``bench.common.sample_inputs``, features and legal masks, as the search
sends them) at every batch size, one thread, and the engines take turns batch size by batch size,
so a change in the machine's load hits them alike. For each: microseconds a row (the median of
``--repeats`` timed runs of ``--seconds`` each) and its ratio to eager; before timing, its outputs
are compared with eager's (the largest difference of priors and of values; an engine differing by
more than 1e-4, or 2e-2 in bf16, is reported as wrong, not timed).

    python -m bench.forward_engines --ops [--batches 256,1024]

Where the onnx engine's time goes: ONNX Runtime's own profile of its graph (the network after the
sparse first layer, as the batcher runs it: ``ONNX_CHUNK`` rows a run) at each batch size, one
thread; each node's microseconds a row and share of the graph's time, and for each product
(``Gemm``) its float32 rate in GFLOP/s, beside the rate of a plain float32 product of the trunk's
shape (PyTorch's, ``ONNX_CHUNK`` x hidden x hidden) measured in the same run: how much of the
forward pass is products, and how near they run to what this core does.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime
import torch

from bench.common import repeat_for, sample_inputs
from blobnet import dnnl
from blobnet.net import ENGINES, ONNX_CHUNK, BlobNet, OnnxEngine, make_engine, make_net, onnx_graph

TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2  # bfloat16 keeps 8 bits of mantissa: about 3e-3 off on the small net


def time_rows(run, features: np.ndarray, legal: np.ndarray, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Microseconds a row of ``run(features, legal)``, over at least ``seconds`` of calls."""
    run(features, legal)
    calls, elapsed = repeat_for(lambda: run(features, legal), seconds)
    return 1e6 * elapsed / (calls * len(features))


class Node(NamedTuple):
    """One node of the onnx engine's graph in ONNX Runtime's profile (``op_profile``)."""

    name: str
    op: str
    us_per_row: float
    gflops: float | None  # a product's float32 rate; None for any other op


def op_profile(model: BlobNet, batch: int, seconds: float) -> list[Node]:
    """ONNX Runtime's own time for each node of the onnx engine's sparse graph over ``batch`` rows
    (``bench.common.sample_inputs``), run as the engine runs it for at least ``seconds``, one
    thread; the nodes that took longest first."""
    engine = OnnxEngine(model, threads=1, sparse=True)
    x, legal = sample_inputs(batch, model.width, np.random.default_rng(0))
    h = engine.first_layer(x)
    with tempfile.TemporaryDirectory() as tmp:
        options = engine.session.get_session_options()  # the engine's own: one thread, no spinning
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ops")
        engine.session = onnxruntime.InferenceSession(onnx_graph(model, sparse=True), options,
                                                      providers=["CPUExecutionProvider"])  # fmt: skip
        calls, _ = repeat_for(lambda: engine.after_first(h, legal), seconds, at_least=3)
        events = json.loads(Path(engine.session.end_profiling()).read_text())
    micros: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name, args = e["name"].removesuffix("_kernel_time"), e["args"]
        ops[name] = args["op_name"]
        micros[name] += e["dur"]
        if "Gemm" in args["op_name"]:  # (n, k) in, (n, out) out; the weight is prepacked, not listed
            (n, k), (_, out) = args["input_type_shape"][0]["float"], args["output_type_shape"][0]["float"]
            flops[name] += 2.0 * n * k * out
    nodes = [Node(name, ops[name], us / (calls * batch), flops[name] / us / 1e3 if name in flops else None)
             for name, us in micros.items()]  # fmt: skip
    return sorted(nodes, key=lambda node: -node.us_per_row)


def product_gflops(rows: int, hidden: int, seconds: float) -> float:
    """GFLOP/s of a plain float32 product (rows x hidden) @ (hidden x hidden), PyTorch's."""
    a, w = torch.randn(rows, hidden), torch.randn(hidden, hidden)
    a @ w
    calls, elapsed = repeat_for(lambda: a @ w, seconds, at_least=3)
    return 2.0 * rows * hidden * hidden * calls / elapsed / 1e9


def print_ops(model: BlobNet, batches: list[int], seconds: float, as_json: bool) -> None:
    """``--ops``: ``op_profile`` at each batch size, beside ``product_gflops`` of the trunk's shape."""
    hidden = model.config.hidden
    out = {}
    for b in batches:
        nodes = op_profile(model, b, seconds)
        plain = product_gflops(ONNX_CHUNK, hidden, seconds)
        total = sum(node.us_per_row for node in nodes)
        products = sum(node.us_per_row for node in nodes if node.gflops is not None)
        print(f"batch {b}: {total:.2f} us a row in the graph, {products / total:.0%} of it in products; "
              f"a plain float32 product {ONNX_CHUNK} x {hidden} x {hidden}: {plain:.0f} GFLOP/s")  # fmt: skip
        for node in nodes:
            rate = "" if node.gflops is None else f"  {node.gflops:5.0f} GFLOP/s"
            print(f"  {node.name:22s} {node.op:20s} {node.us_per_row:6.3f} us {node.us_per_row / total:6.1%}{rate}")
        out[b] = {"nodes": [node._asdict() for node in nodes], "plain_gflops": plain}
    if as_json:
        print(json.dumps({"preset": model.config.name, "ops": out}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batches", default="16,64,256,1024,4096")
    default = "eager,eager-sparse,onnx,onnx-sparse,compile,eager-sparse-bf16"
    if dnnl.available():
        default += ",onednn-sparse"
    p.add_argument("--engines", default=default,
                   help=f"engines of {', '.join(ENGINES)}; -sparse: sparse first layer; -bf16: in bf16")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ops", action="store_true", help="the onnx engine's time node by node (module docstring)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = make_net(a.preset, seed=0)
    if a.ops:
        torch.set_num_threads(1)
        print_ops(model, [int(b) for b in a.batches.split(",")], a.seconds, a.json)
        return
    names = a.engines.split(",")
    if "eager" not in names:
        names.insert(0, "eager")  # the reference
    engines, tolerance = {}, {}
    bf16: BlobNet | None = None  # the model in bf16, made for the first "-bf16" engine
    for name in names:
        engine, *flags = name.split("-")
        if set(flags) - {"sparse", "bf16"}:
            p.error(f"engine {name!r}: NAME, NAME-sparse, NAME-bf16 or NAME-sparse-bf16")
        low = "bf16" in flags
        net = model
        if low:
            if bf16 is None:
                bf16 = copy.deepcopy(model).to(torch.bfloat16)
            net = bf16
        engines[name] = make_engine(engine, net, threads=a.threads, sparse="sparse" in flags,
                                    dtype=torch.bfloat16 if low else None)  # fmt: skip
        tolerance[name] = BF16_TOLERANCE if low else TOLERANCE
    batches = [int(b) for b in a.batches.split(",")]
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, object]] = {}
    wrong: dict[str, float] = {}
    features, legal = sample_inputs(max(batches), model.width, rng)
    reference = engines["eager"](features, legal)
    for name, engine in engines.items():
        got = engine(features, legal)
        diff = max(float(np.abs(x - y).max()) for x, y in zip(got, reference, strict=True))
        out[name] = {"max_diff": diff, "us_per_row": {}}
        if diff > tolerance[name]:
            wrong[name] = diff
    for b in batches:
        times: dict[str, list[float]] = {name: [] for name in engines if name not in wrong}
        for _ in range(a.repeats):
            for name in times:
                times[name].append(time_rows(engines[name], features[:b], legal[:b], a.seconds / a.repeats))
        for name, ts in times.items():
            out[name]["us_per_row"][b] = statistics.median(ts)  # type: ignore[index]
    base = out["eager"]["us_per_row"]
    for name, res in out.items():
        if name in wrong:
            print(f"{name:12s} outputs differ from eager by {wrong[name]:.2e}: not timed")
            continue
        cells = "  ".join(
            f"{b}: {us:6.2f} us ({base[b] / us:4.2f}x)"  # type: ignore[index]
            for b, us in res["us_per_row"].items()  # type: ignore[attr-defined]
        )
        print(f"{name:12s} max diff {res['max_diff']:.1e}  {cells}")
    if a.json:
        print(json.dumps({"preset": a.preset, "threads": a.threads, "engines": out}))


if __name__ == "__main__":
    main()
