"""Float32 products on a CPU's bf16 units: each product as three bf16 products summed in float32.

An activation x splits into its bf16 rounding x_hi and the bf16 rounding x_lo of the rest, and a
weight w likewise; then x w = x_hi w_hi + x_lo w_hi + x_hi w_lo + (x_lo w_lo + what the two roundings
dropped), and the last term is about 2^-16 of the product: the three bf16 products, summed in
float32, are float32's product within about 1e-5 relative (the "bf16_3x" of JAX's
``Precision.HIGH`` on TPUs). Laid side by side, [x_hi | x_lo | x_hi] (n, 3k) times [w_hi; w_hi;
w_lo] (3k, m) is one bf16 product with float32 sums, which a CPU with AMX units runs 2.1 to 2.3
times as fast as float32's one product (256 x 256 weights, 256 to 2,048 rows, one thread).

PyTorch has no CPU product of bf16 operands with a float32 result (``torch.mm`` rounds it to bf16),
so the product is oneDNN's matmul primitive (the library PyTorch's CPU products use), called
through its C API from its own wheel, ``onednn-cpu-gomp`` (its OpenMP runtime is PyTorch's libgomp,
loaded before it). ``available()`` says whether this process can use it; the kernels here
split rows into the bf16 layout (numba; the layer norm and the ReLU fused in front).
"""

from __future__ import annotations

import ctypes
import importlib.util
import sysconfig
import threading
from functools import cache
from pathlib import Path

import numpy as np

from blobnet.jit import njit

__all__ = [
    "available", "unavailable_reason", "Product", "aligned", "split_weight", "split3", "norm_split3", "add_rows",
    "value_head",
]  # fmt: skip

_BF16, _F32 = 2, 3  # dnnl_data_type_t
_TAG_ANY = 1  # dnnl_format_tag_any: the primitive picks the weights' layout
_QUERY_WEIGHTS_MD = 131  # dnnl_query_weights_md
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS = 1, 17, 33, 41
_Dims = ctypes.c_int64 * 12  # dnnl_dims_t


class _Arg(ctypes.Structure):  # dnnl_exec_arg_t
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


@cache
def _loaded() -> tuple[ctypes.CDLL | None, str]:
    """oneDNN from the ``onednn-cpu-gomp`` wheel (its lib/ among the environment's data files), else
    wherever the loader finds it, and why not if nowhere. PyTorch's own libgomp is loaded first when
    there is one, so oneDNN and PyTorch share one OpenMP runtime whichever of them this process
    loads first."""
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is not None and torch_spec.origin is not None:
        gomp = Path(torch_spec.origin).parent / "lib" / "libgomp.so.1"
        if gomp.is_file():
            ctypes.CDLL(str(gomp), mode=ctypes.RTLD_GLOBAL)
    error = ""
    for path in (Path(sysconfig.get_path("data")) / "lib" / "libdnnl.so.3", "libdnnl.so.3"):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            error = error or str(e)
            continue
        lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
        lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        return lib, ""
    return None, error


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def unavailable_reason() -> str | None:
    """Why this process cannot use the products here, or None: oneDNN must load, and the CPU must
    have AMX bf16 units (without them oneDNN's bf16 products are no faster than float32's)."""
    lib, error = _loaded()
    if lib is None:
        return f"oneDNN's library did not load ({error}; it comes with pip install onednn-cpu-gomp)"
    if "amx_bf16" not in _cpu_flags():
        return "this CPU has no AMX bf16 units (amx_bf16 in /proc/cpuinfo)"
    return None


@cache
def available() -> bool:
    """``unavailable_reason()`` is None."""
    return unavailable_reason() is None


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN {what} failed (dnnl_status_t {status})")


