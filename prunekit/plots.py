"""PNG figures drawn from report data (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write and close a figure (closed: a long run draws many)."""
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return Path(path)

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
    return save_figure(fig, path)


def plot_cka(matrix, path: str | Path, title: str) -> Path:
    """Heat map of layer-by-layer CKA (layer i's output against layer j's)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 5.4), dpi=120)
    im = ax.imshow(matrix, cmap="magma", vmin=0, vmax=1, origin="lower")
    ax.set_xlabel("layer (output of block)")
    ax.set_ylabel("layer (output of block)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="linear CKA")
    return save_figure(fig, path)


def plot_layer_scores(scores: dict, path: str | Path, title: str) -> Path:
    """Per-layer bars, one panel per score (e.g. block influence, adjacent-layer cosine)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(scores), 1, figsize=(7, 2.4 * len(scores)), dpi=120, sharex=True, squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], scores.items()):
        ax.bar(range(len(values)), values, color="tab:blue")
        ax.set_ylabel(name, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("block")
    axes[0, 0].set_title(title, fontsize=10)
    return save_figure(fig, path)


def line_chart(path: str | Path, title: str, xlabel: str, ylabel: str, series) -> Path:
    """A line chart with integer x ticks: `series` is a list of (xs, ys, matplotlib style kwargs)
    and, for horizontal reference lines, (None, y, style)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for xs, ys, style in series:
        if xs is None:
            ax.axhline(ys, **style)
        else:
            ax.plot(xs, ys, **style)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_search_history(history: list, path: str | Path, title: str, fitness: str = "ppl") -> Path:
    """Best and mean fitness per generation of the width search (with stages: each generation's
    best on its own last-stage windows, the mean of its children on their first-stage windows)."""
    rows = [h for h in history if h["generation"] != "init"]
    init = next((h for h in history if h["generation"] == "init"), None)
    series = []
    if rows:
        means = [h for h in rows if h["mean"] is not None]
        series += [([h["generation"] for h in rows], [h["best"] for h in rows],
                    dict(marker="o", label="best (survivors)")),
                   ([h["generation"] for h in means], [h["mean"] for h in means],
                    dict(marker="s", ls="--", label="mean of the generation's candidates"))]
    if init:
        series.append((None, init["best"], dict(color="grey", ls=":", label="importance initialisation")))
    ylabel = "fitness: mean KL to dense (nats/token)" if fitness == "kl" else "fitness perplexity"
    return line_chart(path, title, "generation", ylabel, series)
