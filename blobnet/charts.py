"""The training charts, redrawn from the metrics rows after every iteration (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blobnet.files import atomic_write_bytes

__all__ = ["draw_training_charts"]


def _floats(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in rows:
        v = r.get(key, "")
        out.append(float(v) if v not in ("", None) else float("nan"))
    return out


def _save(plt: Any, fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def draw_training_charts(rows: Sequence[dict[str, Any]], out_dir: Path) -> None:
    """``loss.png``, ``elo.png`` and ``baselines.png`` in ``out_dir``."""
    if not rows:
        return
    # matplotlib is heavy (about half a second) and only a training run's charts need it: loaded here.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = _floats(rows, "iteration")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(it, _floats(rows, "policy_loss"), marker="o", label="policy cross-entropy")
    ax.set_xlabel("iteration")
    ax.set_ylabel("policy loss")
    ax2 = ax.twinx()
    ax2.plot(it, _floats(rows, "value_loss"), marker="s", color="tab:red", label="value MSE")
    ax2.set_ylabel("value loss")
    fig.legend(loc="upper right")
    ax.set_title("Learner losses")
    fig.tight_layout()
    _save(plt, fig, out_dir / "loss.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(it, _floats(rows, "elo"), marker="o")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Elo (ladder fit)")
    ax.set_title("Elo of each iteration's network")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, out_dir / "elo.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("heuristic", "vs HeuristicBot"),
        ("random", "vs RandomBot"),
        ("ismcts", "vs IS-MCTS"),
        ("best", "vs best.pt"),
    ):
        diff = _floats(rows, f"vs_{key}_diff")
        if all(d != d for d in diff):  # all NaN: that opponent was not played
            continue
        lo, hi = _floats(rows, f"vs_{key}_lo"), _floats(rows, f"vs_{key}_hi")
        ax.errorbar(it, diff, yerr=[[d - a for d, a in zip(diff, lo)], [b - d for d, b in zip(diff, hi)]],
                    marker="o", capsize=3, label=label)  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("score difference (points per round, 95% CI)")
    ax.set_title("The network against the baselines")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, out_dir / "baselines.png")
