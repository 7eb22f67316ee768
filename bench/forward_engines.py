"""Which CPU forward engine serves the network fastest: PyTorch eager, ``torch.compile``, ONNX Runtime.

    python -m bench.forward_engines [--preset small] [--batches 16,64,256,1024,4096] [--threads 1] [--json]

Each engine (``blobnet.net.ENGINES``; "-sparse": with the first layer over the rows' nonzero
entries, ``blobnet.stem``; "-bf16": the network in bfloat16, ``network.dtype``) runs the same
network on the same rows (``bench.common.sample_inputs``, features and legal masks, as the search
sends them) at every batch size, one thread, and the engines take turns batch size by batch size,
so a change in the machine's load hits them alike. For each: microseconds a row (the median of
``--repeats`` timed runs of ``--seconds`` each) and its ratio to eager; before timing, its outputs
are compared with eager's (the largest difference of priors and of values; an engine differing by
more than 1e-4, or 2e-2 in bf16, is reported as wrong, not timed).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

from bench.common import sample_inputs
from blobnet.net import ENGINES, make_engine, make_net

TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2  # bfloat16 keeps 8 bits of mantissa: about 3e-3 off on the small net


def time_rows(run, features: np.ndarray, legal: np.ndarray, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Microseconds a row of ``run(features, legal)``, over at least ``seconds`` of calls."""
    run(features, legal)
    calls, t0 = 0, time.perf_counter()
    while True:
        run(features, legal)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return 1e6 * elapsed / (calls * len(features))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batches", default="16,64,256,1024,4096")
    p.add_argument("--engines", default="eager,eager-sparse,onnx,onnx-sparse,compile,eager-sparse-bf16",
                   help=f"engines of {', '.join(ENGINES)}; -sparse: sparse first layer; -bf16: in bf16")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = make_net(a.preset, seed=0)
    names = a.engines.split(",")
    if "eager" not in names:
        names.insert(0, "eager")  # the reference
    engines, tolerance = {}, {}
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for name in names:
        engine, *flags = name.split("-")
        if set(flags) - {"sparse", "bf16"}:
            p.error(f"engine {name!r}: NAME, NAME-sparse, NAME-bf16 or NAME-sparse-bf16")
        low = "bf16" in flags
        engines[name] = make_engine(engine, bf16 if low else model, threads=a.threads, sparse="sparse" in flags,
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
