"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, checked on load.

A checkpoint is a plain dict of tensors and Python scalars, strings, lists and dicts, so the safe
unpickler reads it. ``FORMAT`` marks our files; anything else is refused as foreign. A save goes to
a temporary file in the same folder, is flushed to disk and renamed over the target, so a crash
or a full disk leaves the previous file whole.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from blobnet.encode import WIDTH
from blobnet.net import BlobNet, make_net

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "atomic_write_bytes"]

FORMAT = "blobnet-checkpoint-v1"


class CheckpointError(ValueError):
    """A file that is not a usable BlobNet checkpoint; the message says what is wrong."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, *, preset: str, model: dict[str, torch.Tensor], **extra: Any) -> None:
    """Save weights (``model``, a state_dict) of network ``preset`` plus ``extra`` fields
    (optimizer state, iteration, replay position, random states, ...)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "preset": preset, "model": model, **extra}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, *, preset: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint. ``preset``, when given, must match the file's network."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or garbage files
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a BlobNet checkpoint (no {FORMAT!r} marker): a foreign file")
    if preset is not None and data.get("preset") != preset:
        raise CheckpointError(f"{path} holds network preset {data.get('preset')!r}, not {preset!r}")
    model = data.get("model")
    stem = model.get("stem.weight") if isinstance(model, dict) else None
    if isinstance(stem, torch.Tensor) and stem.ndim == 2 and stem.shape[1] != WIDTH:
        raise CheckpointError(
            f"{path}: its network reads {stem.shape[1]} input features, but this version encodes a position "
            f"in {WIDTH} (docs/ENCODING.md): a checkpoint of an older version, to be trained again"
        )
    return data


def load_model(path: str | Path, *, preset: str | None = None) -> BlobNet:
    """The network stored in a checkpoint, in eval mode."""
    data = load_checkpoint(path, preset=preset)
    try:
        net = make_net(data["preset"])
        net.load_state_dict(data["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit network preset {data.get('preset')!r}: {e}") from None
    return net.eval()
