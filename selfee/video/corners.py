"""Arena corner files: reading and writing them, and giving each video its arena in the config.

A corner source is a corner file (JSON or CSV; one spec for every video, or one per video by name
or stem), a folder of ``<stem>.json`` / ``<stem>.csv`` files, or the corners as text
(``"x1,y1 x2,y2 x3,y3 x4,y4"``). :func:`apply_corners` turns one into per-video
``data.videos`` entries of a :class:`~selfee.config.SelfeeConfig`; the geometry lives in
:mod:`selfee.video.arena`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from selfee.errors import ConfigError, VideoError
from selfee.video.arena import Arena, check_corners

log = logging.getLogger("selfee")

_FILE_KEYS = {"arena": "arena", "corners": "arena_corners", "size": "arena_size", "margin": "arena_margin"}


def parse_corners_text(text: str) -> tuple[tuple[float, float], ...]:
    """``"x1,y1 x2,y2 x3,y3 x4,y4"`` (separators: spaces, ';' or ',') -> four (x, y) pairs."""
    nums = [t for t in re.split(r"[\s,;()\[\]]+", text.strip()) if t]
    try:
        vals = [float(t) for t in nums]
    except ValueError:
        raise ConfigError(f"corners {text!r} must be eight numbers: x1,y1 x2,y2 x3,y3 x4,y4") from None
    if len(vals) != 8:
        raise ConfigError(f"corners {text!r} must be eight numbers: x1,y1 x2,y2 x3,y3 x4,y4 (got {len(vals)})")
    return tuple((vals[i], vals[i + 1]) for i in range(0, 8, 2))


def _entry(raw: Any, where: str) -> dict[str, Any]:
    """One video's corner spec (a list of four pairs or a mapping) -> PreprocessConfig field values."""
    if isinstance(raw, (list, tuple)):
        raw = {"corners": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a list of four [x, y] corners or an object with 'corners'")
    unknown = sorted(set(raw) - set(_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(_FILE_KEYS)})")
    if "corners" not in raw:
        raise ConfigError(f"{where}: no 'corners' given")
    out = {_FILE_KEYS[k]: v for k, v in raw.items()}
    try:
        pts = np.asarray(out["arena_corners"], np.float64)
    except (TypeError, ValueError):
        pts = None
    if pts is None or pts.shape != (4, 2):
        raise ConfigError(f"{where}: 'corners' must be four [x, y] pairs (got {out['arena_corners']!r})")
    out["arena_corners"] = tuple((float(x), float(y)) for x, y in pts)
    return out


def read_corners(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A corner file -> {video name or stem: PreprocessConfig fields}; key ``"*"`` means every video.

    JSON: ``[[x, y] x 4]``, ``{"arena": ..., "corners": [...], "size": ..., "margin": ...}`` or
    ``{"videos": {"<name or stem>": <either of those>}}``. CSV: a header with ``x,y`` (optional
    ``video`` and ``arena`` columns) and four rows per video, in corner order; or four headerless
    ``x,y`` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: corner file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse JSON ({exc})") from None
        if isinstance(data, dict) and "videos" in data:
            if set(data) != {"videos"} or not isinstance(data["videos"], dict):
                raise ConfigError(f"{path}: 'videos' must be the only key and map video names to corners")
            return {str(k): _entry(v, f"{path} [{k}]") for k, v in data["videos"].items()}
        return {"*": _entry(data, str(path))}
    if suffix == ".csv":
        return _read_corners_csv(path)
    raise ConfigError(f"{path}: corner files must end in .json or .csv")


def _read_corners_csv(path: Path) -> dict[str, dict[str, Any]]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ConfigError(f"{path}: empty corner file")
    head = [c.strip().lower() for c in rows[0]]
    if "x" in head and "y" in head:
        body = rows[1:]
    else:  # headerless: four rows of x,y
        head, body = ["x", "y"], rows
    col = {name: i for i, name in enumerate(head)}
    groups: dict[str, list[list[str]]] = {}
    for r in body:
        key = r[col["video"]].strip() if "video" in col else "*"
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        where = f"{path} [{key}]" if key != "*" else str(path)
        try:
            corners = [(float(r[col["x"]]), float(r[col["y"]])) for r in rs]
        except (ValueError, IndexError):
            raise ConfigError(f"{where}: x and y must be numbers in every row") from None
        raw: dict[str, Any] = {"corners": corners}
        if "arena" in col:
            kinds = {r[col["arena"]].strip() for r in rs}
            if len(kinds) != 1:
                raise ConfigError(f"{where}: one arena kind per video (got {sorted(kinds)})")
            raw["arena"] = kinds.pop()
        out[key] = _entry(raw, where)
    return out


def write_corners(path: str | os.PathLike, kind: str, corners, size: int | None = None,
                  margin: float | None = None) -> Path:
    """Write a per-video JSON corner file (what the interactive picker saves)."""
    check_corners(kind, corners)
    data: dict[str, Any] = {"arena": kind, "corners": [[round(float(x), 2), round(float(y), 2)] for x, y in corners]}
    if size is not None:
        data["size"] = int(size)
    if margin is not None:
        data["margin"] = float(margin)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def corners_overrides(videos: Iterable[str | os.PathLike], corners: str | os.PathLike,
                      failures: list[VideoError] | None = None) -> dict[str, dict[str, Any]]:
    """Per-video arena fields from ``corners`` -> {video file name: PreprocessConfig field values}.

    ``corners`` is a corner file (one spec for every video, or one per video by name or stem), a
    folder holding ``<stem>.json`` / ``<stem>.csv`` per video, or the corners themselves as text
    (``"x1,y1 x2,y2 x3,y3 x4,y4"``). Videos without corners are left out (with a warning).
    The ``arena`` kind is absent when the source does not name it (see :func:`apply_corners`).
    A video's own corner file that is unusable raises ConfigError, or with a ``failures`` list is
    appended to it as a :class:`VideoError` for that video (which is left out) while the others go on.
    """
    videos = [Path(v) for v in videos]
    src = Path(corners)
    if src.is_dir():
        out = {}
        for v in videos:
            found = [p for p in (src / f"{v.stem}.json", src / f"{v.stem}.csv", src / f"{v.name}.json") if p.is_file()]
            if not found:
                log.warning("%s: no corner file %s.json or %s.csv in %s; no arena correction", v, v.stem, v.stem, src)
                continue
            try:
                spec = read_corners(found[0])
                out[v.name] = spec.get("*") or spec.get(v.name) or spec.get(v.stem) or _only(spec, found[0], v)
            except ConfigError as exc:
                if failures is None:
                    raise
                failures.append(VideoError(v, str(exc)))
        return out
    if not src.exists() and src.suffix.lower() not in (".json", ".csv") and re.search(r"\d", str(corners)):
        spec = {"*": {"arena_corners": parse_corners_text(str(corners))}}
    else:
        spec = read_corners(src)
    out = {}
    for v in videos:
        entry = spec.get("*") or spec.get(v.name) or spec.get(v.stem)
        if entry is None:
            log.warning("%s: not listed in %s; no arena correction", v, src)
            continue
        out[v.name] = dict(entry)
    return out


def _only(spec: dict, path: Path, video: Path) -> dict[str, Any]:
    if len(spec) == 1:
        return next(iter(spec.values()))
    raise ConfigError(f"{path}: lists several videos but none named {video.name} or {video.stem}")


def apply_corners(cfg, videos: Iterable[str | os.PathLike], corners: str | os.PathLike | None,
                  kind: str | None = None, failures: list[VideoError] | None = None):
    """A copy of a :class:`~selfee.config.SelfeeConfig` with per-video arena entries from ``corners``.

    Each video's entry starts from its current preprocessing (its ``data.videos`` entry or
    ``data.preprocess``) and takes the arena fields. Where the corners do not name the arena kind
    it is ``kind``, else the config's arena when set, else ``open_field``. Validation (corner
    order, margin) happens here, naming the video: a ConfigError, or with a ``failures`` list one
    :class:`VideoError` per bad video appended to it (those videos get no entry; the caller drops
    them) while the others go on. A corner source that cannot be read at all still raises.
    """
    if corners is None:
        return cfg
    videos = [Path(v) for v in videos]
    by_name = {v.name: v for v in videos}
    entries = dict(cfg.data.videos)
    for name, fields in corners_overrides(videos, corners, failures).items():
        base = cfg.data.preprocess_for(name)
        fields = dict(fields)
        fields.setdefault("arena", kind or (base.arena if base.arena != "none" else "open_field"))
        try:
            new = dataclasses.replace(base, **fields)
            Arena.from_config(new)
        except (ConfigError, TypeError) as exc:
            if failures is None:
                raise ConfigError(f"{name}: {exc}") from None
            failures.append(VideoError(by_name.get(name, name), str(exc)))
            continue
        entries[name] = new
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, videos=entries))
