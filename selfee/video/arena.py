"""Arena correction: four clicked corners -> a homography onto a square arena with a margin.

The semantics follow the original Selfee tutorial's tracker tool (EBGU/RodentTracker): open field
corners are given clockwise from the upper left and land on the corners of a square; plus-maze
(elevated plus maze) corners are the two open-arm ends then the two closed-arm ends, and land on
the middles of the square's left, right, top and bottom sides (open arms horizontal, closed arms
vertical), with the four regions between the arms masked. The square of side ``arena_size`` keeps
a margin of ``arena_margin`` of its side around the arena (half on each side).

Coordinates are pixel indices: the centre of the top-left pixel is (0, 0), as in OpenCV. Matrices
are 3 x 3 float64 acting on column vectors (x, y, 1). :func:`dali_warp_args` gives the arguments
for DALI's ``fn.experimental.warp_perspective`` under the same convention. Corner files, and the
per-video arenas they give a config, are :mod:`selfee.video.corners`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfee.errors import ConfigError

log = logging.getLogger("selfee")

ARENA_KINDS = ("open_field", "plus_maze")
DEFAULT_MARGIN = {"open_field": 0.2, "plus_maze": 0.1}
# Plus maze: the arms are kept in bands of this fraction of the frame side around the centre lines;
# the four corner squares between them are filled with MASK_FILL (the original masked squares of
# 0.35 of the side in each corner, with white).
PLUS_BAND = 0.3
MASK_FILL = 255
CORNER_NAMES = {
    "open_field": ("upper left", "upper right", "lower right", "lower left"),
    "plus_maze": ("open arm end 1", "open arm end 2", "closed arm end 1", "closed arm end 2"),
}


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def homography(src, dst) -> np.ndarray:
    """The 3 x 3 matrix H with H (x, y, 1) ~ (u, v, 1) for four point pairs (x, y) -> (u, v)."""
    src = np.asarray(src, np.float64).reshape(4, 2)
    dst = np.asarray(dst, np.float64).reshape(4, 2)
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = (x, y, 1, 0, 0, 0, -x * u, -y * u)
        a[2 * i + 1] = (0, 0, 0, x, y, 1, -x * v, -y * v)
        b[2 * i], b[2 * i + 1] = u, v
    try:
        h = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise ConfigError("arena corners are degenerate (three of them on one line?)") from None
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(matrix: np.ndarray, xy) -> np.ndarray:
    """Map N x 2 points through a 3 x 3 matrix (float64)."""
    xy = np.asarray(xy, np.float64)
    pts = xy.reshape(-1, 2)
    w = pts @ matrix[:2, :2].T + matrix[:2, 2]
    z = pts @ matrix[2, :2] + matrix[2, 2]
    return (w / z[:, None]).reshape(xy.shape)


@dataclass(frozen=True)
class Arena:
    """An arena's corners in the decoded frame and the square it is warped onto."""

    kind: str  # open_field | plus_maze
    corners: tuple[tuple[float, float], ...]  # four (x, y) in decoded-frame pixels, in the kind's order
    size: int = 500
    margin: float | None = None  # None: the kind's default

    def __post_init__(self):
        if self.kind not in ARENA_KINDS:
            raise ConfigError(f"arena must be one of {', '.join(ARENA_KINDS)} (got {self.kind!r})")
        check_corners(self.kind, self.corners)
        if self.size < 16:
            raise ConfigError(f"arena_size must be >= 16 (got {self.size})")
        if not 0 <= self.margin_value < 1:
            raise ConfigError(f"arena_margin must be in [0, 1) (got {self.margin})")

    @classmethod
    def from_config(cls, cfg) -> Arena | None:
        """From a :class:`~selfee.config.PreprocessConfig`; None when ``cfg.arena`` is ``none``."""
        if cfg.arena == "none":
            return None
        return cls(cfg.arena, tuple(tuple(map(float, c)) for c in cfg.arena_corners), cfg.arena_size, cfg.arena_margin)

    @property
    def margin_value(self) -> float:
        return DEFAULT_MARGIN[self.kind] if self.margin is None else float(self.margin)

    @property
    def centre(self) -> float:
        """x (= y) of the arena's centre in the warped frame."""
        return (self.size - 1) / 2

    @property
    def half_side(self) -> float:
        """Half the side of the arena (open field) or of the maze, end to end (plus maze), warped pixels."""
        return self.size * (1 - self.margin_value) / 2

    @property
    def targets(self) -> np.ndarray:
        """Where the four corners land in the warped frame (4 x 2)."""
        c, a = self.centre, self.half_side
        if self.kind == "open_field":
            return np.array([[c - a, c - a], [c + a, c - a], [c + a, c + a], [c - a, c + a]])
        return np.array([[c - a, c], [c + a, c], [c, c - a], [c, c + a]])

    @property
    def matrix(self) -> np.ndarray:
        """Decoded-frame pixels -> warped-frame pixels (source to destination)."""
        return homography(self.corners, self.targets)

    @property
    def inverse(self) -> np.ndarray:
        """Warped-frame pixels -> decoded-frame pixels (destination to source)."""
        return homography(self.targets, self.corners)

    def keep_mask(self) -> np.ndarray | None:
        """size x size bool: warped pixels kept (None: all, the open field)."""
        if self.kind != "plus_maze":
            return None
        idx = np.arange(self.size) - self.centre
        band = np.abs(idx) <= PLUS_BAND * self.size / 2
        return band[:, None] | band[None, :]

    def to_arena(self, xy) -> np.ndarray:
        """Decoded-frame points (N x 2) -> warped-frame points."""
        return apply_homography(self.matrix, xy)

    def to_video(self, xy) -> np.ndarray:
        """Warped-frame points (N x 2) -> decoded-frame points."""
        return apply_homography(self.inverse, xy)

    def source_mask(self, height: int, width: int, inside: bool = False) -> np.ndarray:
        """height x width bool: decoded pixels that the warped frame shows (and does not mask).

        ``inside``: only those within the arena itself, not its margin.
        """
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        m = self.matrix
        z = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
        u = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / z
        v = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / z
        lo, hi = (self.centre - self.half_side, self.centre + self.half_side) if inside else (-0.5, self.size - 0.5)
        ok = (z > 0) & (u >= lo) & (u <= hi) & (v >= lo) & (v <= hi)
        if self.kind == "plus_maze":
            band = PLUS_BAND * self.size / 2
            ok &= (np.abs(u - self.centre) <= band) | (np.abs(v - self.centre) <= band)
        return ok


