"""Embedding every frame of videos: ordered live-frame batches, an Embedder, streaming outputs.

Per video the output folder gets ``<stem>.npy`` (frames x dim), ``<stem>.csv`` (``frame,time_s``:
0-based frame index in the video and seconds since its first frame) and the run's
``manifest.json``. Rows are written as they are computed (memory does not grow with the video)
into temporary files that are renamed into place only when the video is complete, so an
interrupted run never leaves a truncated ``.npy`` that looks complete; a rerun skips finished
videos and redoes the rest.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError, VideoError
from selfee.live_frames import neighbor_indices

log = logging.getLogger("selfee")

# ---------------------------------------------------------------------------------------------
# Ordered live-frame batches (the reference embedding source; DALI's mirrors it)
# ---------------------------------------------------------------------------------------------


class EmbedBatch(NamedTuple):
    frames: torch.Tensor  # B x 3 x H x W uint8 at the input size (live frames or RGB)
    frame: torch.Tensor  # B int64: frame index in the video
    time_s: torch.Tensor  # B float64: seconds since the first frame


def iter_embed_batches(src, cfg: SelfeeConfig, batch_size: int, decode_block: int = 64,
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
        for rgb in blocks if blocks is not None else _pyav_blocks(reader, pre, decode_block):
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


def _pyav_blocks(reader, pre, decode_block: int) -> Iterator[torch.Tensor]:
    block: list[np.ndarray] = []
    for _, rgb in reader.iter_frames(pre.start, pre.stop):
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
                          "the DALI embedding pipeline")
    if dali is not None:
        return dali(src, cfg, batch_size, device)
    return iter_embed_batches(src, cfg, batch_size)


def background(iterable: Iterable, depth: int = 3) -> Iterator:
    """Run ``iterable`` in a thread, ``depth`` items ahead (decode overlaps inference)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as exc:  # re-raised in the consumer
            q.put((False, exc))

    t = threading.Thread(target=run, daemon=True, name="selfee-prefetch")
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


class Embedder(Protocol):
    """Maps a uint8 batch of live frames (B x 3 x H x W, CPU) to float32 embeddings (B x dim)."""

    name: str
    dim: int

    def __call__(self, frames: torch.Tensor) -> np.ndarray: ...


