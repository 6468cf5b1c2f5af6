"""Keyframe-aligned pieces of a video, remuxed in memory: what the DALI decoders are fed instead of whole files.

A decode of frames ``[start, stop)`` then costs host memory (and DALI's index scan) in proportion to
those frames, not to the file. A segment holds, in decode order, the packets from the keyframe at or
before ``start`` until every frame shown before ``stop`` is in, less the leading pictures of an open
GOP (frames shown before the keyframe: they need the previous GOP and the reference drops them too).
So its frame ``i`` in presentation order is video frame ``first + i`` for every ``i < stop - first``;
a few frames after ``stop`` can follow (packets that B-frames before ``stop`` reference), which
callers drop. The packets are copied as they are (no re-encoding) into a Matroska container, which
carries every codec DALI decodes (MPEG-4 Part 2 from AVI stays in AVI, where DALI unpacks DivX-style
packed B-frames for NVDEC); timestamps are shifted to start at 0 and, where Matroska's
millisecond clock could not tell two frames apart, stretched (DALI orders frames by timestamp, and
nothing else here reads them).

Not carried: state a decoder takes from the file's first packet only. FFmpeg reads x264's version
from an SEI there to work around old x264 bugs; ``m3v1mp4.mp4`` (H.264 4:4:4 by an old x264) decodes
wrongly from a later keyframe without it (``VideoReader`` primes its decoder for that). Such streams
never reach DALI (NVDEC does not decode H.264 4:4:4, DALI's CPU decoder no H.264), and the H.264
4:2:0 videos in ``shared/data`` remux exactly (``tests/pipelines/test_dali_decode_segments.py``).
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from selfee.errors import VideoError
from selfee.video import VideoInfo, open_video

CONTAINER = "matroska"
MIN_TICK_S = 0.002  # distinct timestamps at least this far apart once written with 1 ms resolution
# MPEG-4 Part 2 in AVI may pack B-frames (DivX); DALI unpacks them for NVDEC only when it reads AVI
KEEP_AVI = {"mpeg4"}


def _av():
    from selfee._deps import require

    return require("av", "reading videos")


@dataclass(frozen=True)
class Segment:
    """An in-memory video whose frame ``i`` is source frame ``first + i`` for every ``i`` below the stop it
    was cut for (frames after that, packets earlier frames reference, need not be consecutive)."""

    data: np.ndarray  # uint8: the encoded bytes
    first: int  # video frame index of the segment's frame 0 (a keyframe)
    frames: int  # packets in the segment, i.e. the frames DALI indexes in it (>= the frames it was cut for)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


class SegmentCutter:
    """Cuts :class:`Segment` s out of one video; keeps the source open between cuts (not thread-safe)."""

    def __init__(self, info: VideoInfo):
        self.info = info
        self._container = None
        self._stream = None

    def _open(self):
        if self._container is None:
            self._container, self._stream = open_video(self.info.path)
        return self._container, self._stream

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container = self._stream = None

    def cut(self, start: int, stop: int) -> Segment:
        """The segment for video frames ``[start, stop)``, starting at the keyframe at or before ``start``."""
        info = self.info
        if not 0 <= start < stop <= info.frames:
            raise ValueError(f"frames [{start}, {stop}) are outside the video's {info.frames} frames")
        kf = info.keyframe_before(start)
        key_pts = int(info.pts[kf])
        need = set(info.pts[kf:stop].tolist())
        kept = []
        av = _av()
        try:
            for pkt, p in self._packets_from(key_pts):
                if p < key_pts:
                    continue  # a leading picture of an open GOP: shown before the keyframe
                kept.append(pkt)
                need.discard(p)
                if not need:
                    break
            data = self._mux(kept)
        except av.error.FFmpegError as exc:
            raise VideoError(info.path, f"cannot remux frames {kf}-{stop} ({exc})") from None
        if not kept:
            raise VideoError(info.path, f"no packets found for frames {kf}-{stop}")
        return Segment(data, kf, count_packets(data))

    def _packets_from(self, key_pts: int):
        """(packet, timestamp) in decode order from the keyframe packet with timestamp ``key_pts`` on."""
        for attempt in range(2):
            # Seek to the keyframe; a second attempt reads the file from its start (some containers,
            # e.g. MPEG-TS, seek by bytes and can land after it)
            if attempt:
                self.close()
            container, stream = self._open()
            if attempt == 0:
                container.seek(key_pts, stream=stream, backward=True, any_frame=False)
            found = False
            for pkt in container.demux(stream):
                if pkt.size == 0:
                    continue
                p = pkt.pts if pkt.pts is not None else pkt.dts
                if p is None:
                    raise VideoError(self.info.path, "packets without timestamps cannot be cut into segments")
                if not found:
                    if p == key_pts:
                        found = True
                    elif pkt.is_keyframe and p > key_pts:
                        break  # the seek went past the keyframe
                    else:
                        continue
                yield pkt, p
            if found:
                return
        raise VideoError(self.info.path, f"keyframe at timestamp {key_pts} not found")

    def _mux(self, packets) -> np.ndarray:
        av = _av()
        stream = self._stream
        avi = "avi" in self._container.format.name.split(",") and stream.codec_context.name in KEEP_AVI
        stamps = np.array(sorted({t for pkt in packets for t in (pkt.pts, pkt.dts) if t is not None}), np.int64)
        t0 = int(stamps[0])
        tick = float(np.diff(stamps).min() * stream.time_base) if len(stamps) > 1 else 1.0
        stretch = 1 if avi or tick <= 0 else max(1, math.ceil(MIN_TICK_S / tick))  # AVI counts frames
        buf = io.BytesIO()
        with av.open(buf, "w", format="avi" if avi else CONTAINER) as out:
            ostream = out.add_stream_from_template(stream, opaque=True)
            for pkt in packets:
                pkt.pts = None if pkt.pts is None else (pkt.pts - t0) * stretch
                pkt.dts = None if pkt.dts is None else (pkt.dts - t0) * stretch
                pkt.time_base = stream.time_base
                pkt.stream = ostream
                out.mux(pkt)
        return np.frombuffer(buf.getvalue(), np.uint8)


def count_packets(data: np.ndarray) -> int:
    """Video packets in an in-memory container (what DALI counts as its frames)."""
    av = _av()
    with av.open(io.BytesIO(data.tobytes())) as c:
        return sum(1 for pkt in c.demux(video=0) if pkt.size)


def plan_segments(info: VideoInfo, start: int, stop: int, min_frames: int) -> list[tuple[int, int]]:
    """Consecutive ``(first, stop)`` frame ranges covering ``[start, stop)``: each starts at a keyframe (the
    first at the one at or before ``start``) and spans whole GOPs, at least ``min_frames`` frames where
    the keyframes allow."""
    if stop <= start:
        return []
    first = info.keyframe_before(start)
    keys = [int(k) for k in info.keyframes if first < k < stop]
    out = []
    for k in keys:
        if k - first >= min_frames:
            out.append((first, k))
            first = k
    out.append((first, stop))
    return out


class CutterCache:
    """One open :class:`SegmentCutter` per video, the least recently used closed beyond ``size``."""

    def __init__(self, size: int = 32):
        self.size = size
        self._cutters: OrderedDict[object, SegmentCutter] = OrderedDict()

    def get(self, key, info: VideoInfo) -> SegmentCutter:
        cutter = self._cutters.pop(key, None) or SegmentCutter(info)
        self._cutters[key] = cutter
        while len(self._cutters) > self.size:
            self._cutters.popitem(last=False)[1].close()
        return cutter

    def close(self):
        for cutter in self._cutters.values():
            cutter.close()
        self._cutters.clear()
