"""The network: a residual MLP over one encoded position, with a policy head and a value head.

Shapes (B = batch; N_ACTIONS = 70 action ids, N_VALUES = 8 relative seats, ``blobnet.cards``):

    x      (B, WIDTH) float          one row of ``blobnet.encode`` per position, seen by the acting seat
    legal  (B, N_ACTIONS) bool       True where the action id is legal
    ->
    logits (B, N_ACTIONS)            policy logits; illegal ids hold the most negative finite value of
                                     the dtype, so softmax gives them exactly 0 and a cross-entropy
                                     against a target that is 0 there stays finite (0 * -inf is NaN)
    values (B, N_VALUES) in [0, 1]   every relative seat's expected round score divided by
                                     ``blobnet.encode.value_scale(cards)`` (0 = the acting seat; seats
                                     past the table's size are padding and carry no meaning)

Its shapes are ``blobnet.config.NetConfig``, named presets there (``PRESETS``).

A checkpoint stores the preset name and ``state_dict()``; every parameter is a plain tensor, so
``torch.load(weights_only=True)`` reads it back and ``make_net(name).load_state_dict(sd)`` restores it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from blobnet import dnnl
from blobnet.cards import N_ACTIONS
from blobnet.compact import SCALAR_AT, PackedRows
from blobnet.config import CPU_ENGINE, DEFAULT_PRESET, NetConfig, preset
from blobnet.evaluator import Priors, bad_rows, check_request, row_errors
from blobnet.graph import FLOAT, Graph
from blobnet.stem import legal_softmax, nonzero_packed, nonzero_rows

__all__ = [
    "BlobNet", "make_net", "count_params", "resolve_dtype",
    "forward_rows", "padded_rows", "DirectEvaluator", "ENGINES", "Engine", "make_engine", "cpu_engine_for",
    "onnx_graph", "ONNX_CHUNK", "ONEDNN_CHUNK",
]  # fmt: skip


class _Block(nn.Module):
    """Pre-norm residual block: ``x + W2 relu(W1 norm(x))``; (B, hidden) -> (B, hidden)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class BlobNet(nn.Module):
    """Residual MLP with a policy head and a value head; see the module docstring for shapes."""

    def __init__(self, config: NetConfig | str = DEFAULT_PRESET) -> None:
        super().__init__()
        if isinstance(config, str):
            config = preset(config)
        self.config = config
        self.width = config.width
        self.n_actions = config.n_actions
        self.n_values = config.n_values
        self.stem = nn.Linear(config.width, config.hidden)
        self.blocks = nn.Sequential(*(_Block(config.hidden) for _ in range(config.blocks)))
        self.norm = nn.LayerNorm(config.hidden)
        self.policy = nn.Linear(config.hidden, config.n_actions)
        self.value1 = nn.Linear(config.hidden, config.value_hidden)
        self.value2 = nn.Linear(config.value_hidden, config.n_values)

    def forward(self, x: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, width) float; legal: (B, n_actions) bool -> (logits (B, n_actions), values (B, n_values))."""
        return self.after_stem(self.stem(x), legal)

    def after_stem(self, h0: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` from the first layer's output ``h0`` (B, hidden) on (``blobnet.stem`` computes
        that layer over a row's nonzero entries)."""
        h = self.blocks(torch.relu(h0))
        h = torch.relu(self.norm(h))
        logits = self.policy(h)
        # The most negative finite value, not -inf: softmax still gives exactly 0, and the loss
        # against a zero target stays finite.
        logits = logits.masked_fill(~legal, torch.finfo(logits.dtype).min)
        values = torch.sigmoid(self.value2(torch.relu(self.value1(h))))
        return logits, values


def make_net(name: str = DEFAULT_PRESET, *, seed: int | None = None) -> BlobNet:
    """A freshly initialised ``BlobNet`` of preset ``name``, in eval mode; ``seed`` makes the weights repeatable."""
    if seed is None:
        net = BlobNet(preset(name))
    else:
        # A private generator state: seeding here must not disturb the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = BlobNet(preset(name))
    return net.eval()


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
    "fp32": torch.float32, "float32": torch.float32,
}  # fmt: skip


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None, a torch dtype, or one of "bf16", "fp16", "fp32" (and their long names); fp32 means None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    try:
        d = _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(_DTYPES)} or None") from None
    return None if d == torch.float32 else d


def forward_rows(
    model: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    features: np.ndarray, mask: np.ndarray, dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One forward pass on the CPU: features (n, width) float32 and legal mask (n, n_actions) bool ->
    (priors (n, n_actions) float32, the softmax over the legal ids, values (n, n_values) float32).
    ``dtype`` is the model's precision (None: float32). ``model``: the network, or any callable of its
    shape (``BlobNet.after_stem``, from the first layer's output). The arrays are the caller's, not copied.

    In bf16 or fp16 the rows are padded to ``padded_rows(n)``: oneDNN builds its reduced-precision
    kernels for each batch size it meets, and a search's batches come in every size. (Batches of
    1,200 to 1,700 rows drawn at random: 11.5 to 11.7 us a row unpadded, 6.5 to 7.7 padded, ONNX
    Runtime's float32 10.6 to 12.2; the small net, one thread.)"""
    x = torch.from_numpy(features)
    m = torch.from_numpy(mask)
    n = len(x)
    if dtype is not None:
        rows = padded_rows(n)
        low, wide = x.new_zeros((rows, x.shape[1]), dtype=dtype), m.new_ones((rows, m.shape[1]))
        low[:n], wide[:n] = x, m  # a padding row: zeros, every id legal (no NaN)
        x, m = low, wide
    with torch.inference_mode():
        logits, values = model(x, m)
        return torch.softmax(logits[:n].float(), dim=1).numpy(), values[:n].float().numpy()


def padded_rows(n: int) -> int:
    """``n`` rounded up to one of 8 sizes an octave (a multiple of 8 below 64): at most an eighth
    more rows, and about 60 sizes up to 4,096."""
    step = max(8, 1 << max(0, n.bit_length() - 4))
    return -(-n // step) * step


class Engine:
    """A CPU forward engine: ``engine(features, mask)`` is ``forward_rows`` of its model, and
    ``reload()`` tells it that the model's weights changed. This one ("eager") runs PyTorch as is.
    ``sparse``: the first layer over each row's nonzero entries (``blobnet.stem``), the rest of the
    network as usual; the model must be a ``BlobNet``."""

    name = "eager"

    def __init__(
        self, model: nn.Module, *, dtype: torch.dtype | None = None, threads: int | None = None, sparse: bool = False
    ) -> None:
        if sparse and not isinstance(model, BlobNet):
            raise ValueError(f"a sparse first layer needs a BlobNet, not a {type(model).__name__}")
        self.model = model
        self.dtype = dtype
        self.sparse = sparse
        self.reload()

    def reload(self) -> None:
        if self.sparse:
            assert isinstance(self.model, BlobNet)
            stem = self.model.stem
            self._wt = stem.weight.detach().float().T.contiguous()  # (width, hidden): a row per column
            self._bias = stem.bias.detach().float().contiguous()

    def _entries(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Room for the nonzero entries of ``n`` rows (every entry, at most: only the pages written
        are ever touched) and their offsets; fresh each call, as worker threads may share the engine."""
        need = n * self._wt.shape[0]
        return np.empty(need, np.int64), np.empty(need, np.float32), np.empty(n, np.int64)

    def _bag(self, entries: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> np.ndarray:
        """The first layer (n, hidden) float32 from the ``k`` nonzero entries listed in ``entries``."""
        cols, vals, offsets = entries
        with torch.inference_mode():
            h = F.embedding_bag(torch.from_numpy(cols[:k]), self._wt, torch.from_numpy(offsets), mode="sum",
                                per_sample_weights=torch.from_numpy(vals[:k]))  # fmt: skip
            return h.add_(self._bias).numpy()

    def first_layer(self, features: np.ndarray) -> np.ndarray:
        """The first layer's output (n, hidden) float32, over the rows' nonzero entries."""
        entries = self._entries(len(features))
        return self._bag(entries, nonzero_rows(features, *entries))

    def __call__(self, features: np.ndarray, mask: np.ndarray) -> Priors:
        if not self.sparse:
            return forward_rows(self.model, features, mask, self.dtype)
        return self.after_first(self.first_layer(features), mask)

    def packed(self, rows: PackedRows, mask: np.ndarray) -> Priors:
        """``self(features, mask)`` for rows packed by ``blobnet.compact`` (a sparse engine only):
        the first layer straight from their bits (``blobnet.stem.nonzero_packed``), never unpacked."""
        assert self.sparse
        entries = self._entries(len(rows))
        k = nonzero_packed(rows.bits, rows.scalars, SCALAR_AT, *entries)
        return self.after_first(self._bag(entries, k), mask)

    def listed(self, cols: np.ndarray, vals: np.ndarray, offsets: np.ndarray, k: int, mask: np.ndarray) -> Priors:
        """``self(features, mask)`` for rows already listed (a sparse engine only): ``k`` entries in
        ``cols`` and ``vals``, row r's first at ``offsets[r]`` (``blobnet.stem.list_rows``)."""
        assert self.sparse
        return self.after_first(self._bag((cols, vals, offsets), k), mask)

    def after_first(self, h: np.ndarray, mask: np.ndarray) -> Priors:
        """The forward pass from the first layer's output h (n, hidden) float32."""
        assert isinstance(self.model, BlobNet)
        return forward_rows(self.model.after_stem, h, mask, self.dtype)


def onnx_graph(model: BlobNet, *, sparse: bool = False) -> bytes:
    """``model`` up to its policy logits and its values as a serialised ONNX graph (opset 17,
    ``blobnet.graph``), built from its weights: input "x" (B, width) float32 (``sparse``: the first
    layer's output (B, hidden) instead); outputs "logits" (B, n_actions), unmasked, and "values"
    (B, n_values). With the softmax of the legal logits (``blobnet.stem.legal_softmax``) it is
    ``forward_rows``, layer by layer; a test holds the two equal."""
    g = Graph()

    def linear(x: str, layer: nn.Module, name: str, out: str | None = None) -> str:
        assert isinstance(layer, nn.Linear)
        w, b = g.constant(f"{name}.w", _array(layer.weight)), g.constant(f"{name}.b", _array(layer.bias))
        return g.node("Gemm", [x, w, b], out or name, transB=1)

    def norm(x: str, layer: nn.Module, name: str) -> str:
        assert isinstance(layer, nn.LayerNorm)
        w, b = g.constant(f"{name}.w", _array(layer.weight)), g.constant(f"{name}.b", _array(layer.bias))
        return g.node("LayerNormalization", [x, w, b], name, axis=-1, epsilon=float(layer.eps))

    h = g.node("Relu", ["x" if sparse else linear("x", model.stem, "stem")])
    for i, block in enumerate(model.blocks):
        assert isinstance(block, _Block)
        y = g.node("Relu", [linear(norm(h, block.norm, f"b{i}.norm"), block.fc1, f"b{i}.fc1")])
        h = g.node("Add", [h, linear(y, block.fc2, f"b{i}.fc2")])
    h = g.node("Relu", [norm(h, model.norm, "norm")])
    linear(h, model.policy, "policy", "logits")
    v = g.node("Relu", [linear(h, model.value1, "value1")])
    g.node("Sigmoid", [linear(v, model.value2, "value2")], "values")
    width = model.config.hidden if sparse else model.width
    return g.model(
        inputs=[("x", FLOAT, ["batch", width])],
        outputs=[("logits", FLOAT, ["batch", model.n_actions]), ("values", FLOAT, ["batch", model.n_values])],
    )


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _float32_only(engine: str, dtype: torch.dtype | None) -> None:
    if dtype is not None:
        raise ValueError(
            f'engine {engine} runs float32 only, not {dtype}: set network.dtype = "float32" or server.engine = "eager"'
        )


# Rows a run of the ONNX graph takes at most: a batch runs in slices of this many, so that each
# layer's output (256 floats a row in the small net: 256 KB a slice) stays in the core's cache for
# the next layer. Measured on the small net, one thread, a batch of 1,536 rows of sample inputs: 5.1
# us a row in slices of 192 to 384, against 5.6 to 6.2 in one run (64 rows: 5.5; 128: 5.3).
ONNX_CHUNK = 256


class OnnxEngine(Engine):
    """The model as an ONNX graph (``onnx_graph``, in memory) run by ONNX Runtime's CPU provider with
    ``threads`` threads (default: torch's count); float32 only. Each ``reload`` builds the graph
    from the weights again (a few milliseconds for "small")."""

    name = "onnx"

    def __init__(
        self, model: nn.Module, *, dtype: torch.dtype | None = None, threads: int | None = None, sparse: bool = False
    ) -> None:
        _float32_only(self.name, dtype)
        import onnxruntime  # only this engine needs it

        self._ort = onnxruntime
        self.threads = threads or torch.get_num_threads()
        super().__init__(model, sparse=sparse)

    def reload(self) -> None:
        super().reload()
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: a spinning one holds a core that the first
        # layer's torch threads, the search between batches and other engine processes need (with
        # two threads on two cores, a searched decision at one table took 3x as long spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = onnx_graph(self.model, sparse=self.sparse)  # type: ignore[arg-type]
        self.session = self._ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._n_values = int(self.session.get_outputs()[1].shape[1])

    def __call__(self, features: np.ndarray, mask: np.ndarray) -> Priors:
        x = self.first_layer(features) if self.sparse else features
        return self.after_first(x, mask)

    def after_first(self, h: np.ndarray, mask: np.ndarray) -> Priors:
        """The graph's run from its input x (the first layer's output when sparse), then the softmax
        of the legal logits, ``ONNX_CHUNK`` rows at a time."""
        n = len(h)
        priors = np.empty(mask.shape, np.float32)
        values = np.empty((n, self._n_values), np.float32)
        for i in range(0, n, ONNX_CHUNK):
            j = i + ONNX_CHUNK
            logits, values[i:j] = self.session.run(None, {"x": h[i:j]})
            legal_softmax(logits, mask[i:j], priors[i:j])
        return priors, values


# Rows a run of the onednn engine takes at most: its buffers (a row's 256 activations, their 768
# bf16 parts, a product's 256 floats and the heads' 134) then about fill the core's 2 MB cache. At
# batch 1,024 (small net, one thread, a scratch loop): 4.25, 3.93, 3.74 and 3.66 us a row in runs
# of 128, 256, 512 and 1,024 rows.
ONEDNN_CHUNK = 512


class OnednnEngine(Engine):
    """The network's products on a CPU's AMX units at float32's accuracy: each as three bf16
    products with float32 sums, in one oneDNN matmul (``blobnet.dnnl``), with the layer norms, the
    ReLUs, the residual sums and the value head's last layer in numba kernels between them and the
    softmax over the legal ids after; within 1e-4 of float32 (a test holds it). Float32 only; it
    needs oneDNN and AMX bf16 units (``blobnet.dnnl.available``). oneDNN runs on the process's
    OpenMP threads (torch's count). Each ``reload`` splits and packs the weights again."""

    name = "onednn"

    def __init__(
        self, model: nn.Module, *, dtype: torch.dtype | None = None, threads: int | None = None, sparse: bool = False
    ) -> None:
        _float32_only(self.name, dtype)
        if not isinstance(model, BlobNet):
            raise ValueError(f"engine onednn runs a BlobNet, not a {type(model).__name__}")
        if not dnnl.available():
            raise ValueError(f"engine onednn: {dnnl.unavailable_reason()}; use engine onnx")
        super().__init__(model, sparse=sparse)

    def reload(self) -> None:
        super().reload()
        m = self.model
        assert isinstance(m, BlobNet)

        def product(*layers: nn.Linear) -> dnnl.Product:
            return dnnl.Product(np.concatenate([_array(layer.weight) for layer in layers]),
                                np.concatenate([_array(layer.bias) for layer in layers]))  # fmt: skip

        def norm(layer: nn.LayerNorm) -> tuple[np.ndarray, np.ndarray, float]:
            return _array(layer.weight), _array(layer.bias), float(layer.eps)

        self._blocks = []
        for block in m.blocks:
            assert isinstance(block, _Block)
            self._blocks.append((norm(block.norm), product(block.fc1), product(block.fc2)))
        self._hidden = m.config.hidden
        self._norm = norm(m.norm)
        self._heads = product(m.policy, m.value1)  # one product: logits, then the value head's hidden layer
        self._value2 = _array(m.value2.weight), _array(m.value2.bias)
        self._local = threading.local()  # each thread's buffers, made at its first run

    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This thread's buffers of ``ONEDNN_CHUNK`` rows (worker threads may share the engine):
        the residual stream, the bf16 parts of a layer's input, a product's result, the heads'."""
        found = getattr(self._local, "buffers", None)
        if found is None:
            hidden, heads = self._hidden, self._heads.out
            shapes = ((hidden, np.float32), (3 * hidden, np.uint16), (hidden, np.float32), (heads, np.float32))
            found = tuple(dnnl.aligned((ONEDNN_CHUNK, w), t) for w, t in shapes)
            for b in found:
                b[:] = 0  # the rows past a short run's own are multiplied too, so never NaN
            self._local.buffers = found
        return found  # type: ignore[return-value]

    def __call__(self, features: np.ndarray, mask: np.ndarray) -> Priors:
        if self.sparse:
            return self.after_first(self.first_layer(features), mask)
        assert isinstance(self.model, BlobNet)
        with torch.inference_mode():  # in float32, on torch's threads
            h = self.model.stem(torch.from_numpy(features)).numpy()
        return self.after_first(h, mask)

    def after_first(self, h: np.ndarray, mask: np.ndarray) -> Priors:
        """The network from the first layer's output h (n, hidden) float32, ``ONEDNN_CHUNK`` rows
        at a time; a short run's products take ``padded_rows`` rows (one kept primitive per size)."""
        n = len(h)
        n_actions = mask.shape[1]
        priors = np.empty(mask.shape, np.float32)
        values = np.empty((n, len(self._value2[1])), np.float32)
        x, parts, out, heads = self._buffers()
        for i in range(0, n, ONEDNN_CHUNK):
            j = min(i + ONEDNN_CHUNK, n)
            m, padded = j - i, padded_rows(j - i)
            np.maximum(h[i:j], 0, out=x[:m])
            for (w, b, eps), fc1, fc2 in self._blocks:
                dnnl.norm_split3(x[:m], w, b, eps, False, parts[:m])
                fc1(parts[:padded], out[:padded])
                dnnl.split3(out[:m], True, parts[:m])
                fc2(parts[:padded], out[:padded])
                dnnl.add_rows(x[:m], out[:m])
            w, b, eps = self._norm
            dnnl.norm_split3(x[:m], w, b, eps, True, parts[:m])
            self._heads(parts[:padded], heads[:padded])
            dnnl.value_head(heads[:m], n_actions, *self._value2, values[i:j])
            legal_softmax(heads[:m, :n_actions], mask[i:j], priors[i:j])
        return priors, values


class CompiledEngine(Engine):
    """``torch.compile`` of the model (inductor; it needs a C++ compiler and compiles on the first
    batches, for any batch size). Loaded weights reach it without a recompile. Dense only."""

    name = "compile"

    def __init__(
        self, model: nn.Module, *, dtype: torch.dtype | None = None, threads: int | None = None, sparse: bool = False
    ) -> None:
        if sparse:
            raise ValueError("engine compile has no sparse first layer: use eager or onnx")
        super().__init__(model, dtype=dtype)
        self._compiled = torch.compile(model, dynamic=True)

    def __call__(self, features: np.ndarray, mask: np.ndarray) -> Priors:
        return forward_rows(self._compiled, features, mask, self.dtype)  # type: ignore[arg-type]


# CPU forward engines by name
ENGINES: dict[str, type[Engine]] = {
    "eager": Engine, "onnx": OnnxEngine, "onednn": OnednnEngine, "compile": CompiledEngine,
}  # fmt: skip


def cpu_engine_for(dtype: torch.dtype | str | None) -> str:
    """The CPU engine that runs a network in ``dtype`` unless told otherwise: ``CPU_ENGINE`` in
    float32, else eager (onednn and onnx run float32 only)."""
    return CPU_ENGINE if resolve_dtype(dtype) is None else "eager"


def make_engine(
    name: str, model: nn.Module, *, dtype: torch.dtype | None = None, threads: int | None = None, sparse: bool = False
) -> Engine:
    """The CPU forward engine ``name`` (``ENGINES``) over ``model``; ``sparse``: its first layer
    over the rows' nonzero entries (``blobnet.stem``)."""
    try:
        kind = ENGINES[name]
    except KeyError:
        raise ValueError(f"engine {name!r}: use one of {', '.join(ENGINES)}") from None
    return kind(model.eval(), dtype=dtype, threads=threads, sparse=sparse)


class DirectEvaluator:
    """The evaluator protocol over ``model`` without a batcher: each call is one forward pass of its
    own rows, on the caller's thread. What a lone search needs (``blobnet.player.NetworkPlayer``'s
    default); many coroutines sharing a network want ``servers.Batcher`` instead. ``yield_each``
    gives the event loop one turn per call, so coroutines sharing this evaluator interleave.
    ``engine``: the forward engine (``make_engine``, dense) on one thread; "eager" runs the model as
    it is (any module of the protocol's shape), the others need a ``BlobNet``."""

    model_version = 0  # the model is fixed: for other weights make another DirectEvaluator

    def __init__(self, model: nn.Module, *, yield_each: bool = True, engine: str = "eager") -> None:
        self.width: int | None = getattr(model, "width", None)
        self.n_actions = int(getattr(model, "n_actions", N_ACTIONS))
        self.yield_each = yield_each
        # One thread where the engine takes a count ("eager" runs on torch's, set process-wide): a
        # lone search's waves are a few dozen rows, too few to share out.
        self.engine = make_engine(engine, model, threads=1)
        self.rows = 0  # rows evaluated so far

    def run_rows(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        """``evaluate_many`` without the event loop: features (k, width) float32, legal (k, n_actions)
        bool -> (priors (k, n_actions), values (k, n_values)), fresh float32 arrays."""
        k = check_request(features, legal, self.width, self.n_actions)
        bad = bad_rows(features, legal)
        if bad:
            raise row_errors(bad)
        probs, values = self.engine(np.ascontiguousarray(features), np.ascontiguousarray(legal))
        self.rows += k
        return probs, values

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        out = self.run_rows(features, legal)
        if self.yield_each:
            await asyncio.sleep(0)
        return out

    async def aclose(self) -> None:
        return None
