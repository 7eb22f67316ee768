"""The network: a residual MLP over one encoded position, with a policy head and a value head.

Shapes (B = batch):

    x      (B, WIDTH) float   one row of ``blobnet.encode`` per position, seen by the acting seat
    legal  (B, 70) bool       True where the action id is legal
    ->
    logits (B, 70)            policy logits; illegal ids hold the most negative finite value of the
                              dtype, so softmax gives them exactly 0 and a cross-entropy against a
                              target that is 0 there stays finite (0 * -inf would be NaN)
    values (B, 8) in [0, 1]   every relative seat's expected round score divided by
                              ``blobnet.encode.value_scale(cards)`` (0 = the acting seat; seats past
                              the table's size are padding and carry no meaning)

Presets are named by size, as nanoGPT and KataGo name theirs. On this project's 2-core CPU the
Python of the search costs more than the network, so the default ("small") is the largest net
whose forward pass stays well under that cost (DESIGN.md: an MLP of about 0.2M parameters runs at
about 390k evaluations/s at batch 512). "medium" and "large" are for a GPU.

A checkpoint stores the preset name and ``state_dict()``; every parameter is a plain tensor, so
``torch.load(weights_only=True)`` reads it back and ``make_net(name).load_state_dict(sd)`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from blobnet.cards import MAX_PLAYERS, N_ACTIONS
from blobnet.encode import WIDTH

__all__ = ["NetConfig", "PRESETS", "DEFAULT_PRESET", "BlobNet", "preset", "make_net", "count_params"]

N_VALUES = MAX_PLAYERS  # one value per relative seat, padded to the largest table


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Shape of a ``BlobNet``. Derive variants with ``dataclasses.replace``."""

    name: str  # the preset's name, stored in checkpoints
    hidden: int  # width of the trunk
    blocks: int  # residual blocks, each LayerNorm -> Linear -> ReLU -> Linear, added to the trunk
    value_hidden: int  # width of the value head's hidden layer
    width: int = WIDTH  # input features per row (blobnet.encode.WIDTH)
    n_actions: int = N_ACTIONS  # policy outputs: cards 0..51, bids 52..69
    n_values: int = N_VALUES  # value outputs: one per relative seat


PRESETS: dict[str, NetConfig] = {
    # For tests: about 30k parameters, a forward pass is nearly free.
    "tiny": NetConfig(name="tiny", hidden=32, blocks=1, value_hidden=16),
    # The CPU default: about 0.47M parameters, most of them in the 646x256 input layer and the
    # two 256x256 blocks; a few microseconds per row on two cores at batch sizes of a few hundred.
    "small": NetConfig(name="small", hidden=256, blocks=2, value_hidden=64),
    # GPU sizes: about 2.5M and 9M parameters.
    "medium": NetConfig(name="medium", hidden=512, blocks=4, value_hidden=128),
    "large": NetConfig(name="large", hidden=1024, blocks=4, value_hidden=256),
}
DEFAULT_PRESET = "small"


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


def preset(name: str) -> NetConfig:
    """The ``NetConfig`` called ``name``; ValueError naming the valid presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown network preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


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
