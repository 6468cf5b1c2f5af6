"""Inputs and outputs of the analyses: embedding directories, per-frame label files, result CSVs."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

LABEL_SUFFIXES = (".txt", ".csv")


# ---------------------------------------------------------------------------------------------
# Embeddings: <stem>.npy (rows x dim) + <stem>.csv (frame,time_s), as `selfee-fast embed` writes
# ---------------------------------------------------------------------------------------------


@dataclass
class EmbeddedVideo:
    """One video's embeddings: row ``i`` of the array is video frame ``frames[i]`` at ``times[i]`` s."""

    stem: str
    path: Path  # the .npy
    frames: np.ndarray  # int64, 0-based video frame index of each row
    times: np.ndarray  # float64, seconds since the first frame
    group: str = ""  # the directory (or group name) it came from
    rows: slice | None = field(default=None, repr=False)  # a segment: these rows of the file only

    @property
    def n(self) -> int:
        return len(self.frames)

    @property
    def dim(self) -> int:
        return int(np.load(self.path, mmap_mode="r").shape[1])

    def load(self, mmap: bool = True) -> np.ndarray:
        """The rows x dim array (memory-mapped by default: nothing is read until used)."""
        arr = np.load(self.path, mmap_mode="r" if mmap else None)
        return arr[self.rows] if self.rows is not None else arr

    def segment(self, start: int, stop: int, name: str) -> EmbeddedVideo:
        """Rows ``[start, stop)`` as a video of their own (for cross-validation within one long video)."""
        base = self.rows.start if self.rows is not None else 0
        return EmbeddedVideo(
            name, self.path, self.frames[start:stop], self.times[start:stop], self.group, slice(base + start, base + stop)
        )


def read_index_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``frame,time_s`` CSV -> (frames int64, times float64), with a one-line error naming the problem."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["frame", "time_s"]:
            raise SelfeeError(f"{path}: expected a header 'frame,time_s' (got {header})")
        frames, times = [], []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                frames.append(int(row[0]))
                times.append(float(row[1]))
            except (ValueError, IndexError):
                raise SelfeeError(f"{path}:{lineno}: expected 'frame,time_s' numbers (got {','.join(row)})") from None
    f = np.asarray(frames, np.int64)
    if len(f) > 1 and np.any(np.diff(f) <= 0):
        raise SelfeeError(f"{path}: frame numbers must increase strictly")
    return f, np.asarray(times, np.float64)


