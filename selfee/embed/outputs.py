"""A video's embedding files, streamed and atomic: ``<stem>.npy``, ``<stem>.csv``, the pooled
``<stem>.window<N>.npy`` and the ``<stem>.embed.json`` record that marks the video complete, with the
spread of the video's embeddings (:class:`Spread`: a nearly constant embedding is useless, and
:func:`warn_if_constant` says so).

Rows are appended as they are computed (memory does not grow with the video) to ``.partial``
files, renamed into place only when the video is complete, the record last: an interrupted run
never leaves a truncated ``.npy`` that looks complete. :func:`completed` and :func:`video_key`
decide whether a rerun can skip a video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from pathlib import Path

import numpy as np

from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError
from selfee.fileio import AtomicFile, atomic_write_json

log = logging.getLogger("selfee")

_NPY_HEADER = 128  # bytes: fixed, so the final shape can be written over the provisional one


def _npy_header(rows: int, dim: int, dtype: np.dtype) -> bytes:
    meta = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (rows, dim)}
    text = repr(meta)
    pad = _NPY_HEADER - 10 - len(text) - 1
    if pad < 0:
        raise ValueError("npy header too long")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _NPY_HEADER - 10) + (text + " " * pad + "\n").encode("latin1")


class NpyStreamWriter:
    """Append rows to a ``.npy`` being written at ``path.partial``; ``commit`` renames it into place."""

    def __init__(self, path: Path, dim: int, dtype: str = "float32"):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.out = AtomicFile(self.path, tmp=self.tmp)
        self.f = self.out.file
        self.f.write(_npy_header(0, dim, self.dtype))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got {rows.shape}")
        self.f.write(rows.tobytes())
        self.rows += rows.shape[0]

    def commit(self) -> Path:
        self.f.seek(0)
        self.f.write(_npy_header(self.rows, self.dim, self.dtype))
        return self.out.commit()

    def abort(self) -> None:
        self.out.abort()


def npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of a complete ``.npy`` (its size matches its header), else None."""
    try:
        arr = np.load(path, mmap_mode="r")
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(arr, np.memmap) or size != arr.offset + arr.nbytes:
        return None
    return tuple(arr.shape), arr.dtype


class WindowPool:
    """The original Selfee's windowed average pooling (``nn.AvgPool1d(N, stride=N)`` over frames).

    Means of consecutive, non-overlapping windows of ``n`` frames from the first embedded frame;
    an incomplete last window is dropped. Pooled row j covers per-frame rows [jN, (j+1)N); the
    original labelled it with the frame at row jN + N//2. Streaming: only < N rows are kept.
    """

    def __init__(self, n: int):
        self.n = n
        self.rest = np.zeros((0, 0), np.float32)

    def add(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.float32)
        if len(self.rest):
            rows = np.concatenate([self.rest, rows])
        k = len(rows) // self.n
        self.rest = rows[k * self.n :]
        return rows[: k * self.n].reshape(k, self.n, rows.shape[1]).mean(1, dtype=np.float64).astype(np.float32)


def format_index(frames: np.ndarray, times: np.ndarray) -> str:
    """``frame,time_s`` lines for a batch (one string, written in one call), built with array operations.

    The same text as ``f"{frame},{time:.6f}\\n"`` per row, including Python's rounding of the
    binary value (half to even on exact ties): the product ``time * 1e6`` is split into its
    rounded value and its exact error (Dekker), which decides the rounding where the rounded
    product ends in exactly .5. Rows the fast path does not cover (negative frames or times,
    non-finite or huge times) make the batch use the per-row formatting.
    """
    frames = np.asarray(frames)
    times = np.asarray(times, np.float64)
    if len(frames) == 0:
        return ""
    if (frames.dtype.kind not in "iu" or frames.min() < 0 or not np.isfinite(times).all()
            or np.signbit(times).any() or times.max() >= 4e9):
        return "".join(f"{f},{t:.6f}\n" for f, t in zip(frames.tolist(), times.tolist()))
    # Microseconds, rounded as the exact decimal expansion of each float would round.
    hi = times * 1e6
    split = times * 134217729.0  # 2**27 + 1: Dekker's split of the times into two 26-bit halves
    t_hi = split - (split - times)
    t_lo = times - t_hi
    lo = (t_hi * 1e6 - hi) + t_lo * 1e6  # exact: hi + lo == times * 1e6
    base = np.floor(hi)
    frac = hi - base
    odd = np.fmod(base, 2) == 1
    up = (frac > 0.5) | ((frac == 0.5) & ((lo > 0) | ((lo == 0) & odd)))
    us = (base + up).astype(np.int64)
    secs, micro = np.divmod(us, 1_000_000)
    comma = np.full((len(frames), 1), ord(","), np.uint8)
    point = np.full((len(frames), 1), ord("."), np.uint8)
    newline = np.full((len(frames), 1), ord("\n"), np.uint8)
    chars = np.concatenate([_digits(frames.astype(np.int64)), comma, _digits(secs), point,
                            _digits(micro, width=6, pad=False), newline], axis=1)
    return chars[chars != 0].tobytes().decode("ascii")


