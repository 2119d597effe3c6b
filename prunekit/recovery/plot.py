"""The curves of a recovery run: the training objective per step and the held-out validation
loss; with a teacher, a second panel with the KL to the teacher and the top-1 agreement."""
from __future__ import annotations

from pathlib import Path

from ..plots import _pyplot, line_chart, save_figure


def _loss_series(history: dict) -> list:
    train, val = history.get("train", []), history.get("validation", [])
    series = []
    if train:
        series.append(([h["step"] for h in train], [h["loss"] for h in train],
                       dict(lw=1, alpha=0.8, label="train objective (per step)")))
    if val:
        series.append(([h["step"] for h in val], [h["loss"] for h in val], dict(marker="o", label="validation (held out)")))
    if val and "lm" in val[0]:
        series.append(([h["step"] for h in val], [h["lm"] for h in val],
                       dict(marker="s", ls="--", label="validation lm cross-entropy")))
    return series


def plot_losses(history: dict, path: str | Path, title: str) -> Path:
    val = [h for h in history.get("validation", []) if "kd" in h]
    if not val:
        return line_chart(path, title, "optimiser step", "cross-entropy (nats/token)", _loss_series(history))
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for xs, ys, style in _loss_series(history):
        left.plot(xs, ys, **style)
    left.set(xlabel="optimiser step", ylabel="nats/token", title="objective")
    steps = [h["step"] for h in val]
    right.plot(steps, [h["kd"] for h in val], marker="o", label="held-out T^2 KL(teacher || model)")
    right.set(xlabel="optimiser step", ylabel="nats/token", title="agreement with the teacher")
    twin = right.twinx()
    twin.plot(steps, [h["agreement"] for h in val], marker="s", color="tab:green", label="top-1 agreement")
    twin.set_ylabel("top-1 agreement")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    lines = right.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    right.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_local(local: dict, path: str | Path, title: str) -> Path:
    """Each changed block's normalised output error before and after local distillation."""
    rows = local["blocks"]
    xs = [r["block"] for r in rows]
    return line_chart(path, title, "block", "normalised output error", [
        (xs, [r["error_before"] for r in rows], dict(marker="o", label="before")),
        (xs, [r["error_after"] for r in rows], dict(marker="s", label="after local distillation"))])