class TorchEmbedder:
    """Eager PyTorch encoder: channels-last, bf16 autocast on GPU, fp32 on CPU."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module, device: str | torch.device = "auto", amp: str = "auto"):
        from selfee.train import resolve_amp, resolve_device

        self.device = resolve_device(str(device))
        self.amp = resolve_amp(amp, self.device)
        self.encoder = encoder.eval().to(self.device).to(memory_format=torch.channels_last)
        self.dim = int(encoder.projector[-1].num_features) if hasattr(encoder, "projector") else None

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        pin = self.device.type == "cuda" and not frames.is_cuda  # DALI's GPU lane yields frames on the GPU
        x = (frames.pin_memory() if pin else frames).to(self.device, non_blocking=True)
        x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                y = self.encoder(x)
        else:
            y = self.encoder(x)
        return y.float().cpu().numpy()


def load_embedder(weights: str | os.PathLike, backend: str = "auto", device: str = "auto"):
    """(Embedder, SelfeeConfig of the weights) for a checkpoint or an exported model."""
    weights = Path(weights)
    if not weights.exists():
        raise SelfeeError(f"{weights}: weights file not found")
    if backend == "auto":
        backend = backend_for(weights)
    if backend == "torch":
        from selfee.checkpoint import load_model

        model, cfg = load_model(weights)
        return TorchEmbedder(model.encoder, device), cfg
    try:
        from selfee.export.runtime import load_exported
    except ImportError as exc:
        raise SelfeeError(f"backend '{backend}' is not available in this installation ({exc})") from None
    return load_exported(weights, backend, device)


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
        self.f = open(self.tmp, "wb")
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
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Videos -> files
# ---------------------------------------------------------------------------------------------


def embed_video(src, cfg: SelfeeConfig, embedder, out_dir: Path, batch_size: int, dtype: str = "float32",
                on_batch=None) -> dict:
    """Embed one video into ``out_dir/<stem>.npy`` + ``.csv``; returns frames and throughput."""
    stem = src.info.path.stem
    t0 = time.perf_counter()
    writer = None
    rows = io.StringIO()
    table = csv.writer(rows, lineterminator="\n")
    table.writerow(["frame", "time_s"])
    n = 0
    try:
        device = getattr(embedder, "device", "cpu")
        for batch in background(embed_batches(src, cfg, batch_size, device)):
            emb = embedder(batch.frames)
            if writer is None:
                writer = NpyStreamWriter(out_dir / f"{stem}.npy", emb.shape[1], dtype)
            writer.write(emb)
            for f, t in zip(batch.frame.tolist(), batch.time_s.tolist()):
                table.writerow([f, f"{t:.6f}"])
            n += len(batch.frame)
            if on_batch is not None:
                on_batch(len(batch.frame))
        if writer is None:
            raise VideoError(src.info.path, "no frames to embed")
        atomic_write_text(out_dir / f"{stem}.csv", rows.getvalue())
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    dt = time.perf_counter() - t0
    return {"video": str(src.info.path), "stem": stem, "frames": n, "seconds": dt, "fps": n / dt if dt else 0.0}


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
) -> dict:
    """``selfee-fast embed``: every frame of every video; bad videos are reported and skipped."""
    from selfee.checkpoint import file_sha256
    from selfee.cli_utils import progress as make_progress
    from selfee.data import make_sources
    from selfee.video import expand_inputs, probe_many

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".write-test").write_text("")
        (out_dir / ".write-test").unlink()
    except OSError as exc:
        raise SelfeeError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None
    paths = expand_inputs(videos)
    if not paths:
        raise SelfeeError("no videos given")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise SelfeeError(f"{p} and {stems[p.stem]} would both write '{p.stem}.npy'; embed them into different folders")
        stems[p.stem] = p

    base = cfg
    embedder, wcfg = load_embedder(weights, backend or (cfg.embed.backend if cfg else "auto"), device or "auto")
    if base is None:
        base = wcfg
        if overrides:
            from selfee.config import _deep_merge, parse_overrides

            raw = base.to_dict()
            _deep_merge(raw, parse_overrides(overrides))
            base = SelfeeConfig.from_dict(raw)
    cfg = base
    bs = batch_size or cfg.embed.batch_size
    infos, bad = probe_many(paths, min_frames=cfg.data.min_frames)
    failures = [{"video": e.path, "error": e.problem} for e in bad]
    results = []
    weights_hash = file_sha256(weights)
    with make_progress() as bar:
        run_task = bar.add_task("videos", total=len(paths), completed=len(bad), rate="")
        for info in infos:
            try:
                (src,) = make_sources([info], cfg)
                task = bar.add_task(info.path.name, total=src.frames, rate="")
                t0 = time.perf_counter()

                def tick(n, task=task, t0=t0):
                    bar.advance(task, n)
                    done = bar.tasks[task].completed
                    bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.0f} frames/s")

                res = embed_video(src, cfg, embedder, out_dir, bs, cfg.embed.dtype, on_batch=tick)
                bar.remove_task(task)
                log.info("%s: %d frames, %.0f frames/s", info.path.name, res["frames"], res["fps"])
                results.append(res)
            except VideoError as exc:
                log.error("%s", exc)
                failures.append({"video": str(exc.path), "error": exc.problem})
            bar.advance(run_task)
    manifest = {
        "weights": str(weights),
        "weights_sha256": weights_hash,
        "backend": embedder.name,
        "config": cfg.to_dict(),
        "videos": results,
        "failed": failures,
        "versions": _versions(),
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
    return manifest


def _versions() -> dict:
    import platform

    from selfee import __version__

    out = {"selfee_fast": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import av

        out["av"] = av.__version__
    except ImportError:
        pass
    return out
