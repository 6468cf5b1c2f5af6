"""2-D maps of embeddings (t-SNE, UMAP or PCA) coloured by label, video and time.

Frames are L2-normalized (cosine geometry, as everywhere in Selfee), subsampled evenly in time per
video to at most ``max_points`` in all, reduced with PCA to ``pca_dim`` dimensions before t-SNE /
UMAP, then embedded in 2-D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfee._deps import require
from selfee.analysis import io, plots
from selfee.analysis.classify import sort_classes
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

METHODS = ("tsne", "umap", "pca")


def even_rows(n: int, m: int) -> np.ndarray:
    """At most ``m`` row indices spread evenly over ``range(n)``."""
    if m >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def project_2d(x: np.ndarray, method: str, pca_dim: int = 50, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """n x D unit vectors -> n x 2."""
    if method not in METHODS:
        raise SelfeeError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    decomp = require("sklearn.decomposition", "maps")
    n, d = x.shape
    if method == "pca" or n < 5:
        return decomp.PCA(n_components=2, random_state=seed).fit_transform(x) if n >= 2 else np.zeros((n, 2))
    if d > pca_dim and n > pca_dim:
        x = decomp.PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    if method == "tsne":
        manifold = require("sklearn.manifold", "t-SNE maps")
        perp = min(perplexity, max(2.0, (n - 1) / 3))
        return manifold.TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)
    umap = require("umap", "UMAP maps")
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)


@dataclass
class MapResult:
    out_dir: Path
    xy: np.ndarray
    videos: np.ndarray
    frames: np.ndarray
    labels: np.ndarray
    errors: list[SelfeeError] = field(default_factory=list)


def make_map(
    embed_dir: str | Path,
    out_dir: str | Path,
    method: str = "tsne",
    labels_dir: str | Path | None = None,
    max_points: int = 20000,
    pca_dim: int = 50,
    perplexity: float = 30.0,
    seed: int = 0,
) -> MapResult:
    """Embed a subsample of all frames in 2-D; write ``map.csv`` and PNGs coloured by label, video, time."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos, errors = io.load_group(embed_dir)
    total = sum(v.n for v in videos)
    xs, names, frames, times, rel, labels = [], [], [], [], [], []
    for v in videos:
        rows = even_rows(v.n, max(1, round(max_points * v.n / total)))
        xs.append(unit(v.load()[rows]))
        names.append(np.full(len(rows), v.stem, dtype=object))
        frames.append(v.frames[rows])
        times.append(v.times[rows])
        rel.append(v.times[rows] / max(v.times[-1], 1e-9))
        lab = np.full(len(rows), "", dtype=object)
        if labels_dir is not None:
            try:
                path = io.find_label_file(Path(labels_dir), v.stem)
                if path is not None:
                    lab = io.read_labels(path).for_video(v)[rows]
            except SelfeeError as exc:
                log.error("%s", exc)
                errors.append(exc)
        labels.append(lab)
    x = np.concatenate(xs)
    log.info("%s map of %d of %d frames from %d videos", method, len(x), total, len(videos))
    xy = project_2d(x, method, pca_dim, perplexity, seed)
    names, frames, times, rel, labels = map(np.concatenate, (names, frames, times, rel, labels))
    io.write_table(out / "map.csv", ["video", "frame", "time_s", "x", "y", "label"],
                   ([n, int(f), float(t), float(a), float(b), lab]
                    for n, f, t, (a, b), lab in zip(names, frames, times, xy, labels)))
    title = f"{method.upper()} of {len(x)} frames"
    scatter_categorical(out / "map_by_video.png", xy, names, f"{title}, by video")
    scatter_continuous(out / "map_by_time.png", xy, times, f"{title}, by time", "time (s)")
    if len(videos) > 1:
        scatter_continuous(out / "map_by_relative_time.png", xy, rel, f"{title}, by time within video",
                           "fraction of the video")
    if labels_dir is not None and np.any(labels != ""):
        scatter_categorical(out / "map_by_label.png", xy, labels, f"{title}, by label")
    return MapResult(out, xy, names, frames, labels, errors)


def scatter_categorical(path: Path, xy: np.ndarray, cats: np.ndarray, title: str, max_legend: int = 30) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    order = sort_classes([c for c in set(cats) if c != ""])
    none = cats == ""
    if none.any():
        ax.scatter(xy[none, 0], xy[none, 1], s=2, color="#cccccc", label="(no label)", rasterized=True)
    for c, col in zip(order, plots.colors(len(order))):
        m = cats == c
        ax.scatter(xy[m, 0], xy[m, 1], s=2, color=col, label=str(c), rasterized=True)
    if len(order) <= max_legend:
        ax.legend(markerscale=5, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return plots.save(fig, path)


def scatter_continuous(path: Path, xy: np.ndarray, values: np.ndarray, title: str, label: str) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=2, c=values, cmap="viridis", rasterized=True)
    fig.colorbar(sc, ax=ax, label=label)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return plots.save(fig, path)
