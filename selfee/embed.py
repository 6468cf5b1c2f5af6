"""Embedding every frame of videos: ordered live-frame batches, an Embedder, streaming atomic outputs.

Per video the output folder gets ``<stem>.npy`` (frames x dim), ``<stem>.csv`` (``frame,time_s``:
0-based frame index in the video and seconds since its first frame), optionally
``<stem>.window<N>.npy`` (the original Selfee's windowed average pooling) and ``<stem>.embed.json``
(the record that marks the video complete); the run gets ``manifest.json``. Rows are written as
they are computed (memory does not grow with the video) into ``.partial`` files renamed into place
only when the video is complete, the record last, so an interrupted run never leaves a truncated
``.npy`` that looks complete. A rerun skips the videos whose record matches (same weights, data
settings, dtype, window and video file) and redoes the rest. Under ``torchrun`` the videos are
sharded across ranks and rank 0 writes the manifest.

Decode, host-to-device copies and inference overlap: the frame source runs in a prefetch thread
(into pinned memory for a GPU), an Embedder may return a pending result (``submit``) so the next
batch is queued before the previous one is read back, and GPU Embedders copy inputs on their own
CUDA stream.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError, VideoError
from selfee.fileio import AtomicFile, atomic_write_json, check_writable, file_sha256
from selfee.live_frames import neighbor_indices
from selfee.runtime import background, init_distributed, on_device, resolve_amp, resolve_device, versions

log = logging.getLogger("selfee")

# ---------------------------------------------------------------------------------------------
# Ordered live-frame batches (the reference embedding source; DALI's mirrors it)
# ---------------------------------------------------------------------------------------------


class EmbedBatch(NamedTuple):
    frames: torch.Tensor  # B x 3 x H x W uint8 at the input size (live frames or RGB)
    frame: torch.Tensor  # B int64: frame index in the video
    time_s: torch.Tensor  # B float64: seconds since the first frame


DECODE_BLOCK = 64  # frames PyAV decodes before they are turned into live frames (bounds the memory held)


def iter_embed_batches(src, cfg: SelfeeConfig, batch_size: int, decode_block: int | None = None,
                       blocks: Iterable[torch.Tensor] | None = None) -> Iterator[EmbedBatch]:
    """Every frame of ``src``'s window in order, as live frames, ``batch_size`` at a time.

    A rolling buffer keeps only the frames still needed (the past k of the next centre), so
    memory is independent of the video's length. The frame count is what the decoder yields.
    ``blocks`` (T x H x W x 3 uint8 tensors of consecutive window frames, on any device) replaces
    the PyAV decoder: the DALI pipelines feed their decoded frames through here.
    """
    from selfee.data import frames_to_samples
    from selfee.video import VideoReader

    d = cfg.data
    k = d.frame_interval if d.live_frames else 0
    size = tuple(d.input_size)
    pre = src.pre
    info = src.info
    buf: torch.Tensor | None = None  # frames [buf_start, buf_start + len(buf)) of the window
    buf_start = 0
    next_center = 0
    pending: list[torch.Tensor] = []  # live frames computed but not yet yielded
    pending_idx: list[torch.Tensor] = []

    def emit(stop: int, n_total: int | None):
        nonlocal buf, buf_start, next_center
        if stop <= next_center:
            return
        centers = torch.arange(next_center, stop)
        if d.live_frames:
            n = n_total if n_total is not None else buf_start + buf.shape[0] + k  # future exists unless at end
            idx = neighbor_indices(centers, k, n) - buf_start
            pending.append(buf[idx.flatten(), 0].view(len(centers), 3, *size))
        else:
            pending.append(buf[centers - buf_start])
        pending_idx.append(centers)
        next_center = stop
        drop = max(0, next_center - k - buf_start)  # keep the past k frames of the next centre
        if drop:
            buf = buf[drop:]
            buf_start += drop

    def flush(final: bool):
        nonlocal pending, pending_idx
        if not pending:
            return
        frames = torch.cat(pending)
        idx = torch.cat(pending_idx)
        cut = len(idx) if final else (len(idx) // batch_size) * batch_size
        for i in range(0, cut, batch_size):
            j = idx[i : i + batch_size]
            absolute = j + pre.start
            yield EmbedBatch(frames[i : i + batch_size], absolute, torch.from_numpy(info.times(absolute.numpy())))
        pending, pending_idx = ([frames[cut:]], [idx[cut:]]) if cut < len(idx) else ([], [])

    reader = VideoReader(info)
    try:
        decoded = 0
        decode_block = decode_block or DECODE_BLOCK
        for rgb in blocks if blocks is not None else _pyav_blocks(reader, pre, decode_block, d.live_frames):
            new = frames_to_samples(rgb, pre, d.live_frames, size)
            decoded += len(rgb)
            buf = new if buf is None else torch.cat([buf, new])
            emit(decoded - k, None)
            yield from flush(final=False)
        if decoded == 0:
            raise VideoError(info.path, "no frame could be decoded")
        emit(decoded, decoded)
        yield from flush(final=True)
    finally:
        reader.close()


def _pyav_blocks(reader, pre, decode_block: int, grey: bool = False) -> Iterator[torch.Tensor]:
    block: list[np.ndarray] = []
    for _, rgb in reader.iter_frames(pre.start, pre.stop, grey=grey):
        block.append(rgb)
        if len(block) == decode_block:
            yield torch.from_numpy(np.stack(block))
            block = []
    if block:
        yield torch.from_numpy(np.stack(block))


def embed_batches(src, cfg: SelfeeConfig, batch_size: int, device="cpu") -> Iterator[EmbedBatch]:
    """The ordered frame source chosen by ``embed.pipeline``: DALI where installed, else PyAV.

    Both yield the same :class:`EmbedBatch` stream (uint8 frames on the CPU, or on ``device``
    when the DALI GPU pipeline produced them there).
    """
    from selfee._deps import dali_component

    dali = dali_component(cfg.embed.pipeline, "selfee.pipelines.embed", "dali_embed_batches",
                          "the DALI embedding pipeline", device)
    if dali is not None:
        return dali(src, cfg, batch_size, device)
    return iter_embed_batches(src, cfg, batch_size)


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


class Embedder(Protocol):
    """Maps a uint8 batch of live frames (B x 3 x H x W, on the CPU or the Embedder's GPU) to
    float32 embeddings (B x dim).

    Optional: ``device`` (where it wants its inputs; the prefetch pins host memory for a GPU) and
    ``submit(frames)`` returning an object whose ``result()`` gives the array, so that the caller
    can queue the next batch before it waits for this one.
    """

    name: str
    dim: int

    def __call__(self, frames: torch.Tensor) -> np.ndarray: ...


class Ready:
    """A result already on the host."""

    def __init__(self, value: np.ndarray):
        self.value = value

    def result(self) -> np.ndarray:
        return self.value


class Pending:
    """Embeddings being copied into pinned host memory behind the GPU work queued before them."""

    def __init__(self, host: torch.Tensor, event: torch.cuda.Event):
        self.host = host
        self.event = event

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return self.host.numpy()


def device_to_host(y: torch.Tensor) -> Ready | Pending:
    """Start copying ``y`` (B x dim, any float dtype) back as float32 without waiting for the GPU."""
    if y.device.type != "cuda":
        return Ready(y.float().numpy())
    y = y.float()
    host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(y, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(y.device))
    return Pending(host, event)


class HostToDevice:
    """Copies uint8 batches to a GPU on a side stream, so the copy of batch i+1 overlaps the compute of i.

    The compute stream is ``compute`` when given (an Embedder's own stream), else the stream
    current when the copy is made; it waits for the copy, and the copied tensor is marked as used
    on it so that its memory is not reused before the compute has read it.
    """

    def __init__(self, device: torch.device, compute: torch.cuda.Stream | None = None):
        self.device = device
        self.compute = compute
        if device.type == "cuda":
            with torch.cuda.device(device):
                self.stream = torch.cuda.Stream(device)
        else:
            self.stream = None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return frames.cpu()
        compute = self.compute if self.compute is not None else torch.cuda.current_stream(self.device)
        if frames.is_cuda:
            # Frames a GPU decoder wrote on the current stream: the compute stream waits for them.
            x = frames.to(self.device)
            current = torch.cuda.current_stream(self.device)
            if compute != current:
                compute.wait_stream(current)
                x.record_stream(compute)
            return x
        if not frames.is_pinned():
            frames = frames.pin_memory()
        with torch.cuda.stream(self.stream):
            x = frames.to(self.device, non_blocking=True)
        compute.wait_stream(self.stream)
        x.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return x


def submit(embedder, frames: torch.Tensor):
    """``embedder.submit(frames)`` where it exists, else the finished result."""
    fn = getattr(embedder, "submit", None)
    return fn(frames) if fn is not None else Ready(np.asarray(embedder(frames)))


class TorchEmbedder:
    """Eager PyTorch encoder: channels-last, bf16 autocast and a CUDA graph per input shape on GPU; fp32 on CPU.

    On a GPU the graph is captured for the first batch size seen and replayed for every batch
    (smaller ones are padded into it), which removes the per-layer launch overhead of eager mode.
    """

    name = "torch"

    def __init__(self, encoder: torch.nn.Module, device: str | torch.device = "auto", amp: str = "auto",
                 cuda_graphs: bool | None = None):
        self.device = resolve_device(str(device))
        self.amp = resolve_amp(amp, self.device)
        self.encoder = encoder.eval().to(self.device).to(memory_format=torch.channels_last)
        self.dim = int(encoder.projector[-1].num_features) if hasattr(encoder, "projector") else None
        self.h2d = HostToDevice(self.device)
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[tuple, tuple] = {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            # Autocast's cache of cast weights does not mix with CUDA graph capture (PyTorch's advice).
            with torch.autocast(self.device.type, dtype=self.amp, cache_enabled=False):
                return self.encoder(x).float()
        return self.encoder(x).float()

    def _graph(self, x: torch.Tensor):
        key = tuple(x.shape[1:])
        entry = self._graphs.get(key)
        if entry is not None and entry[1].shape[0] >= x.shape[0]:
            return entry
        static_in = torch.zeros_like(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the prefetch thread may use CUDA meanwhile
            static_out = self._forward(static_in)
        self._graphs[key] = entry = (graph, static_in, static_out)
        return entry

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor):
        with on_device(self.device):  # graph capture, side streams and events on this embedder's GPU
            return self._submit(frames)

    def _submit(self, frames: torch.Tensor):
        x = self.h2d(frames)
        if not self.cuda_graphs:
            return device_to_host(self._forward(x))
        try:
            graph, static_in, static_out = self._graph(x)
        except Exception as exc:  # capture unsupported here: eager mode is still correct
            log.warning("CUDA graph capture failed (%s: %s); running eagerly", type(exc).__name__, exc)
            self.cuda_graphs = False
            return device_to_host(self._forward(x))
        n = x.shape[0]
        static_in[:n].copy_(x)
        graph.replay()
        return device_to_host(static_out[:n])

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return self.submit(frames).result()


# The CPU backend that `--backend auto` gives a checkpoint: the fastest one measured on CPU
# (ONNX Runtime; see bench/RESULTS.md). The checkpoint is exported once into a cache.
CPU_DEFAULT_BACKEND = "onnx"


def load_embedder(weights: str | os.PathLike, backend: str = "auto", device: str = "auto", videos=()):
    """(Embedder, SelfeeConfig of the weights) for a checkpoint or an exported model.

    ``auto`` takes the backend from the file type (``.pt``/``.pth``/``.pkl``: torch, ``.ts``:
    torchscript, ``.onnx``: onnx, ``.engine``/``.plan``: tensorrt). A checkpoint on the CPU runs
    with :data:`CPU_DEFAULT_BACKEND` when its packages are installed (exported once into the
    cache); ``torchscript`` or ``onnx`` given with a checkpoint use the same cache. A new cached
    export is verified on frames of ``videos`` (the ones about to be embedded) where given.
    """
    from selfee._deps import available

    weights = Path(weights)
    if not weights.exists():
        raise SelfeeError(f"{weights}: weights file not found")
    kind = backend_for(weights)
    if backend == "auto":
        backend = kind
        if kind == "torch" and resolve_device(device).type == "cpu" and CPU_DEFAULT_BACKEND != "torch":
            needed = ("onnx", "onnxruntime") if CPU_DEFAULT_BACKEND == "onnx" else ()
            if all(available(m) for m in needed) and available("selfee.export"):
                try:
                    return _exported(weights, CPU_DEFAULT_BACKEND, device, checkpoint=True, videos=videos)
                except SelfeeError as exc:
                    log.warning("%s: the %s backend is unavailable (%s); using torch", weights, CPU_DEFAULT_BACKEND, exc)
    if backend == "torch":
        if kind != "torch":
            raise SelfeeError(f"{weights}: the torch backend needs a checkpoint (.pt), not an exported {kind} model")
        from selfee.checkpoint import load_model

        model, cfg = load_model(weights)
        return TorchEmbedder(model.encoder, device), cfg
    return _exported(weights, backend, device, checkpoint=kind == "torch", videos=videos)


def _exported(weights: Path, backend: str, device: str, checkpoint: bool, videos=()):
    try:
        from selfee.export import exporter, runtime
    except ImportError as exc:
        raise SelfeeError(f"backend '{backend}' is not available in this installation ({exc})") from None
    if checkpoint:
        return exporter.load_cached_export(weights, backend, device, videos=videos)
    return runtime.load_exported(weights, backend, device)


def backend_for(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".pt": "torch", ".pth": "torch", ".pkl": "torch", ".ts": "torchscript", ".onnx": "onnx",
            ".engine": "tensorrt", ".plan": "tensorrt"}.get(suffix, "torch")


# ---------------------------------------------------------------------------------------------
# Streaming, atomic outputs
# ---------------------------------------------------------------------------------------------

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


class VideoOutputs:
    """One video's files, streamed to ``.partial`` names; ``commit`` renames them, the record last."""

    def __init__(self, out_dir: Path, stem: str, dtype: str = "float32", window: int = 0):
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
                  "window_rows": self.pooled.rows if self.pooled is not None else None}
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
    """What makes a video's outputs reusable: the weights, data settings, dtype, window and video file."""
    import hashlib

    st = video.stat()
    ident = {
        "weights_sha256": weights_sha256,
        "data": cfg.to_dict()["data"],
        "dtype": dtype,
        "window": window,
        "video": {"name": video.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Videos -> files
# ---------------------------------------------------------------------------------------------

INFLIGHT = 2  # batches queued on the embedder before the oldest is read back


def _pinned(batches: Iterable[EmbedBatch], device: torch.device | int) -> Iterator[EmbedBatch]:
    """Page-locked host frames (in the prefetch thread), so copies to the GPU can be asynchronous.

    The prefetch thread makes the embedder's GPU its current device first (a thread starts on
    device 0), so pinning and any GPU decoding there use that GPU's context, not device 0's.
    """
    torch.cuda.set_device(device)  # this generator runs in its own prefetch thread: nothing to restore
    for b in batches:
        yield b if b.frames.is_cuda else b._replace(frames=b.frames.pin_memory())


def embed_video(src, cfg: SelfeeConfig, embedder, out_dir: Path, batch_size: int, dtype: str = "float32",
                on_batch=None, window: int | None = None, record: dict | None = None) -> dict:
    """Embed one video into ``out_dir/<stem>.npy`` + ``.csv`` (+ window file, + record); returns frames and throughput.

    The hot loop has no per-frame Python work: each batch is submitted to the embedder, and
    the previous one is read back and appended to the files while the next is computed.
    """
    window = cfg.embed.window if window is None else window
    out_dir = Path(out_dir)
    stem = src.info.path.stem
    t0 = time.perf_counter()
    outputs = VideoOutputs(out_dir, stem, dtype, window)
    device = torch.device(getattr(embedder, "device", "cpu") or "cpu")
    inflight: deque = deque()

    def drain(keep: int) -> None:
        while len(inflight) > keep:
            frame, time_s, result = inflight.popleft()
            n = outputs.write(frame.numpy(), time_s.numpy(), result.result())
            if on_batch is not None:
                on_batch(n)

    try:
        batches = embed_batches(src, cfg, batch_size, device)
        if device.type == "cuda":
            batches = _pinned(batches, device if device.index is not None else torch.cuda.current_device())
        for batch in background(batches):
            inflight.append((batch.frame, batch.time_s, submit(embedder, batch.frames)))
            drain(INFLIGHT - 1)
        drain(0)
        if outputs.rows == 0:
            raise VideoError(src.info.path, "no frames to embed")
        dt = time.perf_counter() - t0
        info = {"video": str(src.info.path), "stem": stem, "seconds": dt, "fps": outputs.rows / dt if dt else 0.0,
                "npy": outputs.paths["npy"].name, "csv": outputs.paths["csv"].name}
        if window > 1:
            info.update(window=window, window_npy=outputs.paths["window"].name)
        return outputs.commit({**(record or {}), **info})
    except BaseException:
        outputs.abort()
        raise


def shard(paths: list[Path], rank: int, world: int) -> list[Path]:
    """This rank's videos: largest first to the least-loaded rank (sizes balance the work), in input order."""
    if world <= 1:
        return list(paths)
    sizes = [p.stat().st_size if p.is_file() else 0 for p in paths]
    load = [0] * world
    owner = {}
    for i in sorted(range(len(paths)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i] + 1
    return [p for i, p in enumerate(paths) if owner[i] == rank]


# How long the ranks of a torchrun embedding wait for each other. A rank that finishes its videos
# early waits for the slowest one at the end, which can be hours: far beyond NCCL's 10 minutes.
DIST_TIMEOUT = timedelta(days=7)


def embed_videos(
    videos: list[str | os.PathLike],
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: SelfeeConfig | None = None,
    overrides: Iterable[str] = (),
    batch_size: int | None = None,
    device: str | None = None,
    backend: str | None = None,
    show_progress: bool = True,
    window: int | None = None,
    overwrite: bool = False,
    embedder=None,
    corners=None,
    arena: str | None = None,
) -> dict:
    """``selfee-fast embed``: every frame of every video; bad videos are reported and skipped.

    ``cfg`` replaces the weights' config (``overrides`` apply on top of the weights' config
    otherwise). ``corners`` (a corner file, a folder of ``<stem>.json``/``.csv`` or the corners as
    text) adds per-video arena correction of kind ``arena``, as in training (see
    ``selfee.video.arena.apply_corners``). Finished videos are skipped unless ``overwrite``. Under
    ``torchrun`` each rank embeds its share of the videos on its own GPU; the ranks meet once at
    the end (over gloo, with :data:`DIST_TIMEOUT`), and a rank that fails before then reports it
    there, so that the others stop with its error instead of waiting; rank 0 writes
    ``manifest.json``. An ``embedder`` may be given directly (with ``cfg``); ``weights`` then only
    names it.
    """
    from selfee.video import check_stems, expand_inputs

    out_dir = check_writable(out_dir)
    paths = expand_inputs(videos)
    if not paths:
        raise SelfeeError("no videos given")
    check_stems(paths, "{stem}.npy")

    was_distributed = _dist_initialized()
    dist, dev = init_distributed(device or (cfg.embed.device if cfg else "auto"), timeout=DIST_TIMEOUT)
    group = _gather_group(dist)
    try:
        try:
            mine = _embed_share(dist, dev, paths, weights, out_dir, cfg, overrides, batch_size, backend,
                                show_progress, window, overwrite, embedder, corners, arena)
        except Exception as exc:
            if not dist.enabled:
                raise
            _gather(dist, group, {"error": f"{type(exc).__name__}: {exc}"})  # the others stop instead of waiting
            raise
        parts = _gather(dist, group, mine)
        stopped = [(r, p["error"]) for r, p in enumerate(parts) if "error" in p]
        if stopped:
            raise SelfeeError("embedding stopped on " + "; ".join(f"rank {r}: {e}" for r, e in stopped)
                              + " (the videos the other ranks finished are kept; rerun to do the rest)")
        if not any(p["usable"] for p in parts):
            raise SelfeeError(f"none of the {len(paths)} videos can be used (see the messages above)")
        order = {str(p): i for i, p in enumerate(paths)}
        results = [r for p in parts for r in p["results"]]
        new_frames = sum(p["new_frames"] for p in parts)
        elapsed = max(p["elapsed"] for p in parts)
        manifest = {
            **mine["manifest"],
            "world_size": dist.world,
            "videos": sorted(results, key=lambda r: order.get(r["video"], len(order))),
            "failed": [f for p in parts for f in p["failures"]],
            "frames_embedded": new_frames,
            "seconds": elapsed,
            "fps": new_frames / elapsed if elapsed else 0.0,
            "versions": versions(),
        }
        if dist.is_main:
            atomic_write_json(out_dir / "manifest.json", manifest)
        return manifest
    finally:
        if dist.enabled:
            import torch.distributed as tdist

            if not was_distributed:
                tdist.destroy_process_group()
            elif group is not None:
                tdist.destroy_process_group(group)


def _embed_share(dist, dev, paths, weights, out_dir, cfg, overrides, batch_size, backend, show_progress, window,
                 overwrite, embedder, corners, arena) -> dict:
    """This rank's part of :func:`embed_videos`: its videos embedded, its results and the run's settings."""
    from selfee.data import make_sources
    from selfee.video import open_inputs

    if embedder is None:
        # A checkpoint exported into the cache now is verified on frames of the first video.
        embedder, wcfg = load_embedder(weights, backend or (cfg.embed.backend if cfg else "auto"), str(dev),
                                       videos=paths[:1])
    elif cfg is None:
        raise SelfeeError("embed_videos: an embedder given directly needs its cfg")
    else:
        wcfg = cfg
    base = cfg if cfg is not None else wcfg
    if cfg is None and overrides:
        from selfee.config import _deep_merge, parse_overrides

        raw = base.to_dict()
        _deep_merge(raw, parse_overrides(overrides))
        base = SelfeeConfig.from_dict(raw)
    cfg = base
    if window is not None:
        cfg = cfg.replace(**{"embed.window": window})
    fixed = getattr(embedder, "fixed_size", None)  # a TensorRT engine's profile fixes the input size
    if fixed and tuple(fixed) != tuple(cfg.data.input_size):
        raise SelfeeError(f"{weights}: the engine takes {fixed[0]}x{fixed[1]} frames but data.input_size is "
                          f"{cfg.data.input_size[0]}x{cfg.data.input_size[1]}; rebuild it or drop the override")
    win = cfg.embed.window
    dtype = cfg.embed.dtype
    bs = batch_size or cfg.embed.batch_size
    weights_hash = file_sha256(weights) if Path(weights).is_file() else str(weights)

    t_run = time.perf_counter()
    # this rank's share; bad videos (and bad corner entries) are reported and skipped
    inputs = open_inputs(paths, cfg, corners=corners, arena=arena, min_frames=cfg.data.min_frames,
                         select=lambda ps: shard(ps, dist.rank, dist.world), require=False)
    cfg, infos, failures = inputs.cfg, inputs.videos, inputs.failed
    results = []
    new_frames = 0
    with _progress(show_progress and dist.is_main) as bar:
        run_task = bar.add_task(f"{len(infos) + len(failures)} video(s)", total=sum(i.frames for i in infos), rate="")
        for info in infos:
            try:
                key = video_key(weights_hash, cfg, info.path, dtype, win)
                done = None if overwrite else completed(out_dir, info.path.stem, key, win)
                if done is not None:
                    log.info("%s: already embedded (%d frames), skipped", info.path.name, done["frames"])
                    results.append({**done, "video": str(info.path), "skipped": True})
                    bar.advance(run_task, info.frames)
                    continue
                (src,) = make_sources([info], cfg)
                meter = _Meter(bar, run_task, t_run, new_frames, info.path.name, src.frames)
                res = embed_video(src, cfg, embedder, out_dir, bs, dtype, window=win, on_batch=meter,
                                  record={"key": key, "weights_sha256": weights_hash, "backend": embedder.name})
                meter.close()
                new_frames += res["frames"]
                log.info("%s: %d frames, %.0f frames/s", info.path.name, res["frames"], res["fps"])
                results.append(res)
            except Exception as exc:  # one bad video is reported; the others go on
                problem = exc.problem if isinstance(exc, VideoError) else f"{type(exc).__name__}: {exc}"
                log.error("%s: %s", info.path, problem)
                failures.append({"video": str(info.path), "error": problem})
    manifest = {
        "weights": str(weights),
        "weights_sha256": weights_hash,
        "backend": embedder.name,
        "device": str(getattr(embedder, "device", "cpu")),
        "batch_size": bs,
        "dtype": dtype,
        "window": win,
        "config": cfg.to_dict(),
    }
    return {"results": results, "failures": failures, "usable": len(infos), "new_frames": new_frames,
            "elapsed": time.perf_counter() - t_run, "manifest": manifest}


class _Meter:
    """Per-video and per-run progress with frames/s (a batch callback for :func:`embed_video`)."""

    def __init__(self, bar, run_task, t_run: float, run_done: int, name: str, total: int):
        self.bar, self.run_task, self.t_run, self.run_done = bar, run_task, t_run, run_done
        self.task = bar.add_task(name, total=total, rate="")
        self.t0 = time.perf_counter()
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.run_done += n
        now = time.perf_counter()
        self.bar.update(self.task, advance=n, rate=f"{self.done / max(now - self.t0, 1e-9):,.0f} frames/s")
        self.bar.update(self.run_task, advance=n, rate=f"{self.run_done / max(now - self.t_run, 1e-9):,.0f} frames/s")

    def close(self) -> None:
        self.bar.remove_task(self.task)


def _progress(show: bool):
    if show:
        from selfee.console import progress

        return progress()
    from rich.progress import Progress

    return Progress(disable=True)


def _dist_initialized() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def _gather_group(dist):
    """A gloo group with :data:`DIST_TIMEOUT` for the ranks' one meeting at the end (None without torchrun).

    Not the default group: NCCL's watchdog (10 minutes by default) would abort a rank that waits
    there for a slower one, and gloo gathers Python objects on the CPU.
    """
    if not dist.enabled:
        return None
    import torch.distributed as tdist

    return tdist.new_group(backend="gloo", timeout=DIST_TIMEOUT)


def _gather(dist, group, part: dict) -> list[dict]:
    """Every rank's ``part`` on every rank, in rank order (the manifest is one for the run)."""
    if not dist.enabled:
        return [part]
    import torch.distributed as tdist

    parts: list = [None] * dist.world
    tdist.all_gather_object(parts, part, group=group)
    return parts
