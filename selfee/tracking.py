"""Single-animal tracking from the decoded videos: background subtraction, largest blob, centroid.

The tracking half of the original Selfee tutorial's tracker tool (EBGU/RodentTracker), without
writing frames to disk. Per video: a background from frames sampled over the time window (the
median by default), then per frame the difference from it (the animal darker, lighter, or either),
a threshold, and the largest 8-connected blob inside the arena; its centroid (and optionally the
ellipse of its second moments) is the position. A frame without a blob of ``min_area`` pixels is
marked as not found, never filled in.

Frames are read as their luma (``selfee.video.luma``: the plane straight from the decoder, no RGB
conversion). For limited-range video (most H.264) luma spans 16-235, so the threshold, given in
full-range grey levels, is scaled by 219/255. With an arena the blob is found in the decoded frame, restricted to
the pixels the warped frame shows, and its pixels are mapped through the arena homography, so the
positions are warped-arena pixels without warping every frame.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from selfee import track_metrics as tm
from selfee.errors import ConfigError, SelfeeError, VideoError
from selfee.video import VideoInfo, VideoReader, luma
from selfee.video.arena import Arena, unit_per_px

log = logging.getLogger("selfee")

POLARITIES = ("auto", "dark", "light", "any")
BACKGROUNDS = ("median", "mean")
_LIMITED = 219 / 255  # luma span of limited-range video, relative to full range


def _cv2():
    from selfee._deps import require

    return require("cv2", "tracking")


@dataclass(frozen=True)
class TrackOptions:
    """How animals are found and what is measured (command-line options of ``selfee-fast track``)."""

    threshold: float = 25.0  # difference from the background, full-range grey levels (the original: 25)
    polarity: str = "auto"  # auto | dark (animal darker than the floor) | light | any
    min_area: int = 20  # decoded pixels; a smaller largest blob means "not found"
    open_px: int = 5  # opening disc, decoded pixels: drops parts thinner than this (tail); 0: off
    background: str = "median"  # median | mean of the sampled frames
    background_frames: int = 50  # frames sampled over the window for the background
    ellipse: bool = False  # also fit the blob's ellipse (major, minor axis, angle)
    inside_only: bool = False  # with an arena: search inside its corners only, not the margin (wall reflections)
    speed_window: int = 5  # frames in the position filter before speed (the original: 5)
    speed_filter: str = "mean"  # mean | median | none (the original's aver | median | none)
    centre_fraction: float = 0.5  # open field: centre zone half-side / arena half-side (the original: 0.5)
    arm_width: float = 0.1  # plus maze: arm width / maze length end to end (sets the centre square)
    arena_length: float | None = None  # physical side (open field) or end-to-end length (plus maze)
    unit: str = "cm"  # name of arena_length's unit, for the summary's columns
    plot: bool = True  # write <stem>_track.png

    def __post_init__(self):
        def check(ok, name, msg):
            if not ok:
                raise ConfigError(f"track option '{name}' {msg} (got {getattr(self, name)!r})")

        check(0 < self.threshold < 255, "threshold", "must be in (0, 255)")
        check(self.polarity in POLARITIES, "polarity", f"must be one of {', '.join(POLARITIES)}")
        check(self.min_area >= 1, "min_area", "must be >= 1")
        check(0 <= self.open_px <= 99, "open_px", "must be in [0, 99]")
        check(self.background in BACKGROUNDS, "background", f"must be one of {', '.join(BACKGROUNDS)}")
        check(self.background_frames >= 3, "background_frames", "must be >= 3")
        check(self.speed_window >= 1, "speed_window", "must be >= 1")
        object.__setattr__(self, "speed_filter", tm.normalize_filter(self.speed_filter))
        check(0 < self.centre_fraction < 1, "centre_fraction", "must be in (0, 1)")
        check(0 < self.arm_width < 1, "arm_width", "must be in (0, 1)")
        check(self.arena_length is None or self.arena_length > 0, "arena_length", "must be > 0")
        check(bool(self.unit) and self.unit.isidentifier(), "unit", "must be a short name such as cm")


# ---------------------------------------------------------------------------------------------
# Luma frames and the background
# ---------------------------------------------------------------------------------------------


def decoded_frames(reader: VideoReader, start: int, stop: int):
    """(index, av.VideoFrame) in [start, stop), through the project's one decoding path."""
    for i, frame in reader.frames(start):
        if i >= stop:
            break
        yield i, frame


