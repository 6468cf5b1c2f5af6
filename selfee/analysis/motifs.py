"""Unsupervised behaviour motifs: K discrete states from embeddings, with usage and transitions.

Frames are L2-normalized, optionally smoothed in time (centred window mean) and PCA-reduced, then
clustered with k-means. PCA and k-means are fitted on an even subsample (``max_fit`` frames) and
applied to every frame in blocks, so hours of video cost memory for one block at a time. States
are numbered by overall usage (state 0 is the most common).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from selfee._deps import require
from selfee.analysis import io, plots
from selfee.analysis.maps import even_rows, unit
from selfee.analysis.temporal import check_window, sliding_mode, window_mean
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")


@dataclass(frozen=True)
class MotifOptions:
    k: int = 10  # number of states
    pca_dim: int = 32  # 0: cluster the embeddings themselves
    smooth: int = 1  # odd window (frames) of the moving average applied before clustering; 1 = none
    state_smooth: int = 1  # odd window (frames) of the sliding mode applied to the state sequence; 1 = none
    max_fit: int = 200_000  # frames used to fit PCA and k-means
    seed: int = 0
    block: int = 65536

    def __post_init__(self):
        if self.k < 2:
            raise SelfeeError(f"k must be >= 2 states (got {self.k})")
        if self.pca_dim < 0:
            raise SelfeeError(f"pca_dim must be >= 0 (got {self.pca_dim})")
        check_window(self.smooth, "smoothing window")
        check_window(self.state_smooth, "state smoothing window")


@dataclass
class MotifModel:
    mean: np.ndarray | None  # PCA centre (None: no PCA)
    components: np.ndarray | None  # pca_dim x D
    centroids: np.ndarray | None = None  # K x d

    def reduce(self, x: np.ndarray, block: int = 65536) -> np.ndarray:
        """Unit rows, projected on the PCA components (in row blocks), float32."""
        d = x.shape[1] if self.components is None else len(self.components)
        out = np.empty((len(x), d), np.float32)
        for a in range(0, len(x), block):
            u = unit(x[a : a + block])
            out[a : a + block] = u if self.components is None else (u - self.mean) @ self.components.T
        return out

    def assign(self, z: np.ndarray, block: int = 65536) -> np.ndarray:
        """Nearest centroid of each reduced row, in blocks."""
        out = np.empty(len(z), np.int64)
        c2 = (self.centroids**2).sum(1)
        for a in range(0, len(z), block):
            out[a : a + block] = (c2[None, :] - 2 * z[a : a + block] @ self.centroids.T).argmin(1)
        return out


def fit_pca(sample: np.ndarray, opts: MotifOptions) -> MotifModel:
    """PCA of a sample of unit rows (no PCA when ``pca_dim`` is 0 or not smaller than the width)."""
    if not opts.pca_dim or opts.pca_dim >= sample.shape[1]:
        return MotifModel(None, None)
    decomp = require("sklearn.decomposition", "motifs")
    pca = decomp.PCA(n_components=min(opts.pca_dim, len(sample)), random_state=opts.seed).fit(unit(sample))
    return MotifModel(pca.mean_.astype(np.float32), pca.components_.astype(np.float32))


def fit_kmeans(z: np.ndarray, opts: MotifOptions) -> np.ndarray:
    if len(z) < opts.k:
        raise SelfeeError(f"{len(z)} frames cannot make {opts.k} states")
    cluster = require("sklearn.cluster", "motifs")
    return cluster.KMeans(n_clusters=opts.k, n_init=4, random_state=opts.seed).fit(z).cluster_centers_.astype(np.float32)


def reduced(model: MotifModel, x: np.ndarray, opts: MotifOptions) -> np.ndarray:
    """Reduced rows smoothed over ``opts.smooth`` frames (PCA is affine, so smoothing after it is the same)."""
    z = model.reduce(x, opts.block)
    return window_mean(z, opts.smooth) if opts.smooth > 1 else z


def usage(states: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(states, minlength=k) / max(len(states), 1)


def transitions(states: np.ndarray, k: int) -> np.ndarray:
    """Counts of changes from state i to state j (i != j) between consecutive frames."""
    a, b = states[:-1], states[1:]
    ch = a != b
    return np.bincount(a[ch] * k + b[ch], minlength=k * k).reshape(k, k)


def bouts(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(state, length in frames) of each run of equal states."""
    if not len(states):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(states)) + 1]
    return states[starts], np.diff(np.r_[starts, len(states)])


