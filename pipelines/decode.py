"""Video decoding for the DALI pipelines: NVDEC or DALI's CPU decoder per video, PyAV where they cannot.

DALI is fed keyframe-aligned segments remuxed in memory (``selfee.pipelines.segments``), never
whole files, so host memory and DALI's index scan grow with the frames decoded, not with the file.
Training decodes the chunks of a block (``selfee.data.plan_chunks``) in one batched
``fn.decoders.video`` run (each sample: one chunk's segment and its first and last frame in it);
embedding feeds the window's segments one after another to ``fn.experimental.inputs.video``, which
streams each in sequences of consecutive frames. Arenas are warped inside the DALI graph
(``selfee.pipelines.warp``); the rest of the preprocessing (``selfee.data.frames_to_samples``) runs in
torch on the decoding device, so both lanes share one definition of every per-frame step.

Which lane a video takes, and why, is recorded (``DaliChunkDecoder.decode_paths``, the ``record`` of
:func:`stream_blocks`). A video that cannot take NVDEC on a GPU, and a video whose DALI decoding fails
(a batched run that fails is retried video by video first), go to PyAV through
``selfee.fallback.fallback``: one warning naming the file, or an error in strict mode. Only decode
failures (``selfee.pipelines.backend.decode_failure``) fall back; any other exception is a bug and
propagates. Where the last GOP decodes (with PyAV, the reference) to fewer frames than the container
lists, PyAV decodes that GOP on the DALI lanes too: DALI cannot tell a missing frame from a decoded one.
This is checked once per video and logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch
from nvidia.dali import fn, types

from selfee.data import Chunk, ChunkDecodeError, ChunkDecoder, VideoSource, frames_to_samples
from selfee.errors import VideoError
from selfee.fallback import fallback
from selfee.pipelines.backend import (
    LANE_NAMES,
    choose_lane,
    decode_failure,
    device_id,
    one_line,
    samples_to_torch,
    sync_pipeline,
    video_decoder,
)
from selfee.pipelines.segments import CutterCache, SegmentCutter, plan_segments
from selfee.pipelines.tail import dali_frames
from selfee.pipelines.warp import arena_inputs, torch_warp, warp_graph, warped_source
from selfee.video import VideoReader
from selfee.video.arena import ArenaWarp

log = logging.getLogger("selfee")

SEGMENT_FRAMES = 128  # embedding: segments span whole GOPs of at least this many frames


def decode_path(info, device: torch.device, cpu_decoder: str = "auto") -> dict:
    """The record of the lane a video takes (``{"lane", "why"}``); on a GPU, a video NVDEC cannot take goes
    to PyAV through ``fallback`` (an error in strict mode), and the record keeps its ``fallback``."""
    lane, why = choose_lane(info, device, cpu_decoder)
    record = {"lane": lane, "why": why}
    if device.type == "cuda" and lane == "pyav":
        record["fallback"] = fallback(LANE_NAMES["nvdec"], LANE_NAMES["pyav"], why, subject=str(info.path))
    else:
        log.info("%s: decoding with %s (%s)", info.path, lane, why)
    return record


def _fell_back(record: dict, lane: str, why: str, subject, start: int | None = None) -> None:
    """A DALI lane failed for a video: PyAV takes over (from frame ``start``), said through ``fallback``."""
    taken = LANE_NAMES["pyav"] + ("" if start is None else f" from frame {start}")
    record["fallback"] = fallback(LANE_NAMES[lane], taken, why, subject=str(subject))
    record["lane"] = "pyav" if start is None else f"{lane}+pyav"


# ---------------------------------------------------------------------------------------------
# Training: chunks of a block
# ---------------------------------------------------------------------------------------------


# Full-resolution frames one DALI run may hold (a block of 32 batches of 256 at 640 x 480 would be ~15 GB at once).
RUN_BYTES = 2 << 30


class DaliChunkDecoder:
    """Decodes the chunks of a block into working-size frames (T x C x h x w uint8 on ``device``).

    ``frames_decoded`` counts the decoder's work: for a DALI lane, from the keyframe at or before each
    chunk's first frame to its last (what a seek-and-decode costs); PyAV counts it exactly.
    ``dali_warp=False`` leaves the arena warp to torch on every lane (a reference for tests).
    """

    def __init__(self, sources: list[VideoSource], live: bool, size, device: torch.device, max_chunks: int = 64,
                 cpu_decoder: str = "auto", threads: int = 2, dali_warp: bool = True, run_bytes: int = RUN_BYTES):
        self.sources = sources
        self.live = live
        self.size = tuple(size)
        self.device = device
        self.max_chunks = max_chunks
        self.run_bytes = run_bytes
        self._dali_decoded = 0
        self._count_lock = threading.Lock()
        # per video: {"lane", "why"[, "fallback"]} (what run summaries store) and the lane alone
        self.decode_paths = {v: decode_path(src.info, device, cpu_decoder) for v, src in enumerate(sources)}
        self.lanes: dict[int, str] = {v: rec["lane"] for v, rec in self.decode_paths.items()}
        # videos whose arena warp runs in the DALI graph: their samples skip the torch warp
        self._warped = {v: warped_source(src) for v, src in enumerate(sources)
                        if dali_warp and src.pre.arena is not None}
        self._arena = {v: arena_inputs(self.sources[v].pre.arena) for v in self._warped}
        self._limits: dict[int, int] = {}
        self._pyav = ChunkDecoder(sources, live, self.size)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="selfee-dali-decode")
        # remuxing has its own threads: it must not wait for the PyAV chunks queued on the pool
        self._cut_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="selfee-dali-cut")
        self._pipes: dict[tuple[str, bool], object] = {}
        self._cutters = CutterCache(max(32, max_chunks))  # >= the videos of one run: none closed while in use

    # -- DALI graphs --------------------------------------------------------------------------------
    def _pipe(self, lane: str, warp: bool):
        if (lane, warp) not in self._pipes:
            dev = "mixed" if lane == "nvdec" else "cpu"
            decoder = video_decoder()  # a SelfeeError naming the minimum DALI where it lacks the arguments
            consts = next(iter(self._arena.values()))["consts"] if warp else None

            @sync_pipeline(self.max_chunks, device_id(self.device) if lane == "nvdec" else None)
            def chunks():
                enc = fn.external_source(name="encoded", dtype=types.UINT8)
                start = fn.external_source(name="start", dtype=types.INT32)
                stop = fn.external_source(name="stop", dtype=types.INT32)
                # each segment holds every frame asked for: "none" makes a shortfall an error, not padding
                frames = decoder(enc, device=dev, start_frame=start, end_frame=stop, pad_mode="none")
                return warp_graph(frames, dev == "mixed", consts) if warp else frames

            p = chunks()
            p.build()
            self._pipes[(lane, warp)] = p
        return self._pipes[(lane, warp)]

    def _drop_pipes(self, lane: str):
        for key in [k for k in self._pipes if k[0] == lane]:
            del self._pipes[key]  # a DALI pipeline is unusable after an error

    def _limit(self, v: int, stop: int) -> int:
        """Frames of video ``v`` DALI may decode; the tail is checked only once a chunk reaches the last GOP."""
        info = self.sources[v].info
        if stop <= int(info.keyframes[-1]):
            return info.frames
        if v not in self._limits:
            self._limits[v] = dali_frames(info)
        return self._limits[v]

    def _decode_dali(self, lane: str, chunks: list[Chunk]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(chunks)
        groups: dict[bool, list[int]] = {}
        for j, c in enumerate(chunks):
            groups.setdefault(c.video in self._warped, []).append(j)
        for warp, js in groups.items():
            for part in self._runs(chunks, js):
                for j, x in zip(part, self._run(lane, warp, [chunks[j] for j in part])):
                    out[j] = x
        return out  # type: ignore[return-value]

    def _runs(self, chunks: list[Chunk], js: list[int]) -> list[list[int]]:
        """``js`` cut into DALI runs of at most ``max_chunks`` chunks whose full-resolution RGB frames
        (what the decoder outputs before the working-size resize) fit in ``run_bytes``."""
        runs, part, size = [], [], 0
        for j in js:
            info = self.sources[chunks[j].video].info
            need = (chunks[j].decode_stop - chunks[j].decode_start) * info.height * info.width * 3
            if part and (len(part) == self.max_chunks or size + need > self.run_bytes):
                runs.append(part)
                part, size = [], 0
            part.append(j)
            size += need
        return runs + ([part] if part else [])

    def _segments(self, part: list[Chunk]) -> list:
        """Each chunk's segment; videos are cut in parallel (a cutter serves one thread at a time)."""
        by_video: dict[int, list[int]] = {}
        for j, c in enumerate(part):
            by_video.setdefault(c.video, []).append(j)

        def cut(v: int, cutter, js: list[int]):
            pre = self.sources[v].pre
            return [(j, cutter.cut(pre.start + part[j].decode_start, pre.start + part[j].decode_stop)) for j in js]

        jobs = [self._cut_pool.submit(cut, v, self._cutters.get(v, self.sources[v].info), js)
                for v, js in by_video.items()]
        wait(jobs)  # all of them, even when one fails: a retry must not share a cutter with a running cut
        segs = [None] * len(part)
        for job in jobs:
            for j, seg in job.result():
                segs[j] = seg
        return segs

    def _run(self, lane: str, warp: bool, part: list[Chunk]) -> list[torch.Tensor]:
        segs = self._segments(part)
        pipe = self._pipe(lane, warp)
        pipe.feed_input("encoded", [s.data for s in segs])
        pipe.feed_input("start", [np.array(self.sources[c.video].pre.start + c.decode_start - s.first, np.int32)
                                  for c, s in zip(part, segs)])
        pipe.feed_input("stop", [np.array(self.sources[c.video].pre.start + c.decode_stop - s.first, np.int32)
                                 for c, s in zip(part, segs)])
        if warp:
            for name in ("matrix", "size", "keep", "fill"):
                pipe.feed_input(name, [self._arena[c.video][name] for c in part])
        (frames,) = pipe.run()
        out = []
        for c, seg, rgb in zip(part, segs, samples_to_torch(frames, self.device)):
            src = self._warped[c.video] if warp else self.sources[c.video]
            want = c.decode_stop - c.decode_start
            hw = tuple(int(v) for v in self._arena[c.video]["size"]) if warp else (src.info.height, src.info.width)
            if rgb.shape[0] != want or tuple(rgb.shape[1:3]) != hw:
                raise VideoError(src.info.path, f"DALI decoded {tuple(rgb.shape)} for {want} frames")
            out.append(frames_to_samples(rgb, src.pre, self.live, self.size))
            with self._count_lock:
                self._dali_decoded += src.pre.start + c.decode_stop - seg.first
        return out

    def _decode_lane(self, lane: str, chunks: list[Chunk]) -> list[torch.Tensor | None]:
        """DALI for a lane's chunks; after a failed run, each video again on its own, and a video that
        fails again goes to PyAV for good (None where PyAV is to decode)."""
        try:
            return self._decode_dali(lane, chunks)  # type: ignore[return-value]
        except Exception as exc:  # a stream the decoder rejects (maybe one of several videos); bugs propagate
            self._drop_pipes(lane)
            if not decode_failure(exc):
                raise
            log.debug("%s decoding of %d chunks failed (%s); retrying video by video", lane, len(chunks),
                      one_line(exc))
        out: list[torch.Tensor | None] = [None] * len(chunks)
        by_video: dict[int, list[int]] = {}
        for j, c in enumerate(chunks):
            by_video.setdefault(c.video, []).append(j)
        for v, js in by_video.items():
            try:
                for j, x in zip(js, self._decode_dali(lane, [chunks[j] for j in js])):
                    out[j] = x
            except Exception as exc:
                self._drop_pipes(lane)
                if not decode_failure(exc):
                    raise
                _fell_back(self.decode_paths[v], lane, one_line(exc), self.sources[v].info.path)
                self.lanes[v] = "pyav"
        return out

    def _decode_pyav(self, chunk: Chunk) -> torch.Tensor:
        return self._pyav.decode(chunk).to(self.device, non_blocking=True)

    def _decode_tail(self, chunk: Chunk) -> torch.Tensor:
        """A chunk reaching a broken tail, decoded as the PyAV lane does (``dali_frames`` logged it once)."""
        src = self.sources[chunk.video]
        start, stop = src.pre.start + chunk.decode_start, src.pre.start + chunk.decode_stop
        try:
            with VideoReader(src.info, threads=1) as reader:
                frames = reader.read(start, stop, grey=self.live)
        except VideoError as exc:
            raise ChunkDecodeError(src.info.path, f"{exc.problem} in frames {start}-{stop - 1}", chunk) from None
        finally:
            with self._count_lock:
                self._dali_decoded += reader.frames_decoded
        if frames.shape[0] == 0:
            raise ChunkDecodeError(src.info.path, f"no frames could be decoded in frames {start}-{stop - 1}", chunk)
        if frames.shape[0] < stop - start:  # repeat the last good frame, as the reference does
            frames = np.concatenate([frames, np.repeat(frames[-1:], stop - start - frames.shape[0], axis=0)])
        return frames_to_samples(torch.from_numpy(frames), src.pre, self.live, self.size).to(self.device)

    # -- entry point -------------------------------------------------------------------------------
    def decode_many(self, chunks: list[Chunk]) -> list[torch.Tensor]:
        """Working-size frames of every chunk, in the order given."""
        out: list[torch.Tensor | None] = [None] * len(chunks)
        by_lane: dict[str, list[int]] = {}
        futures = []
        for i, c in enumerate(chunks):
            src = self.sources[c.video]
            lane = self.lanes[c.video]
            if lane != "pyav" and src.pre.start + c.decode_stop > self._limit(c.video, src.pre.start + c.decode_stop):
                futures.append((i, self._pool.submit(self._decode_tail, c)))
            else:
                by_lane.setdefault(lane, []).append(i)
        futures += [(i, self._pool.submit(self._decode_pyav, chunks[i])) for i in by_lane.pop("pyav", [])]
        for lane, idx in by_lane.items():
            for i, x in zip(idx, self._decode_lane(lane, [chunks[i] for i in idx])):
                if x is None:
                    futures.append((i, self._pool.submit(self._decode_pyav, chunks[i])))
                out[i] = x
        for i, fut in futures:
            out[i] = fut.result()
        return out  # type: ignore[return-value]

    @property
    def frames_decoded(self) -> int:
        return self._dali_decoded + self._pyav.frames_decoded

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._cut_pool.shutdown(wait=True, cancel_futures=True)
        self._pipes.clear()
        self._cutters.close()