def _keyframes(info: VideoInfo, start: int, stop: int) -> tuple[list[int], list[np.ndarray], bool]:
    """Decode only the keyframes in [start, stop): cheap, spread-out frames for the background."""
    from selfee._deps import require

    av = require("av", "reading videos")
    idx, frames, limited = [], [], True
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.skip_frame = "NONKEY"
            # no seek: skipped packets cost only their demuxing, and some streams decode badly after one
            for frame in container.decode(stream):
                p = frame.pts if frame.pts is not None else frame.dts
                if p is None:
                    continue
                i = int(np.searchsorted(info.pts, p))
                if i >= stop:
                    break
                if i >= start:
                    idx.append(i)
                    y, limited = luma(frame)
                    frames.append(y.copy())
    except av.error.FFmpegError as exc:
        log.debug("%s: keyframe-only decoding failed (%s); sampling sequentially", info.path, exc)
        return [], [], True
    return idx, frames, limited


def sample_frames(info: VideoInfo, start: int, stop: int, n: int) -> tuple[list[int], list[np.ndarray], bool]:
    """Up to ``n`` luma frames spread over [start, stop): keyframes when there are enough, else a pass."""
    idx, frames, limited = _keyframes(info, start, stop)
    want = min(n, stop - start)
    if len(frames) >= min(want, 10):
        pick = np.unique(np.linspace(0, len(frames) - 1, min(want, len(frames))).round().astype(int))
        return [idx[k] for k in pick], [frames[k] for k in pick], limited
    targets = set(np.unique(np.linspace(start, stop - 1, want).round().astype(int)).tolist())
    idx, frames = [], []
    with VideoReader(info) as reader:
        for i, frame in decoded_frames(reader, start, stop):
            if i in targets:
                idx.append(i)
                y, limited = luma(frame)
                frames.append(y.copy())
    return idx, frames, limited


def make_background(frames: list[np.ndarray], method: str = "median") -> np.ndarray:
    """H x W uint8 background from sampled luma frames."""
    if not frames:
        raise SelfeeError("no frames to build a background from")
    stack = np.stack(frames)
    bg = np.median(stack, axis=0) if method == "median" else stack.mean(axis=0, dtype=np.float64)
    return np.clip(np.rint(bg), 0, 255).astype(np.uint8)


def choose_polarity(background: np.ndarray, samples: list[np.ndarray], threshold: float,
                    mask: np.ndarray | None = None) -> str:
    """``dark`` or ``light``: the sign of the difference from the background that the samples show most."""
    bg = background.astype(np.int16)
    dark = light = 0
    for s in samples:
        d = bg - s.astype(np.int16)
        if mask is not None:
            d = d[mask]
        dark += int(np.count_nonzero(d > threshold))
        light += int(np.count_nonzero(d < -threshold))
    return "dark" if dark >= light else "light"


# ---------------------------------------------------------------------------------------------
# Per-frame detection
# ---------------------------------------------------------------------------------------------


class BlobDetector:
    """Largest above-threshold blob of a luma frame's difference from the background.

    A morphological opening with a disc of ``open_px`` pixels first removes parts thinner than
    it (the tail, single noisy pixels), so that the centroid is the body's.
    """

    def __init__(self, background: np.ndarray, threshold: float, polarity: str, min_area: int,
                 mask: np.ndarray | None = None, arena: Arena | None = None, ellipse: bool = False,
                 open_px: int = 5):
        if polarity not in ("dark", "light", "any"):
            raise ValueError(f"polarity must be dark, light or any (got {polarity!r})")
        cv2 = self.cv2 = _cv2()
        self.background = np.ascontiguousarray(background)
        self.threshold = float(threshold)
        self.polarity = polarity
        self.min_area = int(min_area)
        self.mask = None if mask is None else np.where(mask, 255, 0).astype(np.uint8)
        self.matrix = None if arena is None else arena.matrix
        self.ellipse = ellipse
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_px, open_px)) if open_px > 1 else None

    def binary(self, y: np.ndarray) -> np.ndarray:
        """H x W uint8, 255 where the frame differs from the background by more than the threshold."""
        cv2 = self.cv2
        if self.polarity == "dark":
            d = cv2.subtract(self.background, y)
        elif self.polarity == "light":
            d = cv2.subtract(y, self.background)
        else:
            d = cv2.absdiff(y, self.background)
        _, b = cv2.threshold(d, self.threshold, 255, cv2.THRESH_BINARY)
        if self.mask is not None:
            cv2.bitwise_and(b, self.mask, dst=b)
        return b

    def __call__(self, y: np.ndarray) -> tuple | None:
        """(x, y, area[, major, minor, angle_deg]) of the largest blob, or None."""
        cv2 = self.cv2
        b = self.binary(y)
        if self.kernel is not None:  # on the whole frame: it also clears scattered noise from the box below
            b = cv2.morphologyEx(b, cv2.MORPH_OPEN, self.kernel)
        # label only the box around the foreground: far cheaper than the whole frame
        x0, y0, w, h = cv2.boundingRect(b)
        if w == 0:
            return None
        crop = b[y0 : y0 + h, x0 : x0 + w]
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(crop, connectivity=8, ltype=cv2.CV_32S)
        if n < 2:
            return None
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < self.min_area:
            return None
        if self.matrix is None and not self.ellipse:
            return (centroids[k][0] + x0, centroids[k][1] + y0, area)
        ys, xs = np.nonzero(labels == k)
        xy = np.stack([xs + x0, ys + y0], axis=1).astype(np.float64)
        if self.matrix is not None:
            m = self.matrix
            z = xy @ m[2, :2] + m[2, 2]
            xy = (xy @ m[:2, :2].T + m[:2, 2]) / z[:, None]
        cx, cy = xy.mean(axis=0)
        if not self.ellipse:
            return (cx, cy, area)
        return (cx, cy, area, *ellipse_of(xy))


