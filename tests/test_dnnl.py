"""Float32 products as three bf16 products (blobnet.dnnl): the splitting kernels and oneDNN's matmul
against float64 references."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blobnet import dnnl

pytestmark = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN cannot run: {dnnl.unavailable_reason()}")


def _floats(parts: np.ndarray) -> np.ndarray:
    """The float32 values of bf16 bits (uint16)."""
    return (parts.astype(np.uint32) << 16).view(np.float32)


def test_split3_lays_out_each_row_as_its_bf16_rounding_its_rest_and_its_rounding_again():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((9, 40)) * np.exp(rng.uniform(-20, 20, (9, 40)))).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1.0, -3.5]
    out = np.zeros((9, 120), np.uint16)
    for relu in (False, True):
        dnnl.split3(x, relu, out)
        want = np.maximum(x, 0) if relu else x
        hi, lo, again = _floats(out[:, :40]), _floats(out[:, 40:80]), _floats(out[:, 80:])
        assert (hi == torch.from_numpy(want).bfloat16().float().numpy()).all()  # round to nearest even
        assert (again == hi).all()
        rest = want.astype(np.float64) - hi
        assert (np.abs(lo - rest) <= np.abs(rest) * 2.0**-8).all()
        assert (np.abs(hi.astype(np.float64) + lo - want) <= np.abs(want) * 2.0**-16).all()


def test_norm_split3_is_the_layer_norm_split():
    rng = np.random.default_rng(1)
    h = (rng.standard_normal((6, 32)) * 5 + 2).astype(np.float32)
    weight, bias = rng.standard_normal(32).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    norm = torch.nn.functional.layer_norm(torch.from_numpy(h), (32,), torch.from_numpy(weight), torch.from_numpy(bias))
    out = np.zeros((6, 96), np.uint16)
    for relu in (False, True):
        want = (torch.relu(norm) if relu else norm).numpy()
        dnnl.norm_split3(h, weight, bias, 1e-5, relu, out)
        got = _floats(out[:, :32]).astype(np.float64) + _floats(out[:, 32:64])
        assert (np.abs(got - want) <= np.abs(want) * 2.0**-15 + 1e-6).all()  # float32's sums, then the split


@pytest.mark.parametrize(("rows", "k", "out"), [(1, 16, 8), (37, 256, 134), (300, 48, 70)])
def test_a_product_is_float32_s_within_its_rounding(rows, k, out):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    weight = (rng.standard_normal((out, k)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    product = dnnl.Product(weight, bias)
    src, dst = dnnl.aligned((rows, 3 * k), np.uint16), dnnl.aligned((rows, out), np.float32)
    assert src.ctypes.data % 64 == 0 and dst.ctypes.data % 64 == 0
    dnnl.split3(x, False, src)
    for _ in range(2):  # the second run on the memory objects the first made
        product(src, dst)
        want = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
        scale = np.abs(x).astype(np.float64) @ np.abs(weight).T.astype(np.float64) + np.abs(bias)
        assert (np.abs(dst - want) <= 4e-5 * scale).all()
    with pytest.raises(AssertionError):
        product(src[:, :-1], dst)  # a source of the wrong width


_ENGINE_CHECK = """
import numpy as np
from bench.common import sample_inputs
from blobnet.net import forward_rows, make_engine, make_net
net = make_net("tiny", seed=1)
x, legal = sample_inputs(19, net.width, np.random.default_rng(0))
got = make_engine("onednn", net, threads=1, sparse=True)(x, legal)
print(max(float(np.abs(a - b).max()) for a, b in zip(got, forward_rows(net, x, legal))))
"""


@pytest.mark.parametrize("setting", ["NUMBA_BOUNDSCHECK", "NUMBA_DISABLE_JIT"])
def test_the_engine_s_kernels_pass_bounds_checks_and_run_as_plain_python(setting, tmp_path):
    """The kernels recompiled with bounds checking (an index bug fails here instead of corrupting
    memory), and run as plain Python (how to debug them), still answer as eager does."""
    env = {**os.environ, setting: "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    proc = subprocess.run([sys.executable, "-c", _ENGINE_CHECK], capture_output=True, text=True, timeout=600, env=env,
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-4