@dataclass
class MotifResult:
    out_dir: Path
    states: dict[str, np.ndarray]
    usage: dict[str, np.ndarray]
    transitions: np.ndarray
    errors: list[SelfeeError] = field(default_factory=list)


def find_motifs(embed_dir: str | Path, out_dir: str | Path, opts: MotifOptions = MotifOptions()) -> MotifResult:
    """Cluster every frame into ``opts.k`` states; write per-video states, usage, transitions and plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos, errors = io.load_group(embed_dir)
    total = sum(v.n for v in videos)
    per_video = [even_rows(v.n, max(1, round(opts.max_fit * v.n / total))) for v in videos]
    model = fit_pca(np.concatenate([np.asarray(v.load()[r], np.float32) for v, r in zip(videos, per_video)]), opts)
    z = {v.stem: reduced(model, v.load(), opts) for v in videos}
    model.centroids = fit_kmeans(np.concatenate([z[v.stem][r] for v, r in zip(videos, per_video)]), opts)
    raw = {v.stem: model.assign(z.pop(v.stem), opts.block) for v in videos}
    # Number states by usage so that state 0 is the most common, whatever k-means' order.
    order = np.argsort(-np.bincount(np.concatenate(list(raw.values())), minlength=opts.k), kind="stable")
    rank = np.empty(opts.k, np.int64)
    rank[order] = np.arange(opts.k)
    model.centroids = model.centroids[order]
    states = {}
    for v in videos:
        s = rank[raw[v.stem]]
        if opts.state_smooth > 1:
            s = sliding_mode(s, opts.state_smooth, opts.k)
        states[v.stem] = s
        io.write_table(out / "states" / f"{io.safe_name(v.stem)}.csv", ["frame", "time_s", "state"],
                       ([int(f), float(t), int(x)] for f, t, x in zip(v.frames, v.times, s)))
    k = opts.k
    names = [f"state_{i}" for i in range(k)]
    use = {stem: usage(s, k) for stem, s in states.items()}
    trans = sum(transitions(s, k) for s in states.values())
    trans_p = trans / np.maximum(trans.sum(axis=1, keepdims=True), 1)
    fps = {v.stem: 1.0 / np.median(np.diff(v.times)) if v.n > 1 else 1.0 for v in videos}
    io.write_table(out / "usage.csv", ["video", *names], ([stem, *map(float, u)] for stem, u in use.items()))
    io.write_table(out / "transitions.csv", ["from \\ to", *names], ([n, *map(float, r)] for n, r in zip(names, trans_p)))
    io.write_table(out / "transition_counts.csv", ["from \\ to", *names],
                   ([n, *map(int, r)] for n, r in zip(names, trans)))
    summary_rows = []
    all_states = np.concatenate(list(states.values()))
    for i in range(k):
        lens = np.concatenate([bouts(s)[1][bouts(s)[0] == i] / fps[stem] for stem, s in states.items()])
        summary_rows.append([names[i], int((all_states == i).sum()), float((all_states == i).mean()), len(lens),
                             float(lens.mean()) if len(lens) else 0.0])
    io.write_table(out / "states_summary.csv", ["state", "frames", "fraction", "bouts", "mean_bout_s"], summary_rows)
    np.savez(out / "model.npz", centroids=model.centroids,
             pca_mean=model.mean if model.mean is not None else np.zeros(0),
             pca_components=model.components if model.components is not None else np.zeros((0, 0)))
    with open(out / "motifs.json", "w") as fh:
        json.dump({"options": asdict(opts), "videos": list(states), "frames": int(len(all_states))}, fh, indent=2)

    plots.ethogram(out / "ethogram.png", [(v.stem, v.times, states[v.stem]) for v in videos[:24]], names,
                   f"{k} motifs (k-means)")
    stems = list(use)
    plots.matrix(out / "usage.png", np.array([use[s] for s in stems]), stems, names, "state usage (fraction of frames)",
                 "state", "video", vmin=0)
    plots.matrix(out / "transitions.png", trans_p, names, names, "transition probabilities between bouts", "to", "from",
                 vmin=0, vmax=1)
    log.info("%d states over %d frames of %d videos", k, len(all_states), len(videos))
    return MotifResult(out, states, use, trans_p, errors)
