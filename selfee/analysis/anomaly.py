"""Anomaly scores of frames against a reference group (Selfee, bioRxiv 2021.12.24.474120).

For a query frame x of video V, the score is

    min over reference frames r of d(x, r)  -  min over frames y of V with |t(y) - t(x)| > w of d(x, y)

with d the cosine distance: a frame is anomalous when nothing in the reference group looks like it,
although the animal does similar things at other times of its own video (which discounts frames
that are merely rare). The threshold is the largest score in a control group (or a chosen
quantile of its scores). Both minima are computed in chunks (see :mod:`selfee.analysis.distance`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from selfee.analysis import io, plots
from selfee.analysis.distance import DEFAULT_BLOCK_ELEMS, BlockStats, min_cosine_distance
from selfee.errors import SelfeeError
from selfee.runtime import resolve_device

log = logging.getLogger("selfee")


@dataclass(frozen=True)
class AnomalyOptions:
    window: int = 50  # +-w frames around a frame are left out of its own-video distance (original: 101-frame band)
    quantile: float = 1.0  # threshold = this quantile of the control scores (1.0 = their maximum, as the original)
    threshold: float | None = None  # a fixed threshold instead of a control group
    min_frames: int = 1  # anomalous ranges shorter than this are not reported
    merge_gap: int = 0  # ranges separated by at most this many frames are merged
    device: str = "auto"  # auto | cpu | cuda | cuda:N (resolved once by detect)
    block_elems: int = DEFAULT_BLOCK_ELEMS

    def __post_init__(self):
        if self.window < 0:
            raise SelfeeError(f"window must be >= 0 frames (got {self.window})")
        if not 0 < self.quantile <= 1:
            raise SelfeeError(f"quantile must be in (0, 1] (got {self.quantile})")
        if self.min_frames < 1 or self.merge_gap < 0:
            raise SelfeeError("min_frames must be >= 1 and merge_gap >= 0")


@dataclass
class VideoScores:
    stem: str
    frames: np.ndarray
    times: np.ndarray
    ref_distance: np.ndarray
    self_distance: np.ndarray

    @property
    def score(self) -> np.ndarray:
        return self.ref_distance - self.self_distance


def score_video(
    x: np.ndarray, frames: np.ndarray, refs: list[np.ndarray], opts: AnomalyOptions, stats: BlockStats | None = None,
    on_rows=None,
) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the nearest reference frame, distance to the nearest own frame outside +-w) per row.

    The own-video distance is inf where the video has no frame outside the window.
    """
    kw = dict(device=opts.device, block_elems=opts.block_elems, stats=stats, on_rows=on_rows)
    d_ref = min_cosine_distance(x, refs, **kw)
    d_self = min_cosine_distance(x, x, exclude_radius=opts.window, query_pos=frames, ref_pos=frames, **kw)
    return d_ref, d_self


def score_group(
    videos: list[io.EmbeddedVideo], reference: list[io.EmbeddedVideo], opts: AnomalyOptions,
    stats: BlockStats | None = None,
) -> list[VideoScores]:
    """Scores of every video against the reference group (a video never counts as its own reference)."""
    from selfee.console import progress

    out = []
    with progress() as bar:
        task = bar.add_task("anomaly scores", total=2 * sum(v.n for v in videos), rate="")
        for v in videos:
            me = v.path.resolve()
            refs = [r.load() for r in reference if r.path.resolve() != me]
            if not refs:
                raise SelfeeError(f"{v.path}: no reference video other than itself")
            d_ref, d_self = score_video(v.load(), v.frames, refs, opts, stats, lambda n: bar.advance(task, n))
            out.append(_finish_scores(v, d_ref, d_self, opts))
            log.info("%s: scored %d frames against %d reference frames", v.stem, v.n, sum(len(r) for r in refs))
    return out


def _finish_scores(v: io.EmbeddedVideo, d_ref: np.ndarray, d_self: np.ndarray, opts: AnomalyOptions) -> VideoScores:
    """Scores of one video; frames with no own frame outside the window get NaN (undefined)."""
    if np.isinf(d_self).any():
        log.warning("%s: %d frames have no own frame outside +-%d frames; their score is undefined (NaN)",
                    v.path, int(np.isinf(d_self).sum()), opts.window)
        d_self = np.where(np.isinf(d_self), np.nan, d_self)
    return VideoScores(v.stem, v.frames, v.times, d_ref, d_self)


