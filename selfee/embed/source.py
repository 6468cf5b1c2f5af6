"""The frames to embed: every frame of a video's window, in order, as live frames with their indices and times.

:func:`iter_embed_batches` is the reference (PyAV decoding, or decoded blocks handed in); the DALI
source (``selfee.pipelines.embed``) feeds its decoded frames through it, so both give the same
:class:`EmbedBatch` stream. :func:`prefetched` is what embedding reads: the source chosen by
``embed.pipeline``, decoded ahead in a thread, in page-locked memory for a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from selfee.config import SelfeeConfig
from selfee.errors import VideoError
from selfee.live_frames import neighbor_indices
from selfee.runtime import background


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


def embed_batches(src, cfg: SelfeeConfig, batch_size: int, device="cpu", record: dict | None = None
                  ) -> Iterator[EmbedBatch]:
    """The ordered frame source chosen by ``embed.pipeline``: DALI where installed, else PyAV.

    Both yield the same :class:`EmbedBatch` stream (uint8 frames on the CPU, or on ``device``
    when the DALI GPU pipeline produced them there). ``record`` (a dict) receives the decode path
    the video takes (``lane``, ``why``, ...), complete once the batches are used up.
    """
    from selfee.backend import choose_backend

    backend = choose_backend(cfg.embed.pipeline, device, "the DALI embedding pipeline", "PyAV",
                             "selfee.pipelines.embed:dali_embed_batches", option="embed.pipeline")
    if backend.name == "dali":
        return backend.impl(src, cfg, batch_size, device, record=record)
    if record is not None:
        record.update(lane="pyav", why=f"{backend.why}: the PyAV reference")
        if backend.fallback is not None:
            record["fallback"] = backend.fallback
    return iter_embed_batches(src, cfg, batch_size)


def prefetched(src, cfg: SelfeeConfig, batch_size: int, device: torch.device, record: dict | None = None
               ) -> Iterator[EmbedBatch]:
    """:func:`embed_batches` for an Embedder on ``device``, decoded in a prefetch thread ahead of the consumer;
    for a GPU, host frames are page-locked there, so that copies to the GPU can be asynchronous."""
    batches = embed_batches(src, cfg, batch_size, device, record=record)
    if device.type == "cuda":
        batches = _pinned(batches, device if device.index is not None else torch.cuda.current_device())
    return background(batches)


def _pinned(batches: Iterable[EmbedBatch], device: torch.device | int) -> Iterator[EmbedBatch]:
    """Page-locked host frames (in the prefetch thread).

    The prefetch thread makes the embedder's GPU its current device first (a thread starts on
    device 0), so pinning and any GPU decoding there use that GPU's context, not device 0's.
    """
    torch.cuda.set_device(device)  # this generator runs in its own prefetch thread: nothing to restore
    for b in batches:
        yield b if b.frames.is_cuda else b._replace(frames=b.frames.pin_memory())
