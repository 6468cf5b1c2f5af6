"""What ``selfee-fast track`` writes: per video ``<stem>_track.csv`` and a PNG, then ``summary.csv`` and
``manifest.json`` (:func:`track_videos`, the command's one function).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from selfee._deps import require
from selfee.errors import SelfeeError
from selfee.tracking.prepare import failure
from selfee.tracking.track import Track, TrackOptions, summary_row, track_video
from selfee.video.arena import Arena

log = logging.getLogger("selfee")


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
    cv2 = require("cv2", "tracking")
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
    from selfee.config import SelfeeConfig
    from selfee.console import progress as make_progress
    from selfee.fileio import atomic_write, atomic_write_json, check_writable
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
