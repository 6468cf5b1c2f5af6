"""Time-series comparison of videos by dynamic time warping (DTW) of their embedding sequences.

Each video becomes a sequence of unit vectors (the mean embedding of each ``bin_s``-second bin,
renormalized; per frame when ``bin_s`` is 0). Two sequences are aligned with the symmetric DTW
recursion (Sakoe & Chiba 1978; "symmetric2": a diagonal step costs twice the local cosine
distance), optionally inside a Sakoe-Chiba band, and their distance is the alignment cost divided
by ``n + m``. The recursion runs one row at a time with a cumulative-minimum trick, and the local
cost is computed in row blocks, so memory is O(block x m), never n x m.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from selfee.analysis import io, plots
from selfee.analysis.maps import unit
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")


@dataclass(frozen=True)
class CompareOptions:
    bin_s: float = 1.0  # seconds per bin (0: every frame)
    band: float | None = None  # Sakoe-Chiba band half-width as a fraction of the longer sequence (None: full)
    permutations: int = 10_000  # for the between-groups test
    seed: int = 0
    block_rows: int = 1024

    def __post_init__(self):
        if self.bin_s < 0:
            raise SelfeeError(f"bin_s must be >= 0 (got {self.bin_s})")
        if self.band is not None and not 0 < self.band <= 1:
            raise SelfeeError(f"band must be in (0, 1] (got {self.band})")


def binned(x: np.ndarray, times: np.ndarray, bin_s: float, block: int = 65536) -> np.ndarray:
    """Unit mean of the unit rows in each time bin (empty bins are skipped); per row when ``bin_s`` is 0."""
    if bin_s <= 0:
        return unit(x)
    b = np.floor((times - times[0]) / bin_s).astype(np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(b)) + 1]  # rows are in time order, so each bin is a run
    bounds = np.r_[starts, len(b)]
    out = np.empty((len(starts), x.shape[1]), np.float32)
    i = 0
    while i < len(starts):
        j = max(i + 1, int(np.searchsorted(bounds, bounds[i] + block, side="right")) - 1)  # whole bins, ~block rows
        j = min(j, len(starts))
        rows = unit(x[bounds[i] : bounds[j]])
        out[i:j] = np.add.reduceat(rows, bounds[i:j] - bounds[i], axis=0)
        i = j
    return unit(out)


def dtw_distance(a: np.ndarray, b: np.ndarray, band: float | None = None, block_rows: int = 1024) -> float:
    """Normalized symmetric DTW distance between two sequences of unit vectors (cosine local cost)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise SelfeeError("DTW needs two non-empty sequences")
    r = None if band is None else max(int(np.ceil(band * max(n, m))), abs(n - m) + 1)
    inf = np.inf
    prev = np.full(m + 1, inf)  # D[i-1, j-1] for j = 0..m, with D[-1, -1] = 0
    prev[0] = 0.0
    bt = np.asarray(b, np.float64)
    for i0 in range(0, n, block_rows):
        cost_block = 1.0 - np.asarray(a[i0 : i0 + block_rows], np.float64) @ bt.T  # rows x m
        for ii, c in enumerate(cost_block):
            i = i0 + ii
            lo, hi = 0, m
            if r is not None:
                centre = i * (m - 1) / max(n - 1, 1)
                lo, hi = max(0, int(np.floor(centre - r))), min(m, int(np.ceil(centre + r)) + 1)
            cur = np.full(m + 1, inf)
            cc = np.maximum(c[lo:hi], 0.0)
            # Cells entered from the previous row: diagonally (2c) or vertically (c).
            enter = np.minimum(prev[lo : hi] + 2 * cc, prev[lo + 1 : hi + 1] + cc)
            if i == 0:
                enter = np.full(hi - lo, inf)
                if lo == 0:
                    enter[0] = cc[0]  # D[0, 0] = c(0, 0)
            # Horizontal moves within the row: D[j] = min_k<=j (enter[k] + S[j] - S[k]), S = cumsum(c).
            s = np.cumsum(cc)
            cur[lo + 1 : hi + 1] = s + np.minimum.accumulate(enter - s)
            prev = cur
            prev[0] = inf
    d = prev[m]
    if not np.isfinite(d):
        raise SelfeeError("no DTW path inside the band; widen --band")
    return float(d / (n + m))


