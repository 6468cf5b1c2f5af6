"""Finding one animal in a frame: a background from sampled luma frames, then the largest blob that differs.

Frames are read as their luma (``selfee.video.luma``: the plane straight from the decoder, no RGB
conversion). The background is the median (or mean) of frames sampled over the time window,
keyframes when there are enough of them; :class:`BlobDetector` thresholds a frame's difference
from it (the animal darker, lighter, or either), opens away thin parts (the tail) and takes the
largest 8-connected blob; its centroid (and optionally the ellipse of its second moments) is the
position, mapped through the arena homography when there is an arena.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from selfee._deps import require
from selfee.errors import SelfeeError
from selfee.video import VideoInfo, VideoReader, luma
from selfee.video.arena import Arena, apply_homography

log = logging.getLogger("selfee")


def decoded_frames(reader: VideoReader, start: int, stop: int):
    """(index, av.VideoFrame) in [start, stop), through the project's one decoding path."""
    for i, frame in reader.frames(start):
        if i >= stop:
            break
        yield i, frame


def _keyframes(info: VideoInfo, start: int, stop: int) -> tuple[list[int], list[np.ndarray], bool]:
    """Decode only the keyframes in [start, stop): cheap, spread-out frames for the background."""
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
        cv2 = self.cv2 = require("cv2", "tracking")
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
            xy = apply_homography(self.matrix, xy)
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
