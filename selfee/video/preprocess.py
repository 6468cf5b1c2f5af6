"""Per-video preprocessing on the fly: time window, ROI, resize, background, illumination, inversion.

The reference semantics for what the original did offline with a separate tracker tool. A
:class:`Preprocessor` is made per video from its :class:`~selfee.config.PreprocessConfig` and
maps decoded RGB frames (T x 3 x H x W uint8 tensors, on any device) to preprocessed ones. The
DALI pipelines apply this same object to the frames they decode, on the decoding device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from selfee.augment import resize_uint8
from selfee.config import PreprocessConfig
from selfee.errors import VideoError
from selfee.fileio import AtomicFile
from selfee.video.arena import ArenaWarp
from selfee.video.reader import VideoInfo, VideoReader

log = logging.getLogger("selfee")


class Preprocessor:
    """Frame window and frame transform of one video."""

    def __init__(self, cfg: PreprocessConfig, info: VideoInfo, cache_dir: str | os.PathLike | None = None,
                 grey: bool = False):
        self.cfg = cfg
        self.info = info
        self.grey = grey  # frames arrive as T x 1 x H x W grey (live frames) rather than RGB
        self.cache_dir = cache_dir  # where the mean background is cached (default: background_cache_dir())
        self._background: torch.Tensor | None = None
        self.start, self.stop = frame_window(cfg, info)
        self.roi = roi_box(cfg, info.height, info.width)
        self.arena = ArenaWarp.from_config(cfg, info.height, info.width)  # None without an arena

    @property
    def frames(self) -> int:
        """Number of frames in the window (frame 0 of the window is video frame ``start``)."""
        return self.stop - self.start

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.cfg.resize is not None:
            return tuple(self.cfg.resize)
        if self.arena is not None:
            return self.arena.out_hw
        x0, y0, x1, y1 = self.roi
        return (y1 - y0, x1 - x0)

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """T x C x H x W uint8 -> T x C x h x w uint8 (C = 3 RGB, or 1 grey when ``grey``)."""
        if self.arena is not None:  # first, as in the original: warp -> background -> equalisation
            rgb = self.arena(rgb)
        x0, y0, x1, y1 = self.roi
        if (x0, y0, x1, y1) != (0, 0, self.info.width, self.info.height):
            rgb = rgb[..., y0:y1, x0:x1]
        if self.cfg.resize is not None:
            rgb = resize_uint8(rgb, tuple(self.cfg.resize))
        if self.cfg.background == "mean":
            rgb = subtract_background(rgb, self.background(rgb.device))
        if self.cfg.illumination != "none":
            rgb = equalize(rgb) if self.cfg.illumination == "equalize" else normalize_range(rgb)
        if self.cfg.invert:
            rgb = 255 - rgb
        return rgb

    def background(self, device=None) -> torch.Tensor:
        """C x h x w float32 mean of frames after the geometric steps, computed once and cached on disk."""
        if self._background is None:
            self._background = load_or_compute_background(self, self.cache_dir)
        if device is not None and self._background.device != torch.device(device):
            self._background = self._background.to(device)
        return self._background


def frame_window(cfg: PreprocessConfig, info: VideoInfo) -> tuple[int, int]:
    """[start, stop) frame indices selected by start_s / duration_s."""
    start = info.index_at(cfg.start_s) if cfg.start_s > 0 else 0
    stop = info.frames if cfg.duration_s is None else min(info.frames, info.index_at(cfg.start_s + cfg.duration_s))
    if start >= info.frames:
        raise VideoError(info.path, f"start_s={cfg.start_s} is past the end of the video ({info.duration_s:.1f} s)")
    return start, max(stop, start)


def roi_box(cfg: PreprocessConfig, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the region of interest grown by its margin, clipped to the frame."""
    if cfg.roi is None:
        return (0, 0, width, height)
    x, y, w, h = cfg.roi
    mx, my = math.floor(w * cfg.roi_margin), math.floor(h * cfg.roi_margin)
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(width, x + w + mx), min(height, y + h + my)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"roi {cfg.roi} lies outside the {width}x{height} frame")
    return (x0, y0, x1, y1)


# ---------------------------------------------------------------------------------------------
# Background subtraction and illumination (the original's "img2binary" step, done on the fly)
# ---------------------------------------------------------------------------------------------