def check_corners(kind: str, corners) -> None:
    """Raise ConfigError unless ``corners`` are four finite, usable points in the kind's order."""
    try:
        pts = np.asarray(corners, np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"arena corners must be four (x, y) number pairs (got {corners!r})") from None
    if pts.shape != (4, 2) or not np.all(np.isfinite(pts)):
        raise ConfigError(f"arena corners must be four (x, y) number pairs (got {corners!r})")
    for i in range(4):  # no three points on (nearly) one line
        p, q, r = (pts[j] for j in range(4) if j != i)
        if abs(_cross(q - p, r - p)) < 1.0:
            raise ConfigError(f"arena corners {pts.tolist()} are degenerate: three of them lie on one line")
    if kind == "open_field":
        turns = [_cross(pts[(i + 1) % 4] - pts[i], pts[(i + 2) % 4] - pts[(i + 1) % 4]) for i in range(4)]
        if not (all(t > 0 for t in turns) or all(t < 0 for t in turns)):
            raise ConfigError(
                f"open-field corners {pts.tolist()} do not form a convex quadrilateral: give them clockwise "
                "from the upper left"
            )
        if turns[0] < 0:
            log.warning("open-field corners go counter-clockwise on screen; the warped arena will be mirrored")
    else:
        if not _segments_cross(pts[0], pts[1], pts[2], pts[3]):
            raise ConfigError(
                f"plus-maze corners {pts.tolist()} do not form a cross: give the two open-arm ends, then the "
                "two closed-arm ends"
            )


