"""Broken tails: where the DALI lanes must stop decoding a video.

DALI sizes its output from the packets and leaves a frame that does not decode unwritten, so a last
GOP that decodes (with PyAV, the reference) to fewer frames than the container lists would come out
of DALI as stale memory; the lanes leave such a GOP to PyAV.
"""

from __future__ import annotations

import logging
import threading

from selfee.errors import VideoError
from selfee.video import VideoReader

log = logging.getLogger("selfee")

TAIL_CHECK_MAX = 4096  # frames: a longer last GOP is not checked (that would cost a whole PyAV decode)


_limits: dict[tuple, int] = {}
_limits_lock = threading.Lock()


def dali_frames(info) -> int:
    """Frames (from the first) that the DALI lanes decode: ``info.frames``, or the last keyframe when
    PyAV decodes fewer frames from the last GOP than the container lists (a broken tail).

    DALI sizes its output from the packets and leaves a frame that does not decode unwritten, so a
    broken tail would come out as stale memory. PyAV, the reference, decodes the last GOP once per
    file and process (a last GOP over ``TAIL_CHECK_MAX`` frames is not checked); the result is
    logged once.
    """
    last = int(info.keyframes[-1])
    if info.frames - last > TAIL_CHECK_MAX:
        return info.frames
    try:
        stat = info.path.stat()
        key = (str(info.path), info.frames, stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = (str(info.path), info.frames)
    with _limits_lock:
        if key in _limits:
            return _limits[key]
    got = []
    try:
        with VideoReader(info, threads=1) as reader:
            for i, _ in reader.frames(last):  # decoded, not converted
                got.append(i)
    except VideoError:
        pass
    limit = info.frames if got == list(range(last, info.frames)) else last
    with _limits_lock:
        if key not in _limits and limit < info.frames:
            log.warning("%s: the last GOP (frames %d-%d) decodes to %d frames, not %d (a broken tail); DALI lanes "
                        "leave it to PyAV, which repeats the last good frame where frames are missing", info.path,
                        last, info.frames - 1, len(got), info.frames - last)
        return _limits.setdefault(key, limit)
