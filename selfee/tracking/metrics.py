"""Measures from a centroid track: smoothed positions, speed, distance, zone occupancy and entries.

Pure NumPy on per-frame arrays where a frame without an animal holds NaN; nothing is filled in.
Zones follow the original tracker tool (EBGU/RodentTracker): the open field's centre zone is the
square around the arena centre whose half-side is ``centre_fraction`` of the arena's half-side
(0.5 there); the plus maze is split into its two open arms (horizontal after the warp), its two
closed arms (vertical) and the central square where they cross.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from selfee.errors import ConfigError
from selfee.video.arena import Arena

FILTERS = ("mean", "median", "none")
OPEN_FIELD_ZONES = ("centre", "periphery")
PLUS_MAZE_ZONES = ("open_1", "open_2", "closed_1", "closed_2", "centre")


def normalize_filter(name: str) -> str:
    """The speed filter's name; the original's ``aver`` is accepted for ``mean``."""
    name = {"aver": "mean", "average": "mean"}.get(name, name)
    if name not in FILTERS:
        raise ConfigError(f"speed filter must be one of {', '.join(FILTERS)} (got {name!r})")
    return name


def smooth_positions(xy: np.ndarray, window: int, filt: str) -> np.ndarray:
    """N x 2 positions -> the mean or median over a centred window of ``window`` frames.

    Frames without a position (NaN) are left out of their neighbours' windows and stay NaN.
    """
    filt = normalize_filter(filt)
    xy = np.asarray(xy, np.float64)
    if filt == "none" or window <= 1 or len(xy) == 0:
        return xy.copy()
    before = window // 2
    after = window - 1 - before
    padded = np.pad(xy, ((before, after), (0, 0)), constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # N x 2 x window
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows are expected
        out = np.nanmean(win, axis=-1) if filt == "mean" else np.nanmedian(win, axis=-1)
    out[np.isnan(xy).any(axis=1)] = np.nan
    return out


def speeds(xy: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per-frame speed (units per second): central difference, one-sided next to a gap or an end.

    NaN where the frame has no position or neither neighbour has one.
    """
    xy = np.asarray(xy, np.float64)
    t = np.asarray(times, np.float64)
    n = len(xy)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    ok = ~np.isnan(xy).any(axis=1)
    prev = np.r_[False, ok[:-1]] & ok
    nxt = np.r_[ok[1:], False] & ok
    lo = np.arange(n) - prev.astype(int)  # the previous frame when it has a position, else this one
    hi = np.arange(n) + nxt.astype(int)
    has = ok & (lo != hi)
    d = np.linalg.norm(xy[hi[has]] - xy[lo[has]], axis=1)
    dt = t[hi[has]] - t[lo[has]]
    out[has] = d / np.where(dt > 0, dt, np.nan)
    return out


def path_length(xy: np.ndarray) -> float:
    """Distance travelled: the sum of steps between consecutive frames with a position (gaps bridged)."""
    xy = np.asarray(xy, np.float64)
    p = xy[~np.isnan(xy).any(axis=1)]
    if len(p) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def zones(xy: np.ndarray, arena: Arena | None, centre_fraction: float = 0.5, arm_width: float = 0.1) -> np.ndarray:
    """Zone name per frame from warped-arena positions ('' without a position or an arena)."""
    xy = np.asarray(xy, np.float64)
    out = np.full(len(xy), "", dtype=object)
    if arena is None or len(xy) == 0:
        return out
    ok = ~np.isnan(xy).any(axis=1)
    dx = xy[:, 0] - arena.centre
    dy = xy[:, 1] - arena.centre
    a = arena.half_side
    if arena.kind == "open_field":
        inside = np.maximum(np.abs(dx), np.abs(dy)) < centre_fraction * a
        out[ok & inside] = "centre"
        out[ok & ~inside] = "periphery"
        return out
    hw = arm_width * a  # arm_width is a fraction of the maze's end-to-end length, 2a
    centre = (np.abs(dx) <= hw) & (np.abs(dy) <= hw)
    horizontal = np.abs(dx) > np.abs(dy)
    out[ok & ~centre & horizontal & (dx < 0)] = "open_1"
    out[ok & ~centre & horizontal & (dx >= 0)] = "open_2"
    out[ok & ~centre & ~horizontal & (dy < 0)] = "closed_1"
    out[ok & ~centre & ~horizontal & (dy >= 0)] = "closed_2"
    out[ok & centre] = "centre"
    return out


def zone_entries(z: np.ndarray, name: str) -> int:
    """Times the animal moved into zone ``name`` from another zone (frames without a zone skipped)."""
    known = np.asarray([v for v in z if v])
    if len(known) < 2:
        return 0
    return int(np.sum((known[1:] == name) & (known[:-1] != name)))


def summarize(xy: np.ndarray, speed: np.ndarray, z: np.ndarray, fps: float, arena: Arena | None,
              unit_per_px: float | None = None, unit: str = "units") -> dict:
    """One video's summary row: frames found, distance, speeds, time and entries per zone."""
    found = ~np.isnan(np.asarray(xy, np.float64)).any(axis=1)
    n, n_found = len(found), int(found.sum())
    dist = path_length(xy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_speed = float(np.nanmean(speed)) if n_found else float("nan")
    row = {
        "frames": n,
        "frames_found": n_found,
        "frames_missing": n - n_found,
        "duration_s": n / fps if fps else float("nan"),
        "distance_px": dist,
        "mean_speed_px_s": mean_speed,
    }
    if unit_per_px is not None:
        row[f"distance_{unit}"] = dist * unit_per_px
        row[f"mean_speed_{unit}_s"] = mean_speed * unit_per_px
    if arena is None:
        return row
    names = OPEN_FIELD_ZONES if arena.kind == "open_field" else PLUS_MAZE_ZONES
    for name in names:
        k = int(np.sum(z == name))
        row[f"{name}_time_s"] = k / fps if fps else float("nan")
        row[f"{name}_fraction"] = k / n_found if n_found else float("nan")
        row[f"{name}_entries"] = zone_entries(z, name)
    if arena.kind == "plus_maze":
        open_t = row["open_1_time_s"] + row["open_2_time_s"]
        closed_t = row["closed_1_time_s"] + row["closed_2_time_s"]
        open_e = row["open_1_entries"] + row["open_2_entries"]
        closed_e = row["closed_1_entries"] + row["closed_2_entries"]
        row.update(
            open_time_s=open_t,
            closed_time_s=closed_t,
            open_entries=open_e,
            closed_entries=closed_e,
            open_time_ratio=open_t / (open_t + closed_t) if open_t + closed_t > 0 else float("nan"),
            open_entry_ratio=open_e / (open_e + closed_e) if open_e + closed_e > 0 else float("nan"),
        )
    return row


def unit_per_px(arena: Arena | None, arena_length: float | None) -> float | None:
    """Physical units per warped pixel, from the arena's side (open field) or end-to-end length (plus maze)."""
    if arena is None or arena_length is None:
        return None
    if not (arena_length > 0 and math.isfinite(arena_length)):
        raise ConfigError(f"arena length must be > 0 (got {arena_length})")
    return arena_length / (2 * arena.half_side)