def dtw_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook O(n m) double loop over the full cost matrix (for tests on small inputs)."""
    n, m = len(a), len(b)
    c = 1.0 - np.asarray(a, np.float64) @ np.asarray(b, np.float64).T
    c = np.maximum(c, 0.0)
    d = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                d[i, j] = c[0, 0]
                continue
            best = np.inf
            if i > 0 and j > 0:
                best = min(best, d[i - 1, j - 1] + 2 * c[i, j])
            if i > 0:
                best = min(best, d[i - 1, j] + c[i, j])
            if j > 0:
                best = min(best, d[i, j - 1] + c[i, j])
            d[i, j] = best
    return float(d[-1, -1] / (n + m))


def distance_matrix(seqs: list[np.ndarray], opts: CompareOptions) -> np.ndarray:
    n = len(seqs)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = dtw_distance(seqs[i], seqs[j], opts.band, opts.block_rows)
    return d


def group_test(d: np.ndarray, groups: np.ndarray, permutations: int, seed: int = 0) -> dict:
    """Mean within- vs between-group distance, and a permutation p-value for 'between > within'."""
    iu = np.triu_indices(len(d), 1)
    vals = d[iu]

    def stat(g):
        same = g[iu[0]] == g[iu[1]]
        if same.all() or not same.any():
            return np.nan, np.nan
        return vals[same].mean(), vals[~same].mean()

    within, between = stat(groups)
    out = {"mean_within": float(within), "mean_between": float(between), "p_value": None}
    if np.isfinite(within) and permutations > 0:
        rng = np.random.default_rng(seed)
        obs = between - within
        hits = 0
        for _ in range(permutations):
            w, b = stat(rng.permutation(groups))
            hits += (b - w) >= obs - 1e-12
        out["p_value"] = (hits + 1) / (permutations + 1)
        out["permutations"] = permutations
    return out


def classical_mds(d: np.ndarray) -> np.ndarray:
    """2-D coordinates whose distances approximate ``d`` (Torgerson scaling)."""
    n = len(d)
    if n < 3:
        return np.c_[np.arange(n, dtype=float), np.zeros(n)]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d**2) @ j
    w, v = np.linalg.eigh(b)
    top = np.argsort(w)[::-1][:2]
    return v[:, top] * np.sqrt(np.maximum(w[top], 0))


@dataclass
class CompareResult:
    out_dir: Path
    names: list[str]
    groups: list[str]
    distances: np.ndarray
    test: dict
    errors: list[SelfeeError] = field(default_factory=list)


def compare(embed_dirs: list[str | Path], out_dir: str | Path, opts: CompareOptions = CompareOptions()) -> CompareResult:
    """DTW distances between all videos of the given directories (each directory is a group)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos, errors = [], []
    for d in embed_dirs:
        v, e = io.list_videos(d)
        videos += v
        errors += e
    if len(videos) < 2:
        raise SelfeeError("comparison needs at least two videos")
    io.check_dims(videos)
    names = [v.stem if len(embed_dirs) == 1 else f"{v.group}/{v.stem}" for v in videos]
    if len(set(names)) < len(names):
        raise SelfeeError("two videos have the same name; give each group its own directory name")
    groups = np.array([v.group for v in videos], dtype=object)
    seqs = [binned(v.load(), v.times, opts.bin_s) for v in videos]
    log.info("DTW between %d videos (%s steps each)", len(seqs), "/".join(str(len(s)) for s in seqs[:6]))
    d = distance_matrix(seqs, opts)
    test = group_test(d, groups, opts.permutations, opts.seed) if len(set(groups)) > 1 else {}

    io.write_table(out / "dtw_distances.csv", ["video", *names], ([n, *map(float, row)] for n, row in zip(names, d)))
    near_rows = []
    for i, n in enumerate(names):
        row = np.where(np.arange(len(names)) == i, np.inf, d[i])
        j = int(row.argmin())
        near_rows.append([n, groups[i], names[j], groups[j], float(d[i, j])])
    io.write_table(out / "nearest.csv", ["video", "group", "nearest", "nearest_group", "distance"], near_rows)
    with open(out / "compare.json", "w") as fh:
        json.dump({"options": asdict(opts), "videos": names, "groups": list(groups), "steps": [len(s) for s in seqs],
                   "group_test": test}, fh, indent=2)
    plots.matrix(out / "dtw_distances.png", d, names, names, "DTW distance between videos", "video", "video",
                 fmt="{:.3f}", cmap="magma")
    plot_mds(out / "dtw_mds.png", classical_mds(d), names, groups)
    return CompareResult(out, names, list(groups), d, test, errors)


def plot_mds(path: Path, xy: np.ndarray, names: list[str], groups: np.ndarray) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    uniq = sorted(set(groups))
    for g, col in zip(uniq, plots.colors(len(uniq))):
        m = groups == g
        ax.scatter(xy[m, 0], xy[m, 1], color=col, label=g, s=30)
    for (x, y), n in zip(xy, names):
        ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=8)
    ax.set_title("videos placed by DTW distance (classical MDS)")
    return plots.save(fig, path)