class _Runtime:
    """The CPU engine and, per thread, a stream (a oneDNN stream is not to be shared by threads)."""

    def __init__(self) -> None:
        lib, _ = _loaded()
        if lib is None:
            raise RuntimeError(f"oneDNN cannot run here: {unavailable_reason()}")
        self.lib = lib
        self.engine = ctypes.c_void_p()
        _check(lib.dnnl_engine_create(ctypes.byref(self.engine), 1, ctypes.c_size_t(0)), "engine_create")
        self._local = threading.local()

    def stream(self) -> ctypes.c_void_p:
        s = getattr(self._local, "stream", None)
        if s is None:
            s = ctypes.c_void_p()
            _check(self.lib.dnnl_stream_create(ctypes.byref(s), self.engine, ctypes.c_uint(1)), "stream_create")
            self._local.stream = s
        return s

    def desc(self, dims: tuple[int, ...], dtype: int, *, any_layout: bool = False) -> ctypes.c_void_p:
        """A memory descriptor: row-major, or the layout a primitive will choose."""
        md = ctypes.c_void_p()
        n = len(dims)
        if any_layout:
            status = self.lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), n, _Dims(*dims), dtype, _TAG_ANY)
        else:
            strides = [int(np.prod(dims[i + 1 :], dtype=np.int64)) for i in range(n)]
            status = self.lib.dnnl_memory_desc_create_with_strides(
                ctypes.byref(md), n, _Dims(*dims), dtype, _Dims(*strides)
            )
        _check(status, "memory_desc_create")
        return md

    def memory(self, md: ctypes.c_void_p, array: np.ndarray) -> ctypes.c_void_p:
        m = ctypes.c_void_p()
        _check(self.lib.dnnl_memory_create(ctypes.byref(m), md, self.engine, ctypes.c_void_p(array.ctypes.data)),
               "memory_create")  # fmt: skip
        return m

    def execute(self, primitive: ctypes.c_void_p, args: list[tuple[int, ctypes.c_void_p, np.ndarray]]) -> None:
        """Run ``primitive`` on (argument, descriptor, array) triples, each array as a memory object
        made for this call alone."""
        memories = [self.memory(md, array) for _, md, array in args]
        try:
            self.run(primitive, (_Arg * len(args))(*(_Arg(a, m) for (a, _, _), m in zip(args, memories))))
        finally:
            for m in memories:
                self.lib.dnnl_memory_destroy(m)

    def run(self, primitive: ctypes.c_void_p, args: ctypes.Array[_Arg]) -> None:
        """Run ``primitive`` on its arguments' memory objects, on this thread's stream, to the end."""
        stream = self.stream()
        _check(self.lib.dnnl_primitive_execute(primitive, stream, len(args), args), "primitive_execute")
        _check(self.lib.dnnl_stream_wait(stream), "stream_wait")


@cache
def _runtime() -> _Runtime:
    return _Runtime()


# a matmul for one row count: the primitive, its source and destination descriptors, its weights
_Primitive = tuple[ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, tuple[ctypes.c_void_p, np.ndarray]]
# a run's arguments made once: the primitive, the argument array, its memory objects, the arrays they hold
_Run = tuple[ctypes.c_void_p, ctypes.Array[_Arg], list[ctypes.c_void_p], tuple[np.ndarray, ...]]
MAX_RUNS = 64  # (rows, source, destination) whose memory objects a Product keeps