def load_video(npy: Path, group: str = "") -> EmbeddedVideo:
    """Check one ``<stem>.npy`` + ``<stem>.csv`` pair and describe it (the array is not read)."""
    index = npy.with_suffix(".csv")
    if not index.is_file():
        raise SelfeeError(f"{npy}: no matching {index.name} (frame,time_s) next to it")
    try:
        arr = np.load(npy, mmap_mode="r")
    except Exception as exc:
        raise SelfeeError(f"{npy}: cannot read ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise SelfeeError(f"{npy}: expected a non-empty frames x dim array (got shape {arr.shape})")
    frames, times = read_index_csv(index)
    if len(frames) != arr.shape[0]:
        raise SelfeeError(f"{npy}: {arr.shape[0]} rows but {index.name} lists {len(frames)} frames")
    return EmbeddedVideo(npy.stem, npy, frames, times, group or npy.parent.name)


def list_videos(embed_dir: str | Path, group: str = "") -> tuple[list[EmbeddedVideo], list[SelfeeError]]:
    """Every ``<stem>.npy`` with a matching ``<stem>.csv`` in a directory (other .npy files are ignored).

    Returns (videos, errors): a bad pair is reported and the others still load.
    """
    d = Path(embed_dir)
    if not d.is_dir():
        raise SelfeeError(f"{d}: not a directory of embeddings")
    videos, errors = [], []
    for npy in sorted(d.glob("*.npy")):
        if not npy.with_suffix(".csv").is_file():
            log.debug("%s: no %s, not a video's embeddings; skipped", npy, npy.with_suffix(".csv").name)
            continue
        try:
            videos.append(load_video(npy, group or d.name))
        except SelfeeError as exc:
            log.error("%s", exc)
            errors.append(exc)
    if not videos and not errors:
        raise SelfeeError(f"{d}: no embeddings found (expected <stem>.npy + <stem>.csv pairs from 'selfee-fast embed')")
    return videos, errors


def load_group(embed_dir: str | Path) -> tuple[list[EmbeddedVideo], list[SelfeeError]]:
    """:func:`list_videos` that needs at least one video to load and one embedding width for all."""
    videos, errors = list_videos(embed_dir)
    if not videos:
        raise SelfeeError(f"{embed_dir}: no embeddings could be loaded")
    check_dims(videos)
    return videos, errors


def check_dims(videos: Iterable[EmbeddedVideo]) -> int:
    """The common embedding width (an error names the first video that differs)."""
    dim = None
    first = None
    for v in videos:
        if dim is None:
            dim, first = v.dim, v
        elif v.dim != dim:
            raise SelfeeError(f"{v.path}: embedding width {v.dim} differs from {first.path} ({dim})")
    if dim is None:
        raise SelfeeError("no videos to analyse")
    return dim


def split_segments(videos: list[EmbeddedVideo], segments: int) -> list[EmbeddedVideo]:
    """Cut every video into ``segments`` contiguous parts named ``<stem>#<i>`` (1: unchanged)."""
    if segments <= 1:
        return list(videos)
    out = []
    for v in videos:
        if v.n < segments:
            raise SelfeeError(f"{v.path}: {v.n} frames cannot be cut into {segments} segments")
        bounds = np.linspace(0, v.n, segments + 1).round().astype(int)
        out.extend(v.segment(int(a), int(b), f"{v.stem}#{i + 1}") for i, (a, b) in enumerate(zip(bounds, bounds[1:])))
    return out


# ---------------------------------------------------------------------------------------------
# Label files
# ---------------------------------------------------------------------------------------------


@dataclass
class FrameLabels:
    """Per-frame labels of one video: ``frames`` (0-based video frame indices) and their ``labels``."""

    path: Path
    frames: np.ndarray  # int64, sorted, unique
    labels: np.ndarray  # object (str)

    def for_video(self, video: EmbeddedVideo) -> np.ndarray:
        """Label of each embedding row ('' where the frame has no label), matched by frame number."""
        out = np.full(video.n, "", dtype=object)
        pos = np.searchsorted(self.frames, video.frames)
        pos = np.clip(pos, 0, max(len(self.frames) - 1, 0))
        if len(self.frames):
            hit = self.frames[pos] == video.frames
            out[hit] = self.labels[pos[hit]]
        return out


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def read_label_text(path: Path) -> FrameLabels:
    """The original Selfee format: ``start end label`` per line, 1-based inclusive frame ranges, ``#`` comments."""
    spans: list[tuple[int, int, str, int]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = _strip_comment(raw)
            if not line:
                continue
            parts = line.split()
            if len(parts) < 3:
                raise SelfeeError(f"{path}:{lineno}: expected 'start end label' (got {raw.strip()!r})")
            try:
                start, end = int(parts[0]), int(parts[1])
            except ValueError:
                raise SelfeeError(f"{path}:{lineno}: start and end must be integers (got {raw.strip()!r})") from None
            if start < 1 or end < start:
                raise SelfeeError(f"{path}:{lineno}: need 1 <= start <= end (frames are 1-based, got {start} {end})")
            spans.append((start, end, " ".join(parts[2:]), lineno))
    spans.sort()
    for (_, e0, _, l0), (s1, _, _, l1) in zip(spans, spans[1:]):
        if s1 <= e0:
            raise SelfeeError(f"{path}:{l1}: frame range overlaps the one on line {l0}")
    if not spans:
        return FrameLabels(path, np.zeros(0, np.int64), np.zeros(0, object))
    frames = np.concatenate([np.arange(s - 1, e, dtype=np.int64) for s, e, _, _ in spans])
    labels = np.concatenate([np.full(e - s + 1, lab, dtype=object) for s, e, lab, _ in spans])
    return FrameLabels(path, frames, labels)


def read_label_csv(path: Path) -> FrameLabels:
    """CSV with a ``frame,label`` header; frame = 0-based video frame (as in the embedding CSV); empty label = none."""
    frames, labels = [], []
    seen: dict[int, int] = {}  # frame -> line it was labelled on
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        cols = [h.strip().lower() for h in header] if header else []
        if "frame" not in cols or "label" not in cols:
            raise SelfeeError(f"{path}:1: expected a header with 'frame' and 'label' columns (got {header})")
        fi, li = cols.index("frame"), cols.index("label")
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) <= max(fi, li):
                raise SelfeeError(f"{path}:{lineno}: expected {len(cols)} columns (got {','.join(row)!r})")
            try:
                frame = int(row[fi])
            except ValueError:
                raise SelfeeError(f"{path}:{lineno}: frame must be an integer (got {row[fi]!r})") from None
            if frame < 0:
                raise SelfeeError(f"{path}:{lineno}: frame must be >= 0 (0-based, got {frame})")
            label = row[li].strip()
            if label:
                if frame in seen:
                    raise SelfeeError(f"{path}:{lineno}: frame {frame} is labelled again (first on line {seen[frame]})")
                seen[frame] = lineno
                frames.append(frame)
                labels.append(label)
    f = np.asarray(frames, np.int64)
    order = np.argsort(f, kind="stable")
    f = f[order]
    return FrameLabels(path, f, np.asarray(labels, dtype=object)[order])


def read_labels(path: str | Path) -> FrameLabels:
    """A label file in either format (by suffix: .txt = ranges, .csv = per frame)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_label_csv(path)
    return read_label_text(path)


def find_label_file(labels_dir: Path, stem: str) -> Path | None:
    """``<stem>.txt`` or ``<stem>.csv`` in ``labels_dir`` (an error when both exist)."""
    found = [labels_dir / f"{stem}{s}" for s in LABEL_SUFFIXES if (labels_dir / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise SelfeeError(f"{labels_dir}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def write_label_csv(path: Path, frames: np.ndarray, labels: np.ndarray) -> Path:
    """Per-frame labels in the CSV label format (``frame,label``; frames without a label are left out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "label"])
        for f, lab in zip(frames, labels):
            if lab:
                w.writerow([int(f), lab])
    return path


def write_table(path: Path, header: list[str], rows: Iterable[Iterable]) -> Path:
    """A CSV with a header; floats with 6 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([f"{x:.6g}" if isinstance(x, (float, np.floating)) else x for x in row])
    return path


def safe_name(name: str) -> str:
    """A file-name-safe version of a video or segment name."""
    return re.sub(r"[^A-Za-z0-9._#-]+", "_", name)
