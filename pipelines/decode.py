"""Video decoding for the DALI pipelines: NVDEC or DALI's CPU decoder per video, PyAV where they cannot.

Training decodes keyframe-aligned chunks (``selfee.data.plan_chunks``) in one batched
``fn.decoders.video`` run per block (each sample: the file's bytes, ``start_frame``, ``end_frame``);
embedding streams a whole video with ``fn.experimental.inputs.video`` in sequences of consecutive
frames. A video DALI rejects (at run time too) falls back to PyAV with a warning naming the file.
Decoded RGB frames then go through the reference preprocessing (``selfee.data.frames_to_samples``)
on the decoding device, so both lanes share one definition of every per-frame step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from nvidia.dali import fn, types

from selfee.data import Chunk, ChunkDecoder, VideoSource, frames_to_samples
from selfee.errors import VideoError
from selfee.pipelines.backend import choose_lane, device_id, samples_to_torch, sync_pipeline
from selfee.video import VideoReader

log = logging.getLogger("selfee")


def read_encoded(path) -> np.ndarray:
    return np.fromfile(str(path), dtype=np.uint8)


def _one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


class DaliChunkDecoder:
    """Decodes the chunks of a block into working-size frames (T x C x h x w uint8 on ``device``).

    ``frames_decoded`` counts the decoder's work: for a DALI lane, from the keyframe at or before each
    chunk's first frame to its last (what a seek-and-decode costs); PyAV counts it exactly.
    """

    def __init__(self, sources: list[VideoSource], live: bool, size, device: torch.device, max_chunks: int = 64,
                 cpu_decoder: str = "auto", threads: int = 2):
        self.sources = sources
        self.live = live
        self.size = tuple(size)
        self.device = device
        self.max_chunks = max_chunks
        self._dali_decoded = 0
        self.lanes: dict[int, str] = {}
        for v, src in enumerate(sources):
            lane, why = choose_lane(src.info, device, cpu_decoder)
            self.lanes[v] = lane
            level = logging.WARNING if device.type == "cuda" and lane == "pyav" else logging.INFO
            log.log(level, "%s: decoding with %s (%s)", src.info.path, lane, why)
        self._pyav = ChunkDecoder(sources, live, self.size)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="selfee-dali-decode")
        self._pipes: dict[str, object] = {}

    # -- DALI graphs --------------------------------------------------------------------------------
    def _pipe(self, lane: str):
        if lane not in self._pipes:
            dev = "mixed" if lane == "nvdec" else "cpu"

            @sync_pipeline(self.max_chunks, device_id(self.device) if lane == "nvdec" else None)
            def chunks():
                enc = fn.external_source(name="encoded", dtype=types.UINT8)
                start = fn.external_source(name="start", dtype=types.INT32)
                stop = fn.external_source(name="stop", dtype=types.INT32)
                # "edge" repeats the last frame when a broken tail ends the chunk early (the reference's policy)
                return fn.decoders.video(enc, device=dev, start_frame=start, end_frame=stop, pad_mode="edge")

            p = chunks()
            p.build()
            self._pipes[lane] = p
        return self._pipes[lane]

    def _decode_dali(self, lane: str, chunks: list[Chunk]) -> list[torch.Tensor]:
        encoded = {v: read_encoded(self.sources[v].info.path) for v in {c.video for c in chunks}}
        out: list[torch.Tensor] = []
        for i in range(0, len(chunks), self.max_chunks):
            part = chunks[i : i + self.max_chunks]
            pipe = self._pipe(lane)
            pipe.feed_input("encoded", [encoded[c.video] for c in part])
            pipe.feed_input("start", [np.array(self.sources[c.video].pre.start + c.decode_start, np.int32) for c in part])
            pipe.feed_input("stop", [np.array(self.sources[c.video].pre.start + c.decode_stop, np.int32) for c in part])
            (frames,) = pipe.run()
            for c, rgb in zip(part, samples_to_torch(frames, self.device)):
                src = self.sources[c.video]
                want = c.decode_stop - c.decode_start
                if rgb.shape[0] != want or tuple(rgb.shape[1:3]) != (src.info.height, src.info.width):
                    raise VideoError(src.info.path, f"DALI decoded {tuple(rgb.shape)} for {want} frames")
                out.append(frames_to_samples(rgb, src.pre, self.live, self.size))
                kf = src.info.keyframe_before(src.pre.start + c.decode_start)
                self._dali_decoded += src.pre.start + c.decode_stop - kf
        return out

    def _decode_pyav(self, chunk: Chunk) -> torch.Tensor:
        return self._pyav.decode(chunk).to(self.device, non_blocking=True)

    # -- entry point -------------------------------------------------------------------------------
    def decode_many(self, chunks: list[Chunk]) -> list[torch.Tensor]:
        """Working-size frames of every chunk, in the order given."""
        out: list[torch.Tensor | None] = [None] * len(chunks)
        by_lane: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            by_lane.setdefault(self.lanes[c.video], []).append(i)
        pyav = by_lane.pop("pyav", [])
        futures = [(i, self._pool.submit(self._decode_pyav, chunks[i])) for i in pyav]
        for lane, idx in by_lane.items():
            try:
                for i, x in zip(idx, self._decode_dali(lane, [chunks[i] for i in idx])):
                    out[i] = x
            except Exception as exc:  # a stream this decoder rejects: PyAV for that video from now on
                self._pipes.pop(lane, None)  # a DALI pipeline is unusable after an error
                bad = {chunks[i].video for i in idx if out[i] is None}
                for v in sorted(bad):
                    log.warning("%s: %s decoding failed (%s); falling back to PyAV", self.sources[v].info.path,
                                lane, _one_line(exc))
                    self.lanes[v] = "pyav"
                futures += [(i, self._pool.submit(self._decode_pyav, chunks[i])) for i in idx if out[i] is None]
        for i, fut in futures:
            out[i] = fut.result()
        return out  # type: ignore[return-value]

    @property
    def frames_decoded(self) -> int:
        return self._dali_decoded + self._pyav.frames_decoded

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pipes.clear()


# ---------------------------------------------------------------------------------------------
# Embedding: every frame in order
# ---------------------------------------------------------------------------------------------


def stream_blocks(src: VideoSource, device: torch.device, sequence: int = 32, cpu_decoder: str = "auto",
                  lane: str | None = None) -> Iterator[torch.Tensor]:
    """T x H x W x 3 uint8 tensors of the window's frames in order, on ``device`` for NVDEC (T x H x W
    grey for the frames PyAV decodes when the source is grey).

    DALI streams the file from its first frame (frames before the window are dropped); when DALI
    stops early or fails, PyAV continues from the next frame, so the count is what PyAV decodes.
    """
    info, pre = src.info, src.pre
    if lane is None:
        lane, why = choose_lane(info, device, cpu_decoder)
        level = logging.WARNING if device.type == "cuda" and lane == "pyav" else logging.INFO
        log.log(level, "%s: decoding with %s (%s)", info.path, lane, why)
    nxt = pre.start  # next video frame index to yield
    if lane != "pyav":
        try:
            for first, rgb in _dali_stream(info, lane, device, sequence, pre.stop):
                lo, hi = max(nxt - first, 0), min(pre.stop - first, rgb.shape[0])
                if hi > lo:
                    yield rgb[lo:hi]
                    nxt = first + hi
                if nxt >= pre.stop:
                    return
        except Exception as exc:
            log.warning("%s: %s decoding stopped at frame %d (%s); PyAV goes on from there", info.path, lane, nxt,
                        _one_line(exc))
        else:
            if nxt < pre.stop:
                log.warning("%s: %s decoded %d of %d frames; PyAV checks the rest", info.path, lane, nxt, pre.stop)
    block: list[np.ndarray] = []
    with VideoReader(info) as reader:
        for _, rgb in reader.iter_frames(nxt, pre.stop, grey=pre.grey):
            block.append(rgb)
            if len(block) == sequence:
                yield torch.from_numpy(np.stack(block)).to(device)
                block = []
    if block:
        yield torch.from_numpy(np.stack(block)).to(device)


def _dali_stream(info, lane: str, device: torch.device, sequence: int, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first frame index, T x H x W x 3) sequences from ``fn.experimental.inputs.video`` until ``stop``."""
    dev = "mixed" if lane == "nvdec" else "cpu"

    @sync_pipeline(1, device_id(device) if lane == "nvdec" else None, num_threads=1)
    def streamed():
        return fn.experimental.inputs.video(name="video", sequence_length=sequence, device=dev,
                                            last_sequence_policy="partial")

    pipe = streamed()
    pipe.build()
    pipe.feed_input("video", [read_encoded(info.path)])
    first = 0
    total = info.frames  # the packet count; the last run would raise if the stream held fewer frames
    while first < min(stop, total):
        (out,) = pipe.run()
        (rgb,) = samples_to_torch(out, device)
        if rgb.shape[0] == 0:
            return
        yield first, rgb
        first += rgb.shape[0]
