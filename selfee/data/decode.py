"""Decoding the chunks of a block into working-size samples: the :class:`ChunkSource` protocol and its
PyAV implementation.

A chunk source turns the chunks of a block plan (``selfee.data.sampling``) into T x C x h x w uint8
frames at the working size (``selfee.augment.working_size``): decoded, preprocessed, turned grey
(live frames) or kept RGB, shrunk once; augmentation then runs batched on the training device.
:class:`ChunkDecoder` does it with PyAV on worker threads; the DALI decoder
(``selfee.pipelines.decode.DaliChunkDecoder``: NVDEC or DALI's CPU decoder) implements the same
protocol, and the one loader (``selfee.data.loader.BlockLoader``) runs over either.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np
import torch

from selfee.augment import resize_uint8
from selfee.data.sampling import Chunk
from selfee.data.sources import VideoSource
from selfee.errors import SelfeeError, VideoError
from selfee.live_frames import rgb_to_gray
from selfee.threads import worker_pool
from selfee.video import Preprocessor, VideoInfo, VideoReader

log = logging.getLogger("selfee")


class ChunkDecodeError(VideoError):
    """A chunk that cannot be decoded (the loader draws its block again without that video)."""

    def __init__(self, path, problem: str, chunk: Chunk):
        super().__init__(path, problem)
        self.chunk = chunk


class BlockDecodeError(SelfeeError):
    """Every chunk of a block was tried and these did not decode."""

    def __init__(self, errors: list[ChunkDecodeError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class ChunkSource(Protocol):
    """What the block loader needs from a decoder."""

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far (the decoder's work, counted from each seek's keyframe)."""
        ...

    def decode_many(self, chunks: list[Chunk]) -> list[torch.Tensor]:
        """T x C x h x w uint8 working-size frames of every chunk, in the order given (C = 1 grey for live
        frames, else 3 RGB; frame i = window frame ``chunk.decode_start + i``).

        A chunk that does not decode raises :class:`ChunkDecodeError` (a source may stop at the first
        one) or :class:`BlockDecodeError` (every chunk was tried; it lists each that failed).
        """
        ...

    def close(self) -> None: ...


def frames_to_samples(frames: torch.Tensor, pre: Preprocessor, live: bool, size: tuple[int, int]) -> torch.Tensor:
    """Decoded frames -> preprocessed T x C x h x w uint8 samples (C = 1 grey for live frames, else 3).

    ``frames``: T x H x W grey (what the decoders give in live-frame mode) or T x H x W x 3 RGB
    (turned grey here when ``live``).
    """
    if frames.ndim == 3:
        x = frames.unsqueeze(1)
    elif live:
        x = rgb_to_gray(frames, channels_last=True).unsqueeze(1)
    else:
        x = frames.permute(0, 3, 1, 2)
    return resize_uint8(pre(x), size)



class ChunkDecoder:
    """The PyAV :class:`ChunkSource`: one reader per thread and video, ``threads`` chunks decoded at a
    time (each on a worker thread running torch single-threaded); counts decoded frames."""

    def __init__(self, sources: list[VideoSource], live: bool, size: tuple[int, int], threads: int = 1):
        self.sources = sources
        self.live = live
        self.size = size
        self.threads = threads
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pool = None  # made at the first decode_many
        self.frames_decoded = 0

    def decode_many(self, chunks: list[Chunk]) -> list[torch.Tensor]:
        """Every chunk decoded (see :class:`ChunkSource`); all are tried, then :class:`BlockDecodeError`
        lists those that failed."""
        if self._pool is None:
            self._pool = worker_pool(self.threads, "selfee-decode")
        decoded = list(self._pool.map(self._try_decode, chunks))
        errors = [d for d in decoded if isinstance(d, ChunkDecodeError)]
        if errors:
            raise BlockDecodeError(errors)
        return decoded

    def _try_decode(self, chunk: Chunk) -> torch.Tensor | ChunkDecodeError:
        try:
            return self.decode(chunk)
        except ChunkDecodeError as exc:
            return exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _reader(self, v: int) -> VideoReader:
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
        if v not in readers:
            readers[v] = VideoReader(self.sources[v].info, threads=1)
        return readers[v]

    def _drop_reader(self, v: int) -> None:
        reader = getattr(self._local, "readers", {}).pop(v, None)
        if reader is not None:  # a decoder that failed may be left in a bad state
            reader.close()

    def decode(self, chunk: Chunk) -> torch.Tensor:
        """T x C x h x w uint8 working-size frames of the chunk; :class:`ChunkDecodeError` if it does not decode."""
        src = self.sources[chunk.video]
        reader = self._reader(chunk.video)
        before = reader.frames_decoded
        start, stop = src.pre.start + chunk.decode_start, src.pre.start + chunk.decode_stop
        try:
            buffer = self._buffer(stop - start, src.info)
            frames = reader.read(start, stop, grey=self.live, buffer=buffer)
        except VideoError as exc:
            self._drop_reader(chunk.video)
            raise ChunkDecodeError(src.info.path, f"{exc.problem} in frames {start}-{stop - 1}", chunk) from None
        finally:
            with self._lock:
                self.frames_decoded += reader.frames_decoded - before
        want = stop - start
        if frames.shape[0] == 0:
            raise ChunkDecodeError(src.info.path, f"no frames could be decoded in frames {start}-{stop - 1}", chunk)
        if frames.shape[0] < want:  # a broken tail: repeat the last good frame
            log.warning("%s: only %d of frames %d-%d decoded", src.info.path, frames.shape[0], start, stop)
            frames = np.concatenate([frames, np.repeat(frames[-1:], want - frames.shape[0], axis=0)])
        try:
            samples = frames_to_samples(torch.from_numpy(frames), src.pre, self.live, self.size)
        except VideoError as exc:  # e.g. no frame of the background could be decoded
            raise ChunkDecodeError(src.info.path, exc.problem, chunk) from None
        if np.may_share_memory(samples.numpy(), buffer):  # no step copied the frames: they outlive the buffer
            samples = samples.clone()
        return samples

    def _buffer(self, frames: int, info: VideoInfo) -> np.ndarray:
        """This thread's full-size frame buffer for ``info``'s frame shape (reused from chunk to chunk:
        fresh arrays of this size cost as much in page faults as the conversion that fills them)."""
        shape = (info.height, info.width) if self.live else (info.height, info.width, 3)
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        buf = buffers.get(shape)
        if buf is None or len(buf) < frames:
            buf = buffers[shape] = np.empty((frames, *shape), np.uint8)
        return buf

