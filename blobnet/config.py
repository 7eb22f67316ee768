"""Run configuration: one frozen struct per part, composed into ``RunConfig``.

Loaded from TOML (``configs/*.toml``) and overridden with ``--set section.key=value``. Unknown keys
and bad values are refused with the key's name and what would be valid. Derive with
``msgspec.structs.replace``; never mutate.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from blobnet.cards import MAX_PLAYERS, MIN_PLAYERS, N_ACTIONS, N_CARDS, N_VALUES
from blobnet.dnnl import available as onednn_available
from blobnet.dnnl import unavailable_reason as onednn_unavailable
from blobnet.encode import WIDTH
from blobnet.rules import Round, random_round

__all__ = [
    "NetConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "CPU_ENGINE",
    "CPU_SPARSE",
    "ENGINE_NAMES",
    "PLAYER_ENGINE",
    "preset",
    "GameConfig",
    "SearchConfig",
    "NetworkConfig",
    "ServerConfig",
    "TrainConfig",
    "ArenaConfig",
    "RunConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "ConfigError",
]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


# train.ray_address: empty, "auto", or a head node's HOST:PORT, optionally as a Ray client address.
_RAY_ADDRESS = re.compile(r"|auto|(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}")


def _check(cond: bool, key: str, valid: str, value: object) -> None:
    if not cond:
        raise ConfigError(f"{key} = {value!r} is not valid: {valid}")


# Network shapes. Presets are named by size, as nanoGPT and KataGo name theirs. On this project's
# 2-core CPU the Python of the search costs more than the network, so the default ("small") is the
# largest net whose forward pass stays well under that cost (DESIGN.md: an MLP of about 0.2M
# parameters runs at about 390k evaluations/s at batch 512). "medium" and "large" are for a GPU.
# The CPU forward pass that serves self-play fastest here (bench/forward_engines.py, README), with
# the first layer over the rows' nonzero entries: float32 products as bf16 ones on the AMX units
# where the CPU has them (blobnet.dnnl), else ONNX Runtime.
CPU_ENGINE = "onednn" if onednn_available() else "onnx"
ENGINE_NAMES = ("onednn", "onnx", "eager", "compile")  # blobnet.net.ENGINES
FLOAT32_ENGINES = ("onednn", "onnx")  # engines that run float32 alone
# A lone player's engine (the arena, the web app, the terminal): a search's waves are a few dozen
# rows, where ONNX Runtime's fixed costs a run are the lower; make train's model at 3 x 30 thought
# 2.07 to 2.19 ms a decision on it against 2.62 on onednn (python -m bench.think_time, two runs each).
PLAYER_ENGINE = "onnx"
CPU_SPARSE = True
POLICY_TARGETS = ("visits", "completed_q")  # self-play's policy target (SearchConfig.policy_target)


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


def preset(name: str) -> NetConfig:
    """The ``NetConfig`` called ``name``; ValueError naming the valid presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown network preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


class GameConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What is played: independent rounds or full games on the standard schedule."""

    mode: str = "rounds"  # "rounds" (independent rounds) or "games" (standard schedule)
    players: list[int] = msgspec.field(default_factory=lambda: [4])  # sampled uniformly per round/game
    cards: list[int] = msgspec.field(default_factory=lambda: [5])  # hand sizes sampled per round (mode rounds)
    start_cards: int | None = None  # mode games: first round's hand size; None = min(7, 52 // players)

    def __post_init__(self) -> None:
        _check(self.mode in ("rounds", "games"), "game.mode", 'one of "rounds", "games"', self.mode)
        _check(
            bool(self.players) and all(MIN_PLAYERS <= p <= MAX_PLAYERS for p in self.players),
            "game.players",
            f"a list of {MIN_PLAYERS}..{MAX_PLAYERS}",
            self.players,
        )
        _check(
            bool(self.cards) and all(c >= 1 for c in self.cards), "game.cards", "a list of hand sizes >= 1", self.cards
        )
        for p in self.players:
            for c in self.cards if self.mode == "rounds" else [self.start_cards or 1]:
                why = f"cards * players <= {N_CARDS} (cards {c} with {p} players)"
                _check(c * p <= N_CARDS, "game.cards", why, self.cards)

    def deal_round(self, rng: np.random.Generator) -> Round:
        """A random round of mode "rounds": players and hand size drawn from the lists, then
        ``blobnet.rules.random_round`` (trump, dealer, deal), all from ``rng`` in that order."""
        players = int(rng.choice(self.players))
        cards = int(rng.choice([c for c in self.cards if c * players <= N_CARDS]))
        return random_round(players, cards, rng)


class SearchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Determinized PUCT search."""

    dets: int = 3  # determinizations (sampled deals of the hidden cards) per decision
    sims: int = 30  # simulations per determinization
    leaves: int = 4  # leaves in flight per tree (virtual loss)
    c_puct: float = 1.5  # exploration constant
    dirichlet_alpha: float = 0.5  # root noise concentration (self-play only)
    dirichlet_eps: float = 0.25  # share of the root prior replaced by noise (self-play only)
    temperature: float = 1.0  # self-play move choice: visits ** (1 / T); 0 picks the most visited
    # The searching seat's values at leaves where another seat acts come from its own view of the
    # leaf (its hand), one more row per such leaf; false takes them from the acting seat's view,
    # which cannot see the searcher's hand.
    root_view: bool = True
    # Network answers an engine keeps (blobnet.netcache), a power of two; 0: none. Each costs
    # 28 bytes: the default about 1.8 MB an engine.
    cache: int = 65536
    # Self-play's policy target: "completed_q" (Gumbel MuZero's softmax of the prior's logits plus
    # the completed action values, blobnet.search.SearchResult.completed_q_policy) or "visits" (the
    # root's visit shares). At make train's 3 x 30 the first trained a model +0.20 and +0.04 points a
    # round stronger head to head, with two seeds (README).
    policy_target: str = "completed_q"

    def __post_init__(self) -> None:
        _check(self.dets >= 1, "search.dets", "at least 1 determinization", self.dets)
        _check(self.sims >= 1, "search.sims", "at least 1 simulation", self.sims)
        _check(self.leaves >= 1, "search.leaves", "at least 1 leaf in flight", self.leaves)
        _check(self.c_puct > 0, "search.c_puct", "a positive number", self.c_puct)
        _check(self.dirichlet_alpha > 0, "search.dirichlet_alpha", "a positive number", self.dirichlet_alpha)
        _check(0 <= self.dirichlet_eps <= 1, "search.dirichlet_eps", "a number in 0..1", self.dirichlet_eps)
        _check(self.temperature >= 0, "search.temperature", "0 or more", self.temperature)
        _check(self.policy_target in POLICY_TARGETS, "search.policy_target", " or ".join(POLICY_TARGETS),
               self.policy_target)  # fmt: skip
        _check(self.cache >= 0 and not self.cache & (self.cache - 1), "search.cache", "0 or a power of two",
               self.cache)  # fmt: skip


class NetworkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which network preset (blobnet.net.PRESETS) and numeric type."""

    preset: str = "small"
    dtype: str = "float32"  # float32, bfloat16 or float16 for inference

    def __post_init__(self) -> None:
        _check(self.preset in PRESETS, "network.preset", f"one of {sorted(PRESETS)}", self.preset)
        _check(
            self.dtype in ("float32", "bfloat16", "float16"),
            "network.dtype",
            "float32, bfloat16 or float16",
            self.dtype,
        )


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The in-process batcher."""

    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    max_batch: int = 4096  # most rows in one forward pass
    # Where a CPU forward runs: "inline", "auto" or "thread" (servers/backends.py says how). In-line keeps
    # which rows share a batch independent of timing, so a resumed run repeats the uninterrupted one.
    mode: str = "inline"
    # The CPU forward engine: "onednn" (float32 products on the AMX units, blobnet.dnnl), "onnx" (ONNX
    # Runtime), "eager" (PyTorch) or "compile" (torch.compile); bench/forward_engines.py compares them.
    # A CUDA device runs the model as it is and ignores it.
    engine: str = CPU_ENGINE
    # The first layer over each row's nonzero entries (blobnet.stem) on a CPU engine other than "compile".
    sparse: bool = CPU_SPARSE

    def __post_init__(self) -> None:
        _check(
            self.device == "cpu" or self.device.startswith("cuda"), "server.device", '"cpu" or "cuda[:N]"', self.device
        )
        _check(self.engine in ENGINE_NAMES, "server.engine", ", ".join(ENGINE_NAMES), self.engine)
        if self.engine == "onednn" and self.device == "cpu":
            _check(onednn_available(), "server.engine", f"onnx or eager here: {onednn_unavailable()}", self.engine)
        _check(not self.sparse or self.engine != "compile", "server.sparse", "false with engine compile", self.sparse)
        _check(self.max_batch >= 1, "server.max_batch", "at least 1", self.max_batch)
        _check(self.mode in ("auto", "inline", "thread"), "server.mode", "auto, inline or thread", self.mode)


class TrainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Self-play iterations and the learner."""

    iterations: int = 10
    rounds_per_iteration: int = 1000  # self-play rounds each iteration
    concurrency: int = 64  # games live at once in self-play, in all processes together
    workers: int = 1  # self-play processes: this one and workers - 1 helpers, each with its own batcher
    # Where self-play and the matches run: "local" (this process and helper processes, clients.pool)
    # or "ray" (workers Ray actors, on every machine of a Ray cluster; clients.raypool).
    backend: str = "local"
    # The Ray cluster of backend "ray": "" starts a Ray on this machine for the run; "auto" joins the
    # one `ray start` runs here; "HOST:PORT" (or "ray://HOST:PORT") joins that head node.
    ray_address: str = ""
    replay_size: int = 200_000  # rows kept in the replay buffer (two per searched decision, blobnet.replay)
    batch_size: int = 512  # learner minibatch
    steps_per_iteration: int = 200  # learner steps after each self-play phase
    lr: float = 1e-3
    lr_final: float = 1e-4  # cosine schedule from lr to lr_final over the run
    weight_decay: float = 1e-4
    value_weight: float = 1.0  # value loss weight against the policy cross-entropy
    seed: int = 0
    # Warm start: before the first iteration, learn from this many rounds of HeuristicBot play
    # (its moves as policy targets, the rounds' scores as value targets). 0 = pure self-play.
    warm_start_rounds: int = 0
    warm_start_steps: int = 0  # learner steps on that data before the first self-play
    # Bots (player specs: "heuristic", "ismcts:sims=1000,c=10") that take one seat each at every
    # self-play table, seats drawn each round (each game, in games mode); the network learns from
    # the other seats' decisions.
    opponents: list[str] = msgspec.field(default_factory=list)
    # Iteration checkpoints kept in the run's checkpoints/, the newest (each holds the optimizer's
    # state too: three times the network's size); 0 keeps every one. best.pt is kept whatever it is.
    keep_checkpoints: int = 0

    def __post_init__(self) -> None:
        for key in ("iterations", "rounds_per_iteration", "concurrency", "workers", "replay_size", "batch_size"):
            v = getattr(self, key)
            _check(v >= 1, f"train.{key}", "at least 1", v)
        _check(self.backend in ("local", "ray"), "train.backend", '"local" or "ray"', self.backend)
        valid = '"", "auto", "HOST:PORT" or "ray://HOST:PORT"'
        _check(_RAY_ADDRESS.fullmatch(self.ray_address) is not None, "train.ray_address", valid, self.ray_address)
        _check(not self.ray_address or self.backend == "ray", "train.ray_address", 'empty unless train.backend = "ray"',
               self.ray_address)  # fmt: skip
        _check(self.keep_checkpoints == 0 or self.keep_checkpoints >= 2, "train.keep_checkpoints",
               "0 (every one) or at least 2 (a damaged newest one leaves the one before to resume from)",
               self.keep_checkpoints)  # fmt: skip
        _check(self.steps_per_iteration >= 0, "train.steps_per_iteration", "0 or more", self.steps_per_iteration)
        _check(self.warm_start_rounds >= 0, "train.warm_start_rounds", "0 or more", self.warm_start_rounds)
        _check(self.warm_start_steps >= 0, "train.warm_start_steps", "0 or more", self.warm_start_steps)
        _check(self.lr > 0, "train.lr", "a positive number", self.lr)
        _check(0 < self.lr_final <= self.lr, "train.lr_final", "positive and at most train.lr", self.lr_final)
        _check(self.weight_decay >= 0, "train.weight_decay", "0 or more", self.weight_decay)
        _check(self.value_weight >= 0, "train.value_weight", "0 or more", self.value_weight)


class ArenaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Evaluation after each iteration and the promotion gate."""

    rounds: int = 400  # mirrored rounds per match
    players: int = 4
    cards: int = 5
    gate_margin: float = 0.0  # a candidate must beat best by more than this (points per round)
    gate_confidence: float = 0.95  # with this one-sided confidence
    # bot specs (random, heuristic, ismcts:sims=1000,c=10) the candidate meets after each iteration;
    # the closing matches meet them all
    baselines: list[str] = msgspec.field(default_factory=lambda: ["heuristic", "ismcts", "random"])
    final_rounds: int = 2000  # rounds of each closing match against the baselines
    concurrency: int = 128  # tables played at once

    def __post_init__(self) -> None:
        _check(self.rounds >= 2, "arena.rounds", "at least 2", self.rounds)
        table = f"{MIN_PLAYERS}..{MAX_PLAYERS}"
        _check(MIN_PLAYERS <= self.players <= MAX_PLAYERS, "arena.players", table, self.players)
        fits = 1 <= self.cards and self.cards * self.players <= N_CARDS
        _check(fits, "arena.cards", f"cards * players <= {N_CARDS}", self.cards)
        _check(0.5 <= self.gate_confidence < 1, "arena.gate_confidence", "in 0.5..1", self.gate_confidence)
        _check(self.final_rounds >= 0, "arena.final_rounds", "0 or more", self.final_rounds)
        _check(self.concurrency >= 1, "arena.concurrency", "at least 1", self.concurrency)


class RunConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    game: GameConfig = msgspec.field(default_factory=GameConfig)
    search: SearchConfig = msgspec.field(default_factory=SearchConfig)
    network: NetworkConfig = msgspec.field(default_factory=NetworkConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    train: TrainConfig = msgspec.field(default_factory=TrainConfig)
    arena: ArenaConfig = msgspec.field(default_factory=ArenaConfig)

    def __post_init__(self) -> None:
        # checked here, where both sections are seen, rather than when the batcher starts
        engine = self.server.engine
        float32_only = self.server.device == "cpu" and engine in FLOAT32_ENGINES
        valid = f'"eager" or "compile" with network.dtype = "{self.network.dtype}" ({engine} runs float32 only)'
        _check(self.network.dtype == "float32" or not float32_only, "server.engine", valid, engine)


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "game": GameConfig,
    "search": SearchConfig,
    "network": NetworkConfig,
    "server": ServerConfig,
    "train": TrainConfig,
    "arena": ArenaConfig,
}


def config_from_dict(data: dict[str, Any], source: str) -> RunConfig:
    """Validate a config dict; errors name the key as ``section.key`` and what would be valid."""
    try:
        return msgspec.convert(data, RunConfig)
    except msgspec.ValidationError as e:
        text = str(e)
        m = re.match(r"Object contains unknown field `(\w+)`(?: - at `\$\.(\w+)`)?", text)
        if m:
            section, key = m.group(2), m.group(1)
            if section is None:
                raise ConfigError(f"{source}: unknown section [{key}]; sections: {', '.join(_SECTIONS)}") from None
            valid = ", ".join(_SECTIONS[section].__struct_fields__)
            raise ConfigError(f"{source}: unknown key {section}.{key}; keys of [{section}]: {valid}") from None
        m = re.match(r"(.*) - at `\$\.([\w.\[\]]+)`", text)
        if m:
            what, where = m.group(1), m.group(2)
            # our own checks already name the key; msgspec's type errors name it in `where`
            raise ConfigError(f"{source}: {what if ' is not valid: ' in what else f'{where}: {what}'}") from None
        raise ConfigError(f"{source}: {text}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["search.sims=50", "game.players=[4,5]"]`` onto a config dict; values are TOML values."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: write section.key=value, e.g. search.sims=50")
        if section not in RunConfig.__struct_fields__:
            raise ConfigError(
                f"--set {item!r}: unknown section {section!r}; sections: {', '.join(RunConfig.__struct_fields__)}"
            )
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word such as cuda or games
        data.setdefault(section, {})[name] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:  # type: ignore[assignment]
    """Read a TOML file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(apply_overrides(data, list(overrides)), source)