def ellipse_of(xy: np.ndarray) -> tuple[float, float, float]:
    """(major, minor, angle in degrees in [0, 180)) of the ellipse with the points' second moments.

    Axes are full lengths (4 sqrt(eigenvalue): exact for a filled ellipse); the angle is the major
    axis's, from the x axis towards y (image coordinates, so clockwise on screen).
    """
    if len(xy) < 2:
        return (0.0, 0.0, 0.0)
    c = np.cov(xy.T, bias=True)
    vals, vecs = np.linalg.eigh(c)
    major, minor = 4 * math.sqrt(max(vals[1], 0)), 4 * math.sqrt(max(vals[0], 0))
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180.0
    return (major, minor, angle)


# ---------------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------------


@dataclass
class Track:
    """A video's track over its time window: per-frame arrays (NaN where no animal was found)."""

    video: Path
    frames: np.ndarray  # video frame indices
    times: np.ndarray  # seconds since the video's first frame
    xy: np.ndarray  # N x 2 positions (warped-arena pixels with an arena, else decoded pixels)
    area: np.ndarray  # blob area, decoded pixels (0: not found)
    fps: float
    arena: Arena | None
    background: np.ndarray  # luma, full range
    polarity: str
    ellipse: np.ndarray | None = None  # N x 3: major, minor, angle
    speed: np.ndarray = field(default=None)  # type: ignore[assignment]
    zone: np.ndarray = field(default=None)  # type: ignore[assignment]
    seconds: float = 0.0  # wall time of the tracking

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.xy).any(axis=1)


def track_video(info: VideoInfo, pcfg, opts: TrackOptions = TrackOptions(),
                on_frames: Callable[[int], None] | None = None) -> Track:
    """Track one video over its preprocessing window (``pcfg``: its PreprocessConfig)."""
    from selfee.video.preprocess import frame_window, roi_box

    t0 = time.perf_counter()
    start, stop = frame_window(pcfg, info)
    if stop <= start:
        raise VideoError(info.path, "the time window holds no frames")
    arena = Arena.from_config(pcfg)
    if arena is not None and pcfg.roi is not None:
        raise ConfigError("config fields 'roi' and 'arena' cannot both be set: the arena corners already crop")
    mask = None
    if arena is not None:
        mask = arena.source_mask(info.height, info.width, inside=opts.inside_only)
        if not mask.any():
            raise ConfigError(f"{info.path}: the arena corners lie outside the {info.width}x{info.height} frame")
    elif pcfg.roi is not None:
        try:
            x0, y0, x1, y1 = roi_box(pcfg, info.height, info.width)
        except ValueError as exc:
            raise ConfigError(f"{info.path}: {exc}") from None
        mask = np.zeros((info.height, info.width), bool)
        mask[y0:y1, x0:x1] = True

    _, samples, limited = sample_frames(info, start, stop, opts.background_frames)
    background = make_background(samples, opts.background)
    thr = opts.threshold * (_LIMITED if limited else 1.0)
    polarity = opts.polarity
    if polarity == "auto":
        polarity = choose_polarity(background, samples, thr, mask)
        log.info("%s: the animal looks %s against the background", info.path.name, polarity)
    detector = BlobDetector(background, thr, polarity, opts.min_area, mask, arena, opts.ellipse, opts.open_px)

    n = stop - start
    xy = np.full((n, 2), np.nan)
    area = np.zeros(n, np.int64)
    ell = np.full((n, 3), np.nan) if opts.ellipse else None
    done = 0
    with VideoReader(info) as reader:
        for i, frame in decoded_frames(reader, start, stop):
            r = detector(luma(frame)[0])
            if r is not None:
                j = i - start
                xy[j] = r[:2]
                area[j] = r[2]
                if ell is not None:
                    ell[j] = r[3:]
            done += 1
            if on_frames is not None and done % 256 == 0:
                on_frames(256)
    if on_frames is not None:
        on_frames(done % 256)
    if done == 0:
        raise VideoError(info.path, "no frame could be decoded in the time window")

    frames = np.arange(start, stop)
    times = info.times(frames)
    smooth = tm.smooth_positions(xy, opts.speed_window, opts.speed_filter)
    if limited:  # show the background in full range
        background = np.clip(np.rint((background.astype(np.float64) - 16) / _LIMITED), 0, 255).astype(np.uint8)
    return Track(
        video=info.path, frames=frames, times=times, xy=xy, area=area, fps=info.fps, arena=arena,
        background=background, polarity=polarity, ellipse=ell, speed=tm.speeds(smooth, times),
        zone=tm.zones(xy, arena, opts.centre_fraction, opts.arm_width), seconds=time.perf_counter() - t0,
    )