def _digits(values: np.ndarray, width: int | None = None, pad: bool = True) -> np.ndarray:
    """ASCII decimal digits of non-negative ints, one row each, right-aligned; leading zeros are 0 bytes
    (dropped by the caller) when ``pad``, else kept (zero-padded to ``width``)."""
    if width is None:
        width = len(str(int(values.max()))) if len(values) else 1
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)
    if pad:
        lead = values[:, None] < powers
        lead[:, -1] = False  # zero itself is "0"
        chars[lead] = 0
    return chars


# Mean pairwise cosine above which a video's embeddings are reported nearly constant. On the fly study's
# videos (docs/quality.md) every trained encoder, and the untrained one with BatchNorm statistics of plain
# frames, stayed at or below 0.91; untrained encoders with their initial statistics (k-NN barely above raw
# pixels or below) gave 0.98-0.999, and the collapsed projector of the transfer case 0.9999.
NEARLY_CONSTANT_COSINE = 0.95
NEARLY_CONSTANT_COLLAPSE = 0.99  # collapse level above which too (all-zero rows have no cosine)


class Spread:
    """How spread out a video's embedding rows are, accumulated over every row as they are written (float64
    sums over the L2-normalised rows z: memory of one row, whatever the video's length).

    ``collapse``: the collapse level the trainer logs (``collapse_z``, :func:`selfee.losses.collapse_level`):
    1 - sqrt(dim) x the mean over dimensions of the std (n - 1) across frames of z; ~0 spread over the
    sphere, 1 constant. ``mean_cosine``: the mean cosine similarity over all pairs of distinct rows,
    (|sum z|^2 - sum |z|^2) / (n (n - 1)).
    """

    def __init__(self):
        self.n = 0
        self.s1: np.ndarray | None = None  # sum of z, per dimension
        self.s2: np.ndarray | None = None  # sum of z^2, per dimension

    def add(self, rows: np.ndarray) -> Spread:
        z = np.asarray(rows, np.float64)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.maximum(norm, 1e-12)  # as torch.nn.functional.normalize: zero rows stay zero
        if self.s1 is None:
            self.s1, self.s2 = np.zeros(z.shape[1]), np.zeros(z.shape[1])
        self.s1 += z.sum(0)
        self.s2 += (z * z).sum(0)
        self.n += len(z)
        return self

    def result(self) -> dict:
        n = self.n
        if n < 2:
            return {"frames": n, "collapse": None, "mean_cosine": None}
        var = np.maximum(self.s2 - self.s1 * self.s1 / n, 0) / (n - 1)
        collapse = 1 - math.sqrt(len(var)) * float(np.sqrt(var).mean())
        cosine = (float(self.s1 @ self.s1) - float(self.s2.sum())) / (n * (n - 1))
        return {"frames": n, "collapse": collapse, "mean_cosine": cosine}


def embedding_spread(x: np.ndarray) -> dict:
    """:class:`Spread` of the rows of ``x`` (frames x dim)."""
    return Spread().add(x).result()


def nearly_constant(spread: dict | None) -> bool:
    """True when a video's embeddings (:class:`Spread`) are nearly the same vector for every frame."""
    if not spread or spread.get("mean_cosine") is None:
        return False
    return spread["mean_cosine"] > NEARLY_CONSTANT_COSINE or spread["collapse"] > NEARLY_CONSTANT_COLLAPSE


