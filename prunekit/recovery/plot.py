"""The loss curve of a recovery run: train loss per step and the held-out validation loss."""
from __future__ import annotations

from pathlib import Path

from ..plots import _pyplot


def plot_losses(history: dict, path: str | Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    train, val = history.get("train", []), history.get("validation", [])
    if train:
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], lw=1, alpha=0.8, label="train (per step)")
    if val:
        ax.plot([h["step"] for h in val], [h["loss"] for h in val], marker="o", label="validation (held out)")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
