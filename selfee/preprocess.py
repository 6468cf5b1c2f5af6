"""Per-video preprocessing on the fly: time window, region of interest, resize, inversion.

The reference semantics for what the original did offline with a separate tracker tool. A
:class:`Preprocessor` is made per video from its :class:`~selfee.config.PreprocessConfig` and
maps decoded RGB frames (T x 3 x H x W uint8 tensors) to preprocessed ones. The DALI pipelines
implement the same steps in their graphs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfee.arena import ArenaWarp
from selfee.config import PreprocessConfig
from selfee.errors import VideoError
from selfee.video import VideoInfo


class Preprocessor:
    """Frame window and frame transform of one video."""

    def __init__(self, cfg: PreprocessConfig, info: VideoInfo):
        self.cfg = cfg
        self.info = info
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
        """T x 3 x H x W uint8 -> T x 3 x h x w uint8."""
        if self.arena is not None:  # first, as in the original: warp -> background -> equalisation
            rgb = self.arena(rgb)
        x0, y0, x1, y1 = self.roi
        if (x0, y0, x1, y1) != (0, 0, self.info.width, self.info.height):
            rgb = rgb[..., y0:y1, x0:x1]
        if self.cfg.resize is not None and tuple(rgb.shape[-2:]) != tuple(self.cfg.resize):
            y = F.interpolate(rgb.float(), size=tuple(self.cfg.resize), mode="bilinear", antialias=True)
            rgb = y.round_().clamp_(0, 255).to(torch.uint8)
        if self.cfg.invert:
            rgb = 255 - rgb
        return rgb


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