def threshold_from(scores: list[VideoScores], quantile: float) -> float:
    s = np.concatenate([v.score for v in scores])
    s = s[np.isfinite(s)]
    if not len(s):
        raise SelfeeError("the control group has no finite scores to set a threshold from")
    return float(np.quantile(s, quantile)) if quantile < 1 else float(s.max())


def anomalous_ranges(frames: np.ndarray, flags: np.ndarray, merge_gap: int = 0, min_frames: int = 1) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of flagged rows, merged across gaps of <= ``merge_gap`` frames."""
    idx = np.flatnonzero(flags)
    if not len(idx):
        return []
    f = frames[idx]
    breaks = np.flatnonzero(np.diff(f) > merge_gap + 1)
    starts = np.r_[0, breaks + 1]
    stops = np.r_[breaks, len(idx) - 1]
    out = []
    for a, b in zip(starts, stops):
        r0, r1 = int(idx[a]), int(idx[b]) + 1
        if frames[r1 - 1] - frames[r0] + 1 >= min_frames:
            out.append((r0, r1))
    return out


@dataclass
class AnomalyResult:
    out_dir: Path
    threshold: float
    threshold_source: str
    query: list[VideoScores]
    ranges: dict[str, list[tuple[int, int]]]
    errors: list[SelfeeError] = field(default_factory=list)


def detect(
    reference_dir: str | Path,
    query_dir: str | Path,
    out_dir: str | Path,
    control_dir: str | Path | None = None,
    opts: AnomalyOptions = AnomalyOptions(),
    videos_dir: str | Path | None = None,
    clip_max_frames: int = 1500,
) -> AnomalyResult:
    """Score the query videos, set the threshold, write scores, ranges, plots (and optionally a clip)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = replace(opts, device=str(resolve_device(opts.device)))  # the outputs record where it ran
    reference, errors = io.list_videos(reference_dir)
    query, errs = io.list_videos(query_dir)
    errors += errs
    control = []
    if control_dir is not None:
        control, errs = io.list_videos(control_dir)
        errors += errs
    if not reference or not query:
        raise SelfeeError("anomaly detection needs at least one reference and one query video that load")
    io.check_dims([*reference, *query, *control])

    q_scores = score_group(query, reference, opts)
    c_scores: list[VideoScores] = []
    if opts.threshold is not None:
        thr, source = float(opts.threshold), "fixed (--threshold)"
    elif control:
        c_scores = score_group(control, reference, opts)
        thr, source = threshold_from(c_scores, opts.quantile), f"control group, quantile {opts.quantile}"
    elif len(reference) >= 2:
        c_scores = score_group(reference, reference, opts)
        thr, source = threshold_from(c_scores, opts.quantile), f"reference leave-one-video-out, quantile {opts.quantile}"
    else:
        raise SelfeeError("give --control DIR, --threshold X, or at least two reference videos to set the threshold")
    log.info("threshold %.4f (%s)", thr, source)

    ranges = {}
    range_rows = []
    for v in q_scores:
        flags = np.nan_to_num(v.score, nan=-np.inf) > thr
        rr = anomalous_ranges(v.frames, flags, opts.merge_gap, opts.min_frames)
        ranges[v.stem] = rr
        for r0, r1 in rr:
            seg = np.nan_to_num(v.score[r0:r1], nan=-np.inf)
            peak = r0 + int(seg.argmax())
            range_rows.append([v.stem, int(v.frames[r0]), int(v.frames[r1 - 1]), float(v.times[r0]),
                               float(v.times[r1 - 1]), int(flags[r0:r1].sum()), float(v.score[peak]), int(v.frames[peak])])
    for group, scores in (("scores", q_scores), ("control_scores", c_scores)):
        for v in scores:
            io.write_table(out / group / f"{io.safe_name(v.stem)}.csv",
                           ["frame", "time_s", "score", "ref_distance", "self_distance", "anomalous"],
                           ([int(f), float(t), float(s), float(a), float(b), int(s > thr)]
                            for f, t, s, a, b in zip(v.frames, v.times, v.score, v.ref_distance, v.self_distance)))
    io.write_table(out / "anomalous_ranges.csv",
                   ["video", "start_frame", "end_frame", "start_s", "end_s", "anomalous_frames", "peak_score", "peak_frame"],
                   range_rows)
    summary = {
        "threshold": thr,
        "threshold_source": source,
        "options": asdict(opts),
        "reference": [v.stem for v in reference],
        "control": [v.stem for v in control],
        "query": {v.stem: {"frames": len(v.frames), "anomalous_frames": int((v.score > thr).sum()),
                           "ranges": len(ranges[v.stem])} for v in q_scores},
    }
    with open(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    plot_scores(out / "anomaly_scores.png", q_scores, c_scores, thr)
    if videos_dir is not None:
        for v in q_scores:
            try:
                write_clip(Path(videos_dir), v, ranges[v.stem], out / "clips" / f"{io.safe_name(v.stem)}_anomalies.mp4",
                           clip_max_frames)
            except SelfeeError as exc:
                log.error("%s", exc)
                errors.append(exc)
    return AnomalyResult(out, thr, source, q_scores, ranges, errors)


def plot_scores(path: Path, query: list[VideoScores], control: list[VideoScores], thr: float, max_rows: int = 8) -> Path:
    plt = plots.pyplot()
    shown = query[:max_rows]
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 2.2 * (len(shown) + 1)), squeeze=False)
    for ax, v in zip(axes[:, 0], shown):
        s = v.score
        hi = s > thr
        ax.plot(v.times, s, lw=0.5, color="#3060c0")
        ax.scatter(v.times[hi], s[hi], s=3, color="#e02020", zorder=3, label="anomalous")
        ax.axhline(thr, color="k", ls="--", lw=0.8, label=f"threshold {thr:.3f}")
        ax.set_title(f"{v.stem}: {int(hi.sum())} of {len(s)} frames above the threshold", fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("anomaly score")
        ax.legend(loc="upper right", fontsize=7)
    ax = axes[-1, 0]
    qs = np.concatenate([v.score for v in query])
    bins = np.linspace(np.nanmin(qs), np.nanmax(qs), 80) if np.isfinite(qs).any() else 80
    ax.hist(qs[np.isfinite(qs)], bins=bins, alpha=0.6, density=True, label="query")
    if control:
        cs = np.concatenate([v.score for v in control])
        ax.hist(cs[np.isfinite(cs)], bins=80, alpha=0.6, density=True, label="control")
    ax.axvline(thr, color="k", ls="--", lw=0.8)
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save(fig, path)


def find_video(videos_dir: Path, stem: str) -> Path:
    from selfee.video import VIDEO_SUFFIXES

    for p in sorted(videos_dir.glob(f"{stem}.*")):
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return p
    raise SelfeeError(f"{videos_dir}: no video named {stem}.* for the anomaly clip")


def write_clip(videos_dir: Path, v: VideoScores, ranges: list[tuple[int, int]], path: Path, max_frames: int,
               max_side: int = 512) -> Path | None:
    """An MP4 of the anomalous frames (in order, at most ``max_frames``), scaled to at most ``max_side`` px."""
    if not ranges:
        return None
    import torch
    import torch.nn.functional as F

    from selfee.video import VideoReader, VideoWriter, probe

    info = probe(find_video(videos_dir, v.stem))
    scale = min(1.0, max_side / max(info.width, info.height))
    h, w = (int(round(info.height * scale)) // 2 * 2, int(round(info.width * scale)) // 2 * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, max(1, round(info.fps or 25))) as out, VideoReader(info) as reader:
        for r0, r1 in ranges:
            for _, rgb in reader.iter_frames(int(v.frames[r0]), int(v.frames[r1 - 1]) + 1):
                if out.frames >= max_frames:
                    break
                t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
                t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True)[0]
                out.write(t.round().clamp(0, 255).byte().permute(1, 2, 0).contiguous().numpy())
    log.info("%s: %d anomalous frames written", path, out.frames)
    return path
