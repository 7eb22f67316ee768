"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, checked on load.

A checkpoint is a plain dict of tensors and Python scalars, strings, lists and dicts, so the safe
unpickler reads it. ``FORMAT`` marks our files; anything else is refused as foreign. A save goes to
a temporary file in the same folder, is flushed to disk and renamed over the target, so a crash
or a full disk leaves the previous file whole.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from blobnet.encode import WIDTH
from blobnet.files import atomic_write_bytes
from blobnet.net import BlobNet, make_net

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model"]

FORMAT = "blobnet-checkpoint-v1"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive; every one begins with a local file header


class CheckpointError(ValueError):
    """A file that is not a usable BlobNet checkpoint; the message says what is wrong."""


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
    with path.open("rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            raise CheckpointError(f"{path} is not a BlobNet checkpoint: not a file written by torch.save")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message would advise weights_only=False: never for a foreign file
        raise CheckpointError(
            f"{path} is not a BlobNet checkpoint: it holds Python objects that a weights-only load refuses"
        ) from None
    except Exception as e:  # torch raises many types for truncated or damaged archives
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt): {why}") from None
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
