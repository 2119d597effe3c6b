"""The loss curve of a recovery run: train loss per step and the held-out validation loss."""
from __future__ import annotations

from pathlib import Path

from ..plots import line_chart


def plot_losses(history: dict, path: str | Path, title: str) -> Path:
    train, val = history.get("train", []), history.get("validation", [])
    series = []
    if train:
        series.append(([h["step"] for h in train], [h["loss"] for h in train],
                       dict(lw=1, alpha=0.8, label="train (per step)")))
    if val:
        series.append(([h["step"] for h in val], [h["loss"] for h in val], dict(marker="o", label="validation (held out)")))
    return line_chart(path, title, "optimiser step", "cross-entropy (nats/token)", series)
