"""Single-animal tracking of one video: background subtraction, largest blob, centroid, measures.

The tracking half of the original Selfee tutorial's tracker tool (EBGU/RodentTracker), without
writing frames to disk. Per video: a background from frames sampled over the time window (the
median by default), then per frame the largest blob that differs from it inside the arena
(:mod:`selfee.tracking.detect`); its centroid is the position. A frame without a blob of
``min_area`` pixels is marked as not found, never filled in. Speed and zones follow
(:mod:`selfee.tracking.metrics`).

For limited-range video (most H.264) luma spans 16-235, so the threshold, given in full-range
grey levels, is scaled by 219/255. With an arena the blob is found in the decoded frame, restricted
to the pixels the warped frame shows, and its pixels are mapped through the arena homography, so
the positions are warped-arena pixels without warping every frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfee.errors import ConfigError, VideoError
from selfee.tracking import metrics as tm
from selfee.tracking.detect import (
    BlobDetector,
    choose_polarity,
    decoded_frames,
    make_background,
    sample_frames,
)
from selfee.video import VideoInfo, VideoReader, luma
from selfee.video.arena import Arena

log = logging.getLogger("selfee")

POLARITIES = ("auto", "dark", "light", "any")
BACKGROUNDS = ("median", "mean")
_LIMITED = 219 / 255  # luma span of limited-range video, relative to full range


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
    scale = tm.unit_per_px(track.arena, opts.arena_length)
    row = {"video": track.video.name, "arena": track.arena.kind if track.arena else "none", "polarity": track.polarity}
    row.update(tm.summarize(smooth, track.speed, track.zone, track.fps, track.arena, scale, opts.unit))
    return row