def summary_row(track: Track, opts: TrackOptions) -> dict:
    """The summary CSV's row for one track."""
    smooth = tm.smooth_positions(track.xy, opts.speed_window, opts.speed_filter)
    scale = unit_per_px(track.arena, opts.arena_length)
    row = {"video": track.video.name, "arena": track.arena.kind if track.arena else "none", "polarity": track.polarity}
    row.update(tm.summarize(smooth, track.speed, track.zone, track.fps, track.arena, scale, opts.unit))
    return row


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def track_csv(track: Track) -> str:
    """``frame,time_s,x,y,speed,zone,found,area`` (+ ``major,minor,angle``); empty x/y/speed when not found."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["frame", "time_s", "x", "y", "speed", "zone", "found", "area"]
    if track.ellipse is not None:
        head += ["major", "minor", "angle"]
    w.writerow(head)
    found = track.found
    for j in range(len(track.frames)):
        row = [int(track.frames[j]), f"{track.times[j]:.6f}", _fmt(track.xy[j, 0]), _fmt(track.xy[j, 1]),
               _fmt(track.speed[j]), track.zone[j], int(found[j]), int(track.area[j])]
        if track.ellipse is not None:
            row += [_fmt(v) for v in track.ellipse[j]]
        w.writerow(row)
    return buf.getvalue()


def summary_csv(rows: list[dict]) -> str:
    """Rows with different columns (open field, plus maze, none) -> one table, blanks where absent."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in cols])
    return buf.getvalue()


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return _fmt(v, 4)
    return str(v)


