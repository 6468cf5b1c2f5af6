"""Figures shared by the analyses (matplotlib with the Agg backend, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfee._deps import require


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    mpl = require("matplotlib", "plots")
    mpl.use("Agg", force=True)
    return require("matplotlib.pyplot", "plots")


def colors(n: int) -> list:
    """``n`` distinct colours (tab10, tab20, then a sampled rainbow)."""
    plt = pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("gist_rainbow")(i / max(n - 1, 1)) for i in range(n)]


def state_cmap(n: int):
    """A categorical colormap of ``n`` states; masked values (no state) are white."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(colors(max(n, 1))).with_extremes(bad="white")


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def ethogram(
    path: Path,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    classes: list[str],
    title: str = "",
    xlabel: str = "time (s)",
) -> Path:
    """A raster of per-frame states: one row per (name, times, class index; -1 = none) sequence."""
    plt = pyplot()
    cmap = state_cmap(len(classes))
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.3))
    for r, (_, t, c) in enumerate(rows):
        if len(t) == 0:
            continue
        c = np.ma.masked_less(np.asarray(c, dtype=float), 0)
        # Each frame spans until the next one; pcolormesh keeps gaps and uneven frame times honest.
        dt = np.median(np.diff(t)) if len(t) > 1 else 1.0
        edges = np.append(t, t[-1] + dt)
        ax.pcolormesh(edges, [r - 0.4, r + 0.4], c[None, :], cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5,
                      shading="flat", rasterized=True)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(classes))]
    ax.legend(handles, classes, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return save(fig, path)


def matrix(path: Path, m: np.ndarray, row_names: list[str], col_names: list[str], title: str, xlabel: str,
           ylabel: str, fmt: str = "{:.2f}", vmin=None, vmax=None, cmap: str = "viridis") -> Path:
    """A labelled heat map with its values written in the cells (when it is small enough to read)."""
    plt = pyplot()
    n, m_ = m.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * m_ + 2.5), max(3.5, 0.5 * n + 1.5)))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(m_))
    ax.set_xticklabels(col_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels(row_names, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n * m_ <= 400:
        finite = m[np.isfinite(m)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0
        for i in range(n):
            for j in range(m_):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < mid else "black")
    return save(fig, path)