class Product:
    """``x @ weight.T + bias`` for float32 rows x (n, k), as ``split3(x)`` (n, 3k) bf16 bits times
    ``split_weight(weight)`` in one oneDNN matmul with float32 sums and a float32 result. One
    primitive per row count, kept, and the weights reordered once into each layout they pick; the
    memory objects of a (rows, source, destination) met before are kept too (an engine runs on the
    same buffers), so a run is one call into oneDNN. Its oneDNN objects go with it."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self._owned: list[tuple[str, ctypes.c_void_p]] = []  # (oneDNN's destroy function, handle)
        self._runs: dict[tuple[int, int, int], _Run] = {}
        self._primitives: dict[int, _Primitive] = {}
        self._layouts: list[tuple[ctypes.c_void_p, np.ndarray]] = []  # (layout, the weights in it)
        self._lock = threading.Lock()
        rt = self._rt = _runtime()
        self.out, self.k = weight.shape
        self._plain = split_weight(weight)  # (3k, out) bf16 bits
        self.bias = aligned((1, self.out), np.float32)
        self.bias[0] = bias
        self._bias_md = self._own("dnnl_memory_desc_destroy", rt.desc((1, self.out), _F32))

    def _own(self, destroy: str, handle: ctypes.c_void_p) -> ctypes.c_void_p:
        self._owned.append((destroy, handle))
        return handle

    def __del__(self) -> None:
        self._drop_runs()
        for destroy, handle in reversed(self._owned):
            getattr(self._rt.lib, destroy)(handle)
        self._owned.clear()

    def _drop_runs(self) -> None:
        for _, _, memories, _ in self._runs.values():
            for m in memories:
                self._rt.lib.dnnl_memory_destroy(m)
        self._runs.clear()

    def _primitive(self, n: int) -> _Primitive:
        """(primitive, source desc, destination desc, (weights desc, weights)) for ``n`` rows."""
        found = self._primitives.get(n)
        if found is not None:
            return found
        with self._lock:
            found = self._primitives.get(n)  # another thread may have made it meanwhile
            if found is not None:
                return found
            rt, lib = self._rt, self._rt.lib
            src = self._own("dnnl_memory_desc_destroy", rt.desc((n, 3 * self.k), _BF16))
            dst = self._own("dnnl_memory_desc_destroy", rt.desc((n, self.out), _F32))
            weights_any = self._own("dnnl_memory_desc_destroy", rt.desc((3 * self.k, self.out), _BF16, any_layout=True))
            pd = ctypes.c_void_p()
            status = lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), rt.engine, src, weights_any,
                                                           self._bias_md, dst, None)  # fmt: skip
            _check(status, "matmul_primitive_desc_create")
            self._own("dnnl_primitive_desc_destroy", pd)
            # the layout it picks, a descriptor the primitive descriptor owns
            weights = self._packed_for(ctypes.c_void_p(lib.dnnl_primitive_desc_query_md(pd, _QUERY_WEIGHTS_MD, 0)))
            primitive = ctypes.c_void_p()
            _check(lib.dnnl_primitive_create(ctypes.byref(primitive), pd), "primitive_create")
            self._own("dnnl_primitive_destroy", primitive)
            found = self._primitives[n] = (primitive, src, dst, weights)
            return found

    def _packed_for(self, weights_md: ctypes.c_void_p) -> tuple[ctypes.c_void_p, np.ndarray]:
        """The weights reordered into the layout ``weights_md`` (which depends on the row count),
        made once for each layout."""
        rt, lib = self._rt, self._rt.lib
        for md, packed in self._layouts:
            if lib.dnnl_memory_desc_equal(md, weights_md):
                return md, packed
        packed = aligned(lib.dnnl_memory_desc_get_size(weights_md), np.uint8)
        plain_md = self._own("dnnl_memory_desc_destroy", rt.desc(self._plain.shape, _BF16))
        rpd = ctypes.c_void_p()
        _check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(rpd), plain_md, rt.engine, weights_md, rt.engine,
                                                      None), "reorder_primitive_desc_create")  # fmt: skip
        self._own("dnnl_primitive_desc_destroy", rpd)
        reorder = ctypes.c_void_p()
        _check(lib.dnnl_primitive_create(ctypes.byref(reorder), rpd), "primitive_create")
        try:
            rt.execute(reorder, [(_ARG_SRC, plain_md, self._plain), (_ARG_DST, weights_md, packed)])
        finally:
            lib.dnnl_primitive_destroy(reorder)
        self._layouts.append((weights_md, packed))
        return weights_md, packed

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        """dst (n, out) float32 = the product of src (n, 3k) uint16, both C-contiguous."""
        n = len(src)
        assert src.shape == (n, 3 * self.k) and src.dtype == np.uint16 and src.flags.c_contiguous
        assert dst.shape == (n, self.out) and dst.dtype == np.float32 and dst.flags.c_contiguous
        key = (n, src.ctypes.data, dst.ctypes.data)
        run = self._runs.get(key)
        if run is None:
            primitive, src_md, dst_md, (weights_md, packed) = self._primitive(n)
            rt = self._rt
            with self._lock:
                if len(self._runs) >= MAX_RUNS:
                    self._drop_runs()
                arrays = (src, dst, packed, self.bias)
                memories = [rt.memory(md, a) for md, a in zip((src_md, dst_md, weights_md, self._bias_md), arrays)]
                names = (_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS)
                args = (_Arg * 4)(*(_Arg(a, m) for a, m in zip(names, memories)))
                run = self._runs[key] = (primitive, args, memories, arrays)  # the arrays live as long
        self._rt.run(run[0], run[1])


def aligned(shape: int | tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte line: the matmul's tile
    loads read a line per row, and rows that straddle two lines took it 1.5 to 2.5 times as long."""
    shape = (shape,) if isinstance(shape, int) else shape
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    start = -buf.ctypes.data % 64
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def split_weight(weight: np.ndarray) -> np.ndarray:
    """[w_hi; w_hi; w_lo] (3k, out) as bf16 bits (uint16) for a float32 weight (out, k)."""
    w = np.ascontiguousarray(weight, np.float32)
    out, k = w.shape
    parts = np.empty((out, 3 * k), np.uint16)
    split3(w, False, parts)  # each output's row of weights as [hi | lo | hi]
    stacked = aligned((3 * k, out), np.uint16)
    stacked[:k] = stacked[k : 2 * k] = parts[:, :k].T
    stacked[2 * k :] = parts[:, k : 2 * k].T
    return stacked