def plot_track(track: Track, path: Path, opts: TrackOptions | None = None) -> Path:
    """Trajectory (coloured by time) and occupancy heat map side by side, over the background (PNG)."""
    cv2 = _cv2()
    bg = track.background
    arena = track.arena
    if arena is not None:
        bg = cv2.warpPerspective(bg, arena.matrix, (arena.size, arena.size), flags=cv2.INTER_LINEAR)
        keep = arena.keep_mask()
        if keep is not None:
            bg = np.where(keep, bg, 255).astype(np.uint8)
    h, w = bg.shape
    base = cv2.cvtColor((bg * 0.6).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    scale = max(1, round(400 / max(h, w)))
    sz = (w * scale, h * scale)
    base = cv2.resize(base, sz, interpolation=cv2.INTER_NEAREST)
    found = track.found
    p = track.xy * scale + (scale - 1) / 2

    traj = base.copy()
    if arena is not None:
        _draw_zones(cv2, traj, arena, opts or TrackOptions(), scale)
    n = len(p)
    colours = cv2.applyColorMap(np.linspace(0, 255, max(n, 1)).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0]
    for j in range(1, n):
        if found[j] and found[j - 1]:
            a = tuple(int(round(v)) for v in p[j - 1])
            b = tuple(int(round(v)) for v in p[j])
            cv2.line(traj, a, b, tuple(int(c) for c in colours[j]), 1, cv2.LINE_AA)

    heat = base.copy()
    if found.any():
        q = np.clip(np.rint(p[found]).astype(int), 0, [sz[0] - 1, sz[1] - 1])
        density = np.zeros((sz[1], sz[0]), np.float32)
        np.add.at(density, (q[:, 1], q[:, 0]), 1.0)
        density = cv2.GaussianBlur(density, (0, 0), max(sz) / 80)
        density /= max(float(density.max()), 1e-12)
        colour = cv2.applyColorMap((density * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
        alpha = np.clip(density * 3, 0, 1)[..., None] * 0.85
        heat = (heat * (1 - alpha) + colour * alpha).astype(np.uint8)
    panel = np.concatenate([traj, np.full((sz[1], 8, 3), 255, np.uint8), heat], axis=1)
    title = np.full((28, panel.shape[1], 3), 255, np.uint8)
    text = f"{track.video.name}: {int(found.sum())}/{n} frames found"
    cv2.putText(title, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), np.concatenate([title, panel], axis=0)):
        raise SelfeeError(f"{path}: cannot write the PNG")
    return path


def _draw_zones(cv2, img, arena: Arena, opts: TrackOptions, scale: int) -> None:
    c, a = arena.centre, arena.half_side

    def box(half, colour):
        lo = int(round((c - half) * scale)), int(round((c - half) * scale))
        hi = int(round((c + half) * scale)), int(round((c + half) * scale))
        cv2.rectangle(img, lo, hi, colour, 1)

    if arena.kind == "open_field":
        box(a, (200, 200, 200))
        box(opts.centre_fraction * a, (120, 220, 120))
    else:
        box(opts.arm_width * a, (120, 220, 120))


# ---------------------------------------------------------------------------------------------
# Many videos
# ---------------------------------------------------------------------------------------------


def track_videos(
    videos: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg=None,
    opts: TrackOptions = TrackOptions(),
    corners: str | os.PathLike | None = None,
    kind: str | None = None,
) -> dict:
    """``selfee-fast track``: per video ``<stem>_track.csv`` (+ PNG), then ``summary.csv`` and ``manifest.json``.

    ``cfg`` (a SelfeeConfig) gives each video's time window, ROI and arena; ``corners`` adds arenas
    (see :func:`selfee.video.arena.apply_corners`; ``kind`` for corners that name none). Bad videos are
    reported and skipped.
    """
    from selfee.cli_utils import progress as make_progress
    from selfee.config import SelfeeConfig
    from selfee.fileio import atomic_write, atomic_write_json, check_writable
    from selfee.prepare import failure
    from selfee.runtime import versions
    from selfee.video import frame_window, open_inputs

    out_dir = check_writable(out_dir)
    inputs = open_inputs(videos, cfg or SelfeeConfig(), corners=corners, arena=kind, writes="{stem}_track.csv")
    cfg, infos, failures = inputs.cfg, inputs.videos, inputs.failed
    results, rows = [], []
    with make_progress() as bar:
        run_task = bar.add_task("videos", total=len(infos) + len(failures), completed=len(failures), rate="")
        for info in infos:
            task = bar.add_task(info.path.name, total=None, rate="")
            try:
                pcfg = cfg.data.preprocess_for(info.path)
                start, stop = frame_window(pcfg, info)
                bar.update(task, total=stop - start)
                track = track_video(info, pcfg, opts, on_frames=lambda k, task=task: bar.advance(task, k))
                stem = info.path.stem
                atomic_write(out_dir / f"{stem}_track.csv", track_csv(track))
                if opts.plot:
                    plot_track(track, out_dir / f"{stem}_track.png", opts)
                row = summary_row(track, opts)
                rows.append(row)
                fps = len(track.frames) / track.seconds if track.seconds else 0.0
                results.append({"video": str(info.path), "stem": stem, "frames": len(track.frames),
                                "frames_found": int(track.found.sum()), "seconds": track.seconds, "fps": fps,
                                "arena": None if track.arena is None else asdict(track.arena),
                                "polarity": track.polarity})
                log.info("%s: %d/%d frames found, %.0f frames/s", info.path.name, row["frames_found"],
                         row["frames"], fps)
            except SelfeeError as exc:
                failures.append(failure(info.path, exc))
            bar.remove_task(task)
            bar.advance(run_task)
    if rows:
        atomic_write(out_dir / "summary.csv", summary_csv(rows))
    manifest = {"options": asdict(opts), "videos": results, "failed": failures, "versions": versions()}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest
