"""Checkpoints and the replay buffer: atomic writes, clear refusals, exact restore."""

from __future__ import annotations

import os
from dataclasses import astuple
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from blobnet.compact import SCALAR_COLS
from blobnet.encode import WIDTH
from blobnet.net import make_net
from blobnet.replay import Examples, ReplayBuffer


def saved(tmp_path: Path, preset: str = "tiny") -> Path:
    path = tmp_path / "c.pt"
    save_checkpoint(path, preset=preset, model=make_net(preset, seed=1).state_dict(), iteration=3)
    return path


def test_round_trip_loads_with_the_safe_unpickler(tmp_path):
    path = saved(tmp_path)
    data = torch.load(path, weights_only=True)
    assert data["iteration"] == 3
    net = load_model(path)
    ref = make_net("tiny", seed=1)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)


def test_truncated_file_is_refused_by_name(tmp_path):
    path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_garbage_file_is_refused_in_one_line_without_torch_advice(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.pt is not a BlobNet checkpoint: not a file written by") as e:
        load_model(path)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)


def test_a_file_of_python_objects_is_refused_in_one_line_without_torch_advice(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"format": "blobnet-checkpoint-v1", "model": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="objects.pt is not a BlobNet checkpoint: it holds Python objects") as e:
        load_model(path)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": make_net("tiny").state_dict()}, path)
    with pytest.raises(CheckpointError, match="foreign"):
        load_model(path)


def test_other_preset_is_refused_naming_both(tmp_path):
    path = saved(tmp_path, "tiny")
    with pytest.raises(CheckpointError, match="'tiny', not 'small'"):
        load_checkpoint(path, preset="small")


def test_a_checkpoint_of_another_input_encoding_is_refused_naming_both_widths(tmp_path):
    path = tmp_path / "old.pt"
    weights = make_net("tiny", seed=1).state_dict()
    weights["stem.weight"] = weights["stem.weight"][:, :-8].clone()  # an encoding without a field
    save_checkpoint(path, preset="tiny", model=weights)
    with pytest.raises(CheckpointError, match=f"reads {WIDTH - 8} input features, .* in {WIDTH}"):
        load_model(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = saved(tmp_path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, preset="tiny", model=make_net("tiny", seed=2).state_dict())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def examples(n: int, tag: float) -> Examples:
    features = np.zeros((n, WIDTH), np.float32)
    features[:, SCALAR_COLS] = tag  # the replay keeps encoded positions: flags 0/1, scalars any number
    features[:, :: 7 + int(8 * tag)] = 1.0
    ex = Examples(
        features,
        np.ones((n, N_ACTIONS), bool),
        np.full((n, N_ACTIONS), 1 / N_ACTIONS, np.float32),
        np.full((n, N_VALUES), tag, np.float32),
        np.arange(N_VALUES) < np.arange(n)[:, None] % 6 + 3,  # tables of 3 to 8
    )
    return ex


def test_replay_keeps_the_newest_capacity_examples_and_restores_them_exactly(tmp_path):
    buf = ReplayBuffer(tmp_path, capacity=25)
    for it in range(1, 5):
        buf.add(it, examples(10, it / 8))
    data = buf.arrays()
    assert len(data) == 25
    assert data.value[0, 0] == pytest.approx(2 / 8) and data.value[-1, 0] == pytest.approx(4 / 8)
    again = ReplayBuffer(tmp_path, capacity=25)
    again.restore(upto=4)
    for a, b in zip(astuple(again.arrays().take(slice(None))), astuple(data.take(slice(None))), strict=True):
        np.testing.assert_array_equal(a, b)
    # a segment of an interrupted later iteration is dropped on restore
    buf.add(5, examples(10, 5 / 8))
    third = ReplayBuffer(tmp_path, capacity=25)
    third.restore(upto=4)
    np.testing.assert_array_equal(third.arrays().value, data.value)
    assert not (tmp_path / "iter_000005.npz").exists()


def test_replay_rows_are_kept_packed_and_come_back_exact(tmp_path):
    ex = examples(12, 3 / 8)
    ex.features[:, SCALAR_COLS[0]] = np.linspace(-1, 1, 12, dtype=np.float32) / 3  # not a float16 number
    ex.legal[5] = False  # a stored example needs no legal id
    buf = ReplayBuffer(tmp_path, capacity=100)
    buf.add(1, ex)
    assert buf.arrays().rows.bits.nbytes + buf.arrays().rows.scalars.nbytes < ex.features.nbytes / 9
    again = ReplayBuffer(tmp_path, capacity=100)
    again.restore(upto=1)
    for data in (buf.arrays(), again.arrays()):
        idx = np.array([11, 0, 5, 5])
        for a, b in zip(astuple(data.take(idx)), astuple(ex.take(idx)), strict=True):
            np.testing.assert_array_equal(a, b)
    bad = examples(2, 1 / 8)
    bad.features[1, 0] = 0.5  # a card of the hand, half held
    with pytest.raises(ValueError, match=r"row 1: feature 0 \(field 'hand'\) is 0.5"):
        buf.add(2, bad)
    assert not (tmp_path / "iter_000002.npz").exists()


def test_a_replay_segment_written_before_packing_loads_and_a_foreign_one_is_refused(tmp_path):
    ex = examples(6, 2 / 8)
    old = {"features": ex.features.astype(np.float16), "legal": ex.legal, "policy": ex.policy, "value": ex.value}
    np.savez(tmp_path / "iter_000001.npz", **old, value_mask=ex.value_mask)
    buf = ReplayBuffer(tmp_path, capacity=100)
    buf.restore(upto=1)
    got = buf.arrays().take(slice(None))
    np.testing.assert_array_equal(got.features, ex.features.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got.legal, ex.legal)
    np.testing.assert_array_equal(got.policy, ex.policy)
    np.savez(tmp_path / "iter_000002.npz", **old)
    with pytest.raises(ValueError, match=r"iter_000002.npz holds .*neither packed rows .* \(it lacks value_mask\)"):
        buf.restore(upto=2)
    np.savez(
        tmp_path / "iter_000002.npz", **old | {"features": np.zeros((6, 600), np.float16)}, value_mask=ex.value_mask
    )
    with pytest.raises(ValueError, match=r"rows of \(600,\) features .* written by another version"):
        buf.restore(upto=2)