# ---------------------------------------------------------------------------------------------
# Embedding: every frame in order
# ---------------------------------------------------------------------------------------------


def stream_source(src: VideoSource, device: torch.device, sequence: int = 32, cpu_decoder: str = "auto",
                  record: dict | None = None) -> tuple[VideoSource, Iterator[torch.Tensor]]:
    """(source to preprocess the blocks with, blocks of :func:`stream_blocks`) for embedding.

    With an arena the blocks come out warped (in the DALI graph, or by the torch warp for frames
    PyAV decodes) and the returned source's preprocessing skips the warp.
    """
    if src.pre.arena is None:
        return src, stream_blocks(src, device, sequence, cpu_decoder, record=record)
    return warped_source(src), stream_blocks(src, device, sequence, cpu_decoder, warp=True, record=record)


def stream_blocks(src: VideoSource, device: torch.device, sequence: int = 32, cpu_decoder: str = "auto",
                  lane: str | None = None, warp: bool = False, record: dict | None = None) -> Iterator[torch.Tensor]:
    """T x H x W x 3 uint8 tensors of the window's frames in order, on ``device`` for NVDEC (T x H x W
    grey for the frames PyAV decodes when the source is grey). With ``warp`` (and an arena), frames
    are warped onto the arena square (see :func:`stream_source`).

    DALI decodes keyframe-aligned segments from the keyframe at or before the window's first frame
    (the frames before the window are dropped); when DALI stops early or fails, PyAV continues
    from the next frame, so the count is what PyAV decodes. A broken last GOP (``dali_frames``) is
    left to PyAV. ``record`` (a dict) receives the decode path: ``lane``, ``why``, ``frames`` per
    lane and, where PyAV took over, the ``fallback`` record (see ``selfee.fallback``).
    """
    info, pre = src.info, src.pre
    arena = pre.arena if warp else None
    rec = decode_path(info, device, cpu_decoder) if lane is None else {"lane": lane, "why": "lane given"}
    lane = rec["lane"]
    if record is not None:
        record.clear()
        record.update(rec)
        rec = record
    frames = rec.setdefault("frames", {})
    nxt = pre.start  # next video frame index to yield
    end = pre.stop if lane == "pyav" or pre.stop <= int(info.keyframes[-1]) else min(pre.stop, dali_frames(info))
    if lane != "pyav" and end > nxt:
        try:
            for first, rgb in _dali_stream(info, lane, device, sequence, nxt, end, arena):
                lo, hi = max(nxt - first, 0), min(end - first, rgb.shape[0])
                if hi > lo:
                    yield rgb[lo:hi]
                    frames[lane] = frames.get(lane, 0) + hi - lo
                    nxt = first + hi
                if nxt >= end:
                    break
        except Exception as exc:
            if not decode_failure(exc):
                raise
            _fell_back(rec, lane, f"stopped at frame {nxt}: {one_line(exc)}", info.path, nxt)
        else:
            if nxt < end:
                _fell_back(rec, lane, f"decoded frames {pre.start}-{nxt - 1} of {pre.start}-{end - 1}", info.path, nxt)
    if nxt >= pre.stop:
        return
    block: list[np.ndarray] = []
    with VideoReader(info) as reader:
        for _, rgb in reader.iter_frames(nxt, pre.stop, grey=pre.grey):
            block.append(rgb)
            frames["pyav"] = frames.get("pyav", 0) + 1
            if len(block) == sequence:
                yield _pyav_block(block, device, arena)
                block = []
    if block:
        yield _pyav_block(block, device, arena)


