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

import numpy as np
import torch
from torch import nn

from blobnet.cards import N_ACTIONS
from blobnet.config import DEFAULT_PRESET, NetConfig, preset
from blobnet.evaluator import Priors, bad_rows, check_request, row_errors

__all__ = [
    "BlobNet", "make_net", "count_params", "resolve_dtype",
    "forward_rows", "DirectEvaluator",
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
        h = self.blocks(torch.relu(self.stem(x)))
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
    model: nn.Module, features: np.ndarray, mask: np.ndarray, dtype: torch.dtype | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass on the CPU: features (n, width) float32 and legal mask (n, n_actions) bool ->
    (priors (n, n_actions) float32, the softmax over the legal ids, values (n, n_values) float32).
    ``dtype`` is the model's precision (None: float32). The arrays are the caller's, not copied."""
    x = torch.from_numpy(features)
    if dtype is not None:
        x = x.to(dtype)
    with torch.inference_mode():
        logits, values = model(x, torch.from_numpy(mask))
        return torch.softmax(logits.float(), dim=1).numpy(), values.float().numpy()


class DirectEvaluator:
    """The evaluator protocol over ``model`` without a batcher: each call is one forward pass of its
    own rows, on the caller's thread. What a lone search needs (``blobnet.player.NetworkPlayer.act``);
    many coroutines sharing a network want ``servers.Batcher`` instead. ``yield_each`` gives the event
    loop one turn per call, so coroutines sharing this evaluator interleave."""

    def __init__(self, model: nn.Module, *, yield_each: bool = True) -> None:
        self.model = model.eval()
        self.width: int | None = getattr(model, "width", None)
        self.n_actions = int(getattr(model, "n_actions", N_ACTIONS))
        self.yield_each = yield_each
        self.rows = 0  # rows evaluated so far

    def run_rows(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        """``evaluate_many`` without the event loop: features (k, width) float32, legal (k, n_actions)
        bool -> (priors (k, n_actions), values (k, n_values)), fresh float32 arrays."""
        k = check_request(features, legal, self.width, self.n_actions)
        bad = bad_rows(features, legal)
        if bad:
            raise row_errors(bad)
        probs, values = forward_rows(self.model, np.ascontiguousarray(features), np.ascontiguousarray(legal))
        self.rows += k
        return probs, values

    async def evaluate_many(self, features: np.ndarray, legal: np.ndarray) -> Priors:
        out = self.run_rows(features, legal)
        if self.yield_each:
            await asyncio.sleep(0)
        return out

    async def aclose(self) -> None:
        return None