def _cross(a, b) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _segments_cross(p1, p2, q1, q2) -> bool:
    d1, d2 = _cross(p2 - p1, q1 - p1), _cross(p2 - p1, q2 - p1)
    d3, d4 = _cross(q2 - q1, p1 - q1), _cross(q2 - q1, p2 - q1)
    return d1 * d2 < 0 and d3 * d4 < 0


# ---------------------------------------------------------------------------------------------
# Warping frames (torch reference; DALI gets the same matrix)
# ---------------------------------------------------------------------------------------------


def sampling_grid(arena: Arena, height: int, width: int) -> torch.Tensor:
    """1 x S x S x 2 grid for ``grid_sample(align_corners=False)``: where each warped pixel samples."""
    s = arena.size
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    m = arena.inverse
    z = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    safe = np.where(z > 0, z, 1.0)
    sx = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / safe
    sy = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / safe
    # pixel index -> normalised coordinate (pixel centres at (2i + 1) / n - 1); behind the camera -> outside
    gx = np.where(z > 0, (2 * sx + 1) / width - 1, -4.0)
    gy = np.where(z > 0, (2 * sy + 1) / height - 1, -4.0)
    return torch.from_numpy(np.stack([gx, gy], -1)[None].astype(np.float32))


class ArenaWarp:
    """The warp step of :class:`~selfee.video.preprocess.Preprocessor`: T x C x H x W uint8 -> T x C x S x S uint8.

    Bilinear sampling; pixels outside the decoded frame are 0 (OpenCV's constant border), the
    plus maze's regions between the arms are ``MASK_FILL``.
    """

    def __init__(self, arena: Arena, height: int, width: int, chunk: int = 16):
        self.arena = arena
        self.in_hw = (height, width)
        self.chunk = chunk
        self._grid = sampling_grid(arena, height, width)
        keep = arena.keep_mask()
        self._keep = None if keep is None else torch.from_numpy(keep)

    @classmethod
    def from_config(cls, cfg, height: int, width: int) -> ArenaWarp | None:
        """None when the config sets no arena. An arena and a ROI cannot be combined."""
        arena = Arena.from_config(cfg)
        if arena is None:
            return None
        if cfg.roi is not None:
            raise ConfigError("config fields 'roi' and 'arena' cannot both be set: the arena corners already crop")
        return cls(arena, height, width)

    @property
    def out_hw(self) -> tuple[int, int]:
        return (self.arena.size, self.arena.size)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if tuple(frames.shape[-2:]) != self.in_hw:
            raise ValueError(f"arena warp made for {self.in_hw} frames, got {tuple(frames.shape[-2:])}")
        dev = frames.device
        if self._grid.device != dev:
            self._grid = self._grid.to(dev)
            self._keep = None if self._keep is None else self._keep.to(dev)
        s = self.arena.size
        out = torch.empty((*frames.shape[:-2], s, s), dtype=torch.uint8, device=dev)
        for i in range(0, frames.shape[0], self.chunk):
            x = frames[i : i + self.chunk]
            y = F.grid_sample(x.float(), self._grid.expand(x.shape[0], -1, -1, -1), mode="bilinear",
                              padding_mode="zeros", align_corners=False)
            out[i : i + self.chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
        if self._keep is not None:
            out.masked_fill_(~self._keep, MASK_FILL)
        return out


def dali_warp_args(arena: Arena) -> dict[str, Any]:
    """Keyword arguments for DALI's ``fn.experimental.warp_perspective`` (DALI 2.4) doing this warp.

    DALI's ``matrix`` is destination -> source when ``inverse_map=True`` (its default), like
    OpenCV's ``WARP_INVERSE_MAP``; ``pixel_origin="center"`` puts (0, 0) at the centre of the
    top-left pixel, this module's convention. The plus-maze mask (:meth:`Arena.keep_mask`) is
    applied after the warp.
    """
    return {
        "matrix": [float(v) for v in arena.inverse.ravel()],
        "inverse_map": True,
        "pixel_origin": "center",
        "size": [arena.size, arena.size],
        "border_mode": "constant",
        "fill_value": 0.0,
    }