def _pyav_block(block: list[np.ndarray], device: torch.device, arena: ArenaWarp | None) -> torch.Tensor:
    x = torch.from_numpy(np.stack(block)).to(device)
    return x if arena is None else torch_warp(arena, x)


def _dali_stream(info, lane: str, device: torch.device, sequence: int, start: int, stop: int,
                 arena: ArenaWarp | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first frame index, T x H x W x 3) runs of frames ``[start, stop)`` from ``fn.experimental.inputs.video``.

    Each segment is fed alone and streamed to its end (``ceil(frames / sequence)`` runs, the last
    sequence partial; the operator takes the next input only once one is used up), so at most one
    segment's bytes are held; its frames outside ``[start, stop)`` are dropped.
    """
    dev = "mixed" if lane == "nvdec" else "cpu"
    inputs = None if arena is None else arena_inputs(arena)

    @sync_pipeline(1, device_id(device) if lane == "nvdec" else None, num_threads=1)
    def streamed():
        frames = fn.experimental.inputs.video(name="video", sequence_length=sequence, device=dev,
                                              last_sequence_policy="partial")
        return frames if inputs is None else warp_graph(frames, dev == "mixed", inputs["consts"], inputs)

    pipe = streamed()
    pipe.build()
    cutter = SegmentCutter(info)
    try:
        for first, seg_stop in plan_segments(info, start, stop, SEGMENT_FRAMES):
            seg = cutter.cut(max(first, start), seg_stop)
            pipe.feed_input("video", [seg.data])
            got = 0
            for _ in range(-(-seg.frames // sequence)):
                (out,) = pipe.run()
                (rgb,) = samples_to_torch(out, device)
                n = rgb.shape[0]
                lo, hi = max(start - seg.first - got, 0), min(seg_stop - seg.first - got, n)
                if hi > lo:
                    yield seg.first + got + lo, rgb[lo:hi]
                got += n
            if got != seg.frames:  # DALI counted the segment's frames differently: later runs would be misaligned
                raise VideoError(info.path, f"DALI gave {got} frames for the {seg.frames} of the segment from frame "
                                            f"{seg.first}")
    finally:
        cutter.close()
