"""``selfee-fast prepare``: what the on-the-fly preprocessing does to each video, and the video it makes.

Training and embedding never write preprocessed frames; this command exists to look at them. It
runs the same :class:`~selfee.video.preprocess.Preprocessor` (time window, arena warp, ROI, resize, ...)
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
    """Encode the preprocessed frames of ``info``'s window to ``path`` (atomically); returns frames written."""
    from selfee.fileio import atomic_path
    from selfee.video import VideoReader, VideoWriter

    with atomic_path(path, keep_suffix=True) as tmp, VideoReader(info) as reader:
        with VideoWriter(tmp, round(info.fps, 3), crf=crf, options={"preset": "veryfast"}) as out:
            batch: list[np.ndarray] = []

            def flush():
                x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
                out.write_many(pre(x).permute(0, 2, 3, 1).contiguous().numpy())
                if on_frames is not None:
                    on_frames(len(batch))
                batch.clear()

            for _, rgb in reader.iter_frames(pre.start, pre.stop):
                batch.append(rgb)
                if len(batch) == chunk:
                    flush()
            if batch:
                flush()
        if out.frames == 0:
            raise VideoError(info.path, "no frame could be decoded in the time window")
    return out.frames


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
    from selfee.config import SelfeeConfig
    from selfee.console import progress as make_progress
    from selfee.fileio import check_writable
    from selfee.video import open_inputs, preprocessor_for

    if write_video:
        if out_dir is None:
            raise SelfeeError("--write-video needs --out DIR")
        out_dir = check_writable(out_dir)
    inputs = open_inputs(videos, cfg or SelfeeConfig(), corners=corners, arena=kind,
                         writes="{stem}.mp4" if write_video else None)
    cfg, failures = inputs.cfg, inputs.failed
    results = []
    with make_progress() as bar:
        for info in inputs.videos:
            try:
                pcfg = cfg.data.preprocess_for(info.path)
                pre = preprocessor_for(info, cfg)
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