def warn_if_constant(name: str, spread: dict | None) -> bool:
    """One warning line when ``spread`` says the embeddings of video ``name`` are nearly constant."""
    if not nearly_constant(spread):
        return False
    log.warning("%s: embeddings nearly constant (mean pairwise cosine %.4f, collapse level %.3f over %d frames): "
                "the weights map this video's frames to almost one vector, useless for classification; see "
                "docs/quality.md", name, spread["mean_cosine"], spread["collapse"], spread["frames"])
    return True


class VideoOutputs:
    """One video's files, streamed to ``.partial`` names; ``commit`` renames them, the record last (with the
    rows' :class:`Spread`)."""

    def __init__(self, out_dir: Path, stem: str, dtype: str = "float32", window: int = 0):
        self.spread = Spread()
        self.paths = output_paths(out_dir, stem, window)
        self.dtype = dtype
        self.pool = WindowPool(window) if window > 1 else None
        self.emb: NpyStreamWriter | None = None
        self.pooled: NpyStreamWriter | None = None
        self.csv = AtomicFile(self.paths["csv"], "w", tmp=self.paths["csv"].with_name(self.paths["csv"].name + ".partial"),
                              newline="")
        self.csv.write("frame,time_s\n")
        self.rows = 0

    def write(self, frames: np.ndarray, times: np.ndarray, emb: np.ndarray) -> int:
        if self.emb is None:
            self.emb = NpyStreamWriter(self.paths["npy"], emb.shape[1], self.dtype)
            if self.pool is not None:
                self.pooled = NpyStreamWriter(self.paths["window"], emb.shape[1], self.dtype)
        if len(frames) != len(emb):
            raise SelfeeError(f"the embedder returned {len(emb)} rows for {len(frames)} frames")
        self.emb.write(emb)
        self.spread.add(emb)
        self.csv.write(format_index(frames, times))
        if self.pool is not None:
            pooled = self.pool.add(emb)
            if len(pooled):
                self.pooled.write(pooled)
        self.rows += len(frames)
        return len(frames)

    def commit(self, record: dict) -> dict:
        # Until the new record is written the video reads as incomplete, whatever else is on disk.
        self.paths["record"].unlink(missing_ok=True)
        self.csv.commit()
        if self.pooled is not None:
            self.pooled.commit()
        self.emb.commit()
        record = {**record, "frames": self.rows, "dim": self.emb.dim, "dtype": self.dtype,
                  "window_rows": self.pooled.rows if self.pooled is not None else None,
                  "spread": self.spread.result()}
        atomic_write_json(self.paths["record"], record)
        return record

    def abort(self) -> None:
        self.csv.abort()
        for w in (self.emb, self.pooled):
            if w is not None:
                w.abort()


def output_paths(out_dir: Path, stem: str, window: int = 0) -> dict[str, Path]:
    out = {"npy": out_dir / f"{stem}.npy", "csv": out_dir / f"{stem}.csv", "record": out_dir / f"{stem}.embed.json"}
    if window > 1:
        out["window"] = out_dir / f"{stem}.window{window}.npy"
    return out


def completed(out_dir: Path, stem: str, key: str, window: int = 0) -> dict | None:
    """The record of a finished video whose outputs match ``key`` and are whole on disk, else None.

    Whole: the record's key matches (weights, data settings, dtype, window, video file), the
    ``.npy`` has the recorded rows and its size matches its header, the ``.csv`` has one line per
    row, and the pooled file (with a window) has one row per complete window.
    """
    paths = output_paths(out_dir, stem, window)
    try:
        record = json.loads(paths["record"].read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    n, dim = record.get("frames"), record.get("dim")
    got = npy_shape(paths["npy"])
    if got is None or got[0] != (n, dim) or got[1] != np.dtype(record.get("dtype")):
        return None
    try:
        with open(paths["csv"], "rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None
    if lines != n + 1:
        return None
    if window > 1:
        pooled = npy_shape(paths["window"])
        if pooled is None or pooled[0] != (n // window, dim):
            return None
    return record


def video_key(weights_sha256: str, cfg: SelfeeConfig, video: Path, dtype: str, window: int) -> str:
    """What makes a video's outputs reusable: the weights, features, data settings, dtype, window and video file."""
    st = video.stat()
    ident = {
        "weights_sha256": weights_sha256,
        "data": cfg.to_dict()["data"],
        "dtype": dtype,
        "window": window,
        "video": {"name": video.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    }
    if cfg.embed.features != "projector":  # keys of projector embeddings (all before embed.features) unchanged
        ident["features"] = cfg.embed.features
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
