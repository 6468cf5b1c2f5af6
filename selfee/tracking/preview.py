"""Choosing arena corners: a frame with a coordinate grid (PNG), and a click picker where a display exists."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from selfee.errors import SelfeeError
from selfee.video import VideoInfo, VideoReader, probe
from selfee.video.arena import CORNER_NAMES, Arena, ArenaWarp
from selfee.video.corners import corners_overrides, write_corners

log = logging.getLogger("selfee")

_NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "cairo", "template", "pgf"}


def _cv2():
    from selfee._deps import require

    return require("cv2", "arena previews")


def read_frame(info: VideoInfo, time_s: float | None = None) -> tuple[int, np.ndarray]:
    """(index, H x W x 3 RGB) of the frame at ``time_s`` (default: the middle of the video)."""
    i = info.frames // 2 if time_s is None else min(info.index_at(time_s), info.frames - 1)
    with VideoReader(info) as reader:
        frames = reader.read(i, i + 1)
    if len(frames) == 0:
        raise SelfeeError(f"{info.path}: frame {i} could not be decoded")
    return i, frames[0]


def grid_step(height: int, width: int) -> int:
    """A round grid spacing giving about ten lines across the longer side."""
    target = max(height, width) / 10
    for step in (5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if step >= target:
            return step
    return 1000


def grid_image(rgb: np.ndarray, step: int | None = None, arena: Arena | None = None) -> np.ndarray:
    """H x W x 3 RGB -> BGR image with a labelled pixel grid (and the arena's corners, when given).

    Grid lines sit on pixel centres: the line labelled 100 passes through pixel column 100.
    """
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    step = step or grid_step(h, w)
    img = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    over = img.copy()
    for x in range(0, w, step):
        cv2.line(over, (x, 0), (x, h - 1), (0, 255, 255), 1)
    for y in range(0, h, step):
        cv2.line(over, (0, y), (w - 1, y), (0, 255, 255), 1)
    img = cv2.addWeighted(over, 0.5, img, 0.5, 0)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    for x in range(step, w, step):
        cv2.putText(img, str(x), (x + 2, 10), font, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, str(x), (x + 2, 10), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    for y in range(step, h, step):
        cv2.putText(img, str(y), (2, y - 2), font, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, str(y), (2, y - 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    if arena is not None:
        pts = np.rint(np.asarray(arena.corners)).astype(int)
        order = [0, 1, 2, 3] if arena.kind == "open_field" else [0, 2, 1, 3]
        cv2.polylines(img, [pts[order].reshape(-1, 1, 2)], True, (0, 0, 255), 1, cv2.LINE_AA)
        for k, (px, py) in enumerate(pts):
            cv2.circle(img, (int(px), int(py)), 4, (0, 0, 255), -1, cv2.LINE_AA)
            cv2.putText(img, str(k + 1), (int(px) + 5, int(py) - 5), font, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    return img


def arena_preview(
    video: str | os.PathLike,
    out: str | os.PathLike,
    time_s: float | None = None,
    step: int | None = None,
    corners: str | os.PathLike | None = None,
    kind: str = "open_field",
    size: int = 500,
    margin: float | None = None,
) -> dict:
    """``selfee-fast arena --out``: a frame with a grid; with corners, the corners and the warped arena beside it."""
    cv2 = _cv2()
    info = probe(video)
    index, rgb = read_frame(info, time_s)
    arena = None
    if corners is not None:
        spec = corners_overrides([info.path], corners).get(info.path.name)
        if spec is None:
            raise SelfeeError(f"{corners}: no corners for {info.path.name}")
        arena = Arena(spec.get("arena", kind), spec["arena_corners"], int(spec.get("arena_size", size)),
                      spec.get("arena_margin", margin))
    img = grid_image(rgb, step, arena)
    if arena is not None:
        warped = ArenaWarp(arena, info.height, info.width)(torch.from_numpy(rgb).permute(2, 0, 1)[None])
        warped = cv2.cvtColor(warped[0].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR)
        hh = max(img.shape[0], warped.shape[0])
        pad = [np.pad(p, ((0, hh - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in (img, warped)]
        img = np.concatenate([pad[0], np.full((hh, 8, 3), 255, np.uint8), pad[1]], axis=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise SelfeeError(f"{out}: cannot write the image (is the suffix .png?)")
    return {"video": str(info.path), "frame": index, "png": str(out), "width": info.width, "height": info.height,
            "arena": None if arena is None else arena.kind}


def has_display() -> bool:
    """True where a window can be opened (macOS, Windows, or an X11/Wayland display)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pick_corners(
    video: str | os.PathLike,
    out: str | os.PathLike,
    kind: str = "open_field",
    time_s: float | None = None,
) -> Path:
    """Show a frame, take four clicks in the kind's corner order, write them as a JSON corner file."""
    if not has_display():
        raise SelfeeError(
            "no display for the interactive picker: write the corner file by hand from the grid PNG "
            "(selfee-fast arena VIDEO --out frame.png; see docs/tracking.md)"
        )
    from selfee._deps import require

    matplotlib = require("matplotlib", "the interactive corner picker")
    plt = require("matplotlib.pyplot", "the interactive corner picker")
    if matplotlib.get_backend().lower() in _NON_INTERACTIVE:
        raise SelfeeError(f"matplotlib's backend '{matplotlib.get_backend()}' cannot open windows (set MPLBACKEND=TkAgg)")
    info = probe(video)
    _, rgb = read_frame(info, time_s)
    names = CORNER_NAMES[kind]
    fig, ax = plt.subplots(figsize=(10, 10 * info.height / info.width))
    ax.imshow(rgb)  # imshow puts pixel centres on integer coordinates, the arena module's convention
    ax.set_title("click: " + ", ".join(f"{k + 1} {n}" for k, n in enumerate(names)) + " (right click: undo)")
    pts = plt.ginput(4, timeout=0)
    plt.close(fig)
    if len(pts) != 4:
        raise SelfeeError(f"the picker was closed after {len(pts)} of 4 corners")
    path = write_corners(out, kind, pts)
    log.info("wrote %s", path)
    return path