@njit(cache=True, inline="always")
def _bf16(u: np.uint32) -> np.uint32:
    """The bf16 bits (in the low half) of the float32 whose bits are u, rounded to nearest even."""
    return (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


# Reassociation lets numba vectorise the layer norm's sums (a float32 sum in another order); it
# cannot touch the splitting, whose parts are made from the bits.
_FAST = {"reassoc", "nsz", "contract"}


@njit(cache=True, fastmath=_FAST)
def _split_row(v: np.ndarray, out: np.ndarray, r: int, rest: np.ndarray) -> None:
    """Row r of ``split3``'s output from the float32 values v (k,); ``rest`` (k,) float32 scratch."""
    k = v.shape[0]
    bits = v.view(np.uint32)
    rest_bits = rest.view(np.uint32)
    o = out[r]
    for c in range(k):
        h = _bf16(bits[c])
        o[c] = h
        o[2 * k + c] = h
        rest_bits[c] = h << np.uint32(16)
    for c in range(k):
        rest[c] = v[c] - rest[c]
    for c in range(k):
        o[k + c] = _bf16(rest_bits[c])


@njit(cache=True, fastmath=_FAST)
def split3(x: np.ndarray, relu: bool, out: np.ndarray) -> None:
    """out (n, 3k) uint16: [hi | lo | hi] of each row of x (n, k) float32 (of max(x, 0) if ``relu``)."""
    n, k = x.shape
    v = np.empty(k, np.float32)
    rest = np.empty(k, np.float32)
    for r in range(n):
        xr = x[r]
        if relu:
            for c in range(k):
                v[c] = max(xr[c], np.float32(0.0))
        else:
            v[:] = xr
        _split_row(v, out, r, rest)


@njit(cache=True, fastmath=_FAST)
def norm_split3(
    h: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, relu: bool, out: np.ndarray
) -> None:  # fmt: skip
    """``split3`` of the layer norm of each row of h (n, k) float32 (``torch.nn.LayerNorm``: the
    mean and the biased variance of the row, then weight and bias), ReLU'd if ``relu``."""
    n, k = h.shape
    v = np.empty(k, np.float32)
    rest = np.empty(k, np.float32)
    zero = np.float32(0.0)
    for r in range(n):
        hr = h[r]
        total = zero
        for c in range(k):
            total += hr[c]
        mean = total / np.float32(k)
        squares = zero
        for c in range(k):
            d = hr[c] - mean
            squares += d * d
        inv = np.float32(1.0) / np.sqrt(squares / np.float32(k) + np.float32(eps))
        for c in range(k):
            y = (hr[c] - mean) * inv * weight[c] + bias[c]
            v[c] = max(y, zero) if relu else y
        _split_row(v, out, r, rest)


@njit(cache=True, fastmath=_FAST)
def add_rows(h: np.ndarray, d: np.ndarray) -> None:
    """h += d, both (n, k) float32."""
    n, k = h.shape
    for r in range(n):
        for c in range(k):
            h[r, c] += d[r, c]


@njit(cache=True, fastmath=_FAST)  # not the finite-math flags: exp may meet an infinity
def value_head(heads: np.ndarray, start: int, weight: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """out (n, n_values): sigmoid(weight @ relu(heads[r, start:]) + bias) for each row r of heads
    (n, start + hidden) float32, weight (n_values, hidden), bias (n_values,): the value head's last
    layer, from the product that made its hidden layer together with the policy's logits."""
    n = heads.shape[0]
    hidden = weight.shape[1]
    v = np.empty(hidden, np.float32)
    for r in range(n):
        for c in range(hidden):
            v[c] = max(heads[r, start + c], np.float32(0.0))
        for o in range(weight.shape[0]):
            acc = bias[o]
            for c in range(hidden):
                acc += weight[o, c] * v[c]
            out[r, o] = np.float32(1.0) / (np.float32(1.0) + np.exp(-acc))
