"""The evolutionary search history as a figure (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

from ..plots import _pyplot, save_figure


def plot_evolution(history: list[dict], path: str | Path, title: str, fitness: str = "kl",
                   initial: float | None = None, final: float | None = None) -> Path:
    """Winner fitness per generation (each on that generation's fresh last-stage minibatch), the
    generations where the parent was replaced, the best genome so far on one fixed minibatch (the
    one returned), and optionally the start and end genomes scored on that minibatch."""
    plt = _pyplot()
    rows = [h for h in history if h.get("evaluated")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot([h["generation"] for h in rows], [h["best"] for h in rows], lw=1, label="parent after selection")
    changed = [h for h in rows if h["changed"]]
    ax.scatter([h["generation"] for h in changed], [h["best"] for h in changed], s=12, color="C3", zorder=3,
               label="parent replaced")
    fixed = [h for h in rows if h.get("fixed") is not None]      # reports from before the guard lack it
    if fixed:
        ax.step([h["generation"] for h in fixed], [h["fixed"] for h in fixed], where="post", lw=1, color="C2",
                label="best so far, fixed minibatch (the result)")
    if initial is not None:
        ax.axhline(initial, color="grey", ls=":", label=f"start, fixed minibatch ({initial:.4g})")
    if final is not None:
        ax.axhline(final, color="C2", ls="--", label=f"result, fixed minibatch ({final:.4g})")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness: mean KL to dense (nats/token)" if fitness == "kl" else "fitness: calibration perplexity")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
