"""PNG figures drawn from report data (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_convergence(history: dict, path: str | Path, title: str) -> Path:
    """Relative FFN reconstruction error ||Y - FFN'(X)||^2/||Y||^2 per outer iteration, one line per block."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    blocks = sorted(history, key=int)
    cmap = plt.get_cmap("viridis", max(len(blocks), 2))
    for k, b in enumerate(blocks):
        errs = history[b]
        ax.plot(range(1, len(errs) + 1), errs, marker="o", ms=3, lw=1, color=cmap(k), label=f"block {b}")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("log")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("relative FFN reconstruction error")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(blocks) <= 16:
        ax.legend(fontsize=7, ncol=2)
    else:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(int(blocks[0]), int(blocks[-1])))
        fig.colorbar(sm, ax=ax, label="block")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
