"""``selfee-fast prepare``: what the on-the-fly preprocessing does to each video, and the video it makes.

Training and embedding never write preprocessed frames; this command exists to look at them. It
runs the same :class:`~selfee.preprocess.Preprocessor` (time window, arena warp, ROI, resize, ...)
and, with ``write_video``, encodes its output with PyAV (H.264, yuv420p) for inspection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from selfee.errors import SelfeeError, VideoError

log = logging.getLogger("selfee")


def write_preprocessed(info, pre, path: Path, chunk: int = 32, crf: int = 18, on_frames=None) -> int:
    """Encode the preprocessed frames of ``info``'s window to ``path``; returns frames written."""
    from selfee._deps import require
    from selfee.video import VideoReader

    av = require("av", "writing videos")
    h, w = pre.out_hw
    # yuv420p needs even sides: pad the bottom/right edge by one pixel when odd
    eh, ew = h + h % 2, w + w % 2
    rate = round(info.fps, 3) if info.fps > 0 else 25
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    n = 0
    try:
        with av.open(str(tmp), "w") as out, VideoReader(info) as reader:
            stream = out.add_stream("libx264", rate=_fraction(rate))
            stream.width, stream.height = ew, eh
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            batch: list[np.ndarray] = []

            def flush():
                nonlocal n
                x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
                y = pre(x).permute(0, 2, 3, 1).contiguous().numpy()
                if (eh, ew) != (h, w):
                    y = np.pad(y, ((0, 0), (0, eh - h), (0, ew - w), (0, 0)), mode="edge")
                for f in y:
                    for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        out.mux(pkt)
                n += len(batch)
                if on_frames is not None:
                    on_frames(len(batch))
                batch.clear()

            for _, rgb in reader.iter_frames(pre.start, pre.stop):
                batch.append(rgb)
                if len(batch) == chunk:
                    flush()
            if batch:
                flush()
            for pkt in stream.encode():
                out.mux(pkt)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise VideoError(info.path, "no frame could be decoded in the time window")
    os.replace(tmp, path)
    return n


def _fraction(rate: float):
    from fractions import Fraction

    return Fraction(rate).limit_denominator(1001)


def open_inputs(videos, cfg, corners=None, kind: str | None = None, writes: str | None = None):
    """Expand ``videos``, add arenas from ``corners``, probe: ``(cfg, infos, failures)``.

    ``writes`` (e.g. ``"{stem}_track.csv"``) names the per-video output, so that two inputs with the
    same stem are refused before any work. Bad videos, and videos whose own corners are unusable,
    are logged in one line each and come back as ``{"video", "error"}`` failures; the others go on.
    """
    from selfee.arena import apply_corners
    from selfee.video import expand_inputs, probe_many

    paths = expand_inputs(videos)
    if not paths:
        raise SelfeeError("no videos given")
    if writes is not None:
        seen: dict[str, Path] = {}
        for p in paths:
            if p.stem in seen:
                name = writes.format(stem=p.stem)
                raise SelfeeError(f"{p} and {seen[p.stem]} would both write '{name}'; use different output folders")
            seen[p.stem] = p
    bad_corners: list[VideoError] = []
    cfg = apply_corners(cfg, paths, corners, kind, failures=bad_corners)
    order = {str(p): i for i, p in enumerate(paths)}
    bad_corners.sort(key=lambda e: order.get(e.path, len(order)))
    for e in bad_corners:
        log.error("%s", e)
    dropped = {e.path for e in bad_corners}
    infos, bad = probe_many([p for p in paths if str(p) not in dropped])
    return cfg, infos, [{"video": e.path, "error": e.problem} for e in [*bad_corners, *bad]]


def failure(video, exc: Exception) -> dict:
    """Log one video's error in one line and return its ``{"video", "error"}`` record."""
    problem = str(exc).removeprefix(f"{video}: ")
    log.error("%s: %s", video, problem)
    return {"video": str(video), "error": problem}


def prepare_videos(
    videos: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike | None,
    cfg=None,
    corners: str | os.PathLike | None = None,
    write_video: bool = False,
    kind: str | None = None,
) -> dict:
    """Per video: its frame window and output size; with ``write_video``, ``OUT/<stem>.mp4`` too.

    Bad videos are reported and skipped. Returns ``{"videos": [...], "failed": [...]}``.
    """
    from selfee.cli_utils import progress as make_progress
    from selfee.config import SelfeeConfig
    from selfee.preprocess import Preprocessor

    if write_video:
        if out_dir is None:
            raise SelfeeError("--write-video needs --out DIR")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    cfg, infos, failures = open_inputs(videos, cfg or SelfeeConfig(), corners, kind,
                                       "{stem}.mp4" if write_video else None)
    results = []
    with make_progress() as bar:
        for info in infos:
            try:
                pcfg = cfg.data.preprocess_for(info.path)
                try:
                    pre = Preprocessor(pcfg, info)
                except ValueError as exc:  # e.g. an ROI outside the frame
                    raise VideoError(info.path, str(exc)) from None
                res = {"video": str(info.path), "start": pre.start, "stop": pre.stop, "frames": pre.frames,
                       "in_hw": [info.height, info.width], "out_hw": list(pre.out_hw), "arena": pcfg.arena}
                if write_video:
                    task = bar.add_task(info.path.name, total=pre.frames, rate="")
                    path = out_dir / f"{info.path.stem}.mp4"
                    res["written"] = write_preprocessed(info, pre, path, on_frames=lambda k, t=task: bar.advance(t, k))
                    res["path"] = str(path)
                    bar.remove_task(task)
                results.append(res)
            except SelfeeError as exc:
                failures.append(failure(info.path, exc))
    return {"videos": results, "failed": failures}