def subtract_background(rgb: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``|frame - background|`` rounded to uint8: the animal is bright on black whether it is darker
    or lighter than the floor (``invert`` turns that into dark on white)."""
    return (rgb.float() - background).abs_().round_().clamp_(0, 255).to(torch.uint8)


def equalize(x: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """Histogram equalization of every frame and channel (... x H x W uint8), OpenCV's ``equalizeHist``.

    The lookup table is ``round((cdf(v) - hist(v0)) * 255 / (N - hist(v0)))`` in float32, rounded
    half to even, with ``v0`` the smallest value present; a constant image is left as it is.
    """
    shape = x.shape
    flat = x.reshape(-1, shape[-2] * shape[-1])
    out = torch.empty_like(flat)
    n = flat.shape[1]
    for i in range(0, flat.shape[0], chunk):
        v = flat[i : i + chunk].long()
        hist = torch.zeros(v.shape[0], 256, dtype=torch.int64, device=x.device).scatter_add_(1, v, torch.ones_like(v))
        h0 = hist.gather(1, (hist > 0).to(torch.uint8).argmax(1, keepdim=True))
        scale = torch.tensor(255.0, dtype=torch.float32, device=x.device) / (n - h0).clamp(min=1).float()
        lut = ((hist.cumsum(1) - h0).float() * scale).round_().clamp_(0, 255).to(torch.uint8)
        lut = torch.where(h0 == n, torch.arange(256, device=x.device, dtype=torch.uint8), lut)
        out[i : i + chunk] = lut.gather(1, v)
    return out.view(shape)


def normalize_range(x: torch.Tensor) -> torch.Tensor:
    """Per-frame min-max stretch to 0..255 over all channels (T x C x H x W uint8); flat frames unchanged."""
    lo = x.amin(dim=(-3, -2, -1), keepdim=True).float()
    hi = x.amax(dim=(-3, -2, -1), keepdim=True).float()
    span = hi - lo
    y = ((x.float() - lo) * (255.0 / span.clamp(min=1))).round_().clamp_(0, 255).to(torch.uint8)
    return torch.where(span > 0, y, x)


def background_cache_dir() -> Path:
    """``<cache>/backgrounds`` (see :func:`selfee.fileio.cache_dir`)."""
    from selfee.fileio import cache_dir

    return cache_dir() / "backgrounds"


def background_frames(pre: Preprocessor) -> np.ndarray:
    """Window frame indices averaged for the background: ``background_samples`` spread evenly over the
    first ``background_seconds`` of the window (or all of it)."""
    cfg, info = pre.cfg, pre.info
    n = pre.frames
    if cfg.background_seconds is not None and info.fps > 0:
        n = max(1, min(n, math.ceil(cfg.background_seconds * info.fps)))
    m = min(cfg.background_samples, n)
    return np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


def _background_key(pre: Preprocessor) -> str:
    st = pre.info.path.stat()
    geometry = dataclasses.replace(pre.cfg, background="none", illumination="none", invert=False)
    raw = repr((str(pre.info.path.resolve()), st.st_size, st.st_mtime_ns, geometry, pre.start, pre.stop, pre.grey))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def compute_background(pre: Preprocessor) -> torch.Tensor:
    """Mean (float32, C x h x w) of the sampled frames after the geometric steps (arena, ROI, resize)."""
    plain = Preprocessor(dataclasses.replace(pre.cfg, background="none", illumination="none", invert=False), pre.info,
                         grey=pre.grey)
    idx = background_frames(pre) + pre.start
    total, count = None, 0
    with VideoReader(pre.info) as reader:
        span = int(idx[-1] - idx[0]) + 1
        if span <= 8 * len(idx):  # dense: one sequential read
            wanted = set(idx.tolist())
            frames = (f for i, f in reader.iter_frames(int(idx[0]), int(idx[-1]) + 1, grey=pre.grey) if i in wanted)
        else:  # sparse: one seek per sample
            frames = (f for i in idx.tolist() for f in reader.read(i, i + 1, grey=pre.grey))
        for f in frames:
            x = torch.from_numpy(f)
            x = x[None, None] if pre.grey else x.permute(2, 0, 1)[None]
            y = plain(x).double().sum(0)
            total = y if total is None else total + y
            count += 1
    if not count:
        raise VideoError(pre.info.path, "no frame could be decoded for the background")
    return (total / count).float()


def load_or_compute_background(pre: Preprocessor, cache_dir=None) -> torch.Tensor:
    """The cached background of ``pre``'s video, computed and written (atomically) on first use."""
    path = Path(cache_dir or background_cache_dir()) / f"{pre.info.path.stem}.{_background_key(pre)}.background.npy"
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path))
        except (OSError, ValueError):
            log.warning("%s: unreadable cached background; recomputing", path)
    bg = compute_background(pre)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with AtomicFile(path, fsync=False) as f:  # a lost cache file is only recomputed
            np.save(f.file, bg.numpy())
        log.info("%s: background of %s cached at %s", pre.info.path, tuple(bg.shape), path)
    except OSError as exc:
        log.warning("%s: cannot cache the background at %s (%s)", pre.info.path, path, exc)
    return bg
