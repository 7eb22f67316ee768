"""Configuration: TOML, overrides, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobnet import config
from blobnet.config import ConfigError, RunConfig, load_config
from blobnet.dnnl import available as onednn_available
from blobnet.dnnl import unavailable_reason as onednn_unavailable
from clients.players import make_bot

ROOT = Path(__file__).resolve().parents[1]
NEEDS_ONEDNN = pytest.mark.skipif(not onednn_available(), reason=f"engine onednn cannot run: {onednn_unavailable()}")


def test_shipped_configs_load():
    cpu = load_config(ROOT / "configs" / "default.toml")
    gpu = load_config(ROOT / "configs" / "gpu.toml")
    assert cpu.server.device == "cpu" and gpu.server.device == "cuda"
    assert load_config(None) == RunConfig()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_names_baselines_that_exist(path: Path) -> None:
    for spec in load_config(path).arena.baselines:
        assert make_bot(spec).act is not None


def test_override_replaces_one_key_and_keeps_the_rest():
    base = load_config(ROOT / "configs" / "default.toml")
    overrides = ["search.sims=50", "game.players=[3, 5]", "server.device=cuda"]
    cfg = load_config(ROOT / "configs" / "default.toml", overrides)
    assert cfg.search.sims == 50 and cfg.game.players == [3, 5] and cfg.server.device == "cuda"
    assert cfg.search.dets == base.search.dets and cfg.train == base.train


@pytest.mark.parametrize(
    "override, named",
    [
        (["search.sims=0"], "search.sims"),
        (["search.dets=-1"], "search.dets"),
        (["train.concurrency=0"], "train.concurrency"),
        (["game.players=[9]"], "game.players"),
        (["game.cards=[14]"], "game.cards"),
        (["search.foo=1"], "search.foo"),
        (["train.lr=fast"], "train.lr"),
        (["nosuch.key=1"], "nosuch"),
        (["network.preset=huge"], "network.preset"),
        (["searchsims=3"], "section.key=value"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(ROOT / "configs" / "default.toml", override)


@pytest.mark.parametrize("engine", [pytest.param("onednn", marks=NEEDS_ONEDNN), "onnx"])
def test_a_low_precision_network_on_a_cpu_needs_an_engine_that_runs_it(engine):
    default = ROOT / "configs" / "default.toml"
    expected = rf"server\.engine = '{engine}' is not valid: \"eager\" or \"compile\" with network\.dtype = \"bfloat16\""
    with pytest.raises(ConfigError, match=expected):
        load_config(default, ["network.dtype=bfloat16", f"server.engine={engine}"])
    assert load_config(default, ["network.dtype=bfloat16", "server.engine=eager"]).server.engine == "eager"
    on_gpu = load_config(default, ["network.dtype=bfloat16", "server.device=cuda", f"server.engine={engine}"])
    assert on_gpu.network.dtype == "bfloat16" and on_gpu.server.engine == engine  # a GPU runs the model as it is


def test_engine_onednn_where_it_cannot_run_is_refused_saying_why(monkeypatch):
    monkeypatch.setattr(config, "onednn_available", lambda: False)
    monkeypatch.setattr(config, "onednn_unavailable", lambda: "this CPU has no AMX bf16 units")
    expected = r"server\.engine = 'onednn' is not valid: onnx or eager here: this CPU has no AMX bf16 units"
    with pytest.raises(ConfigError, match=expected):
        load_config(ROOT / "configs" / "default.toml", ["server.engine=onednn"])
    assert load_config(ROOT / "configs" / "default.toml", ["server.engine=onnx"]).server.engine == "onnx"


def test_unknown_key_in_a_file_lists_the_valid_ones(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[search]\nsimulations = 10\n")
    with pytest.raises(ConfigError, match=r"search\.simulations.*dets, sims"):
        load_config(path)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[search\nsims = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
