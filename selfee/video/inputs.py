"""Opening the videos a command is given: one step, and one policy for those that cannot be used.

:func:`open_inputs` expands paths, folders and glob patterns, gives each video its arena from the
corners, probes it, decodes its first frame, and checks its time window and ROI against the
config. A video that cannot be used (missing, not a video, undecodable, too short, a window or
ROI that does not fit it, a bad corner file entry) is reported in one line and skipped, and the
others go on; when none is usable, that is an error. Every command (train, embed, prepare, track,
evaluate, the export's verification videos) opens its videos here.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfee.errors import SelfeeError, VideoError
from selfee.video.reader import VideoInfo, VideoReader, probe

if TYPE_CHECKING:
    from selfee.config import SelfeeConfig

log = logging.getLogger("selfee")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts")


@dataclass(frozen=True)
class Inputs:
    """What :func:`open_inputs` found: the config with each video's arena, the usable videos (in
    input order) and one :class:`VideoError` per video skipped (already reported, in input order)."""

    cfg: SelfeeConfig
    videos: list[VideoInfo]
    failures: list[VideoError]

    @property
    def failed(self) -> list[dict]:
        """The failures as ``{"video", "error"}`` records (manifests)."""
        return [{"video": e.path, "error": e.problem} for e in self.failures]


def open_inputs(
    items: Iterable[str | os.PathLike],
    cfg,
    *,
    corners: str | os.PathLike | None = None,
    arena: str | None = None,
    writes: str | None = None,
    min_frames: int = 1,
    select: Callable[[list[Path]], list[Path]] | None = None,
    require: bool = True,
) -> Inputs:
    """Expand ``items``, add arenas from ``corners`` (of kind ``arena`` where they name none), probe
    and check every video; see the module's docstring for the policy.

    ``writes`` (e.g. ``"{stem}_track.csv"``) names the per-video output, so that two inputs with the
    same stem are refused before any work. ``min_frames`` is the fewest frames a video, and its time
    window, must have (``cfg.data.min_frames`` for live frames). ``select`` picks the paths this
    process opens (a torchrun rank's share). With ``require=False`` no usable video is not an error
    (the caller decides, e.g. after the ranks have met).
    """
    from selfee.video.corners import apply_corners

    paths = expand_inputs(items)
    if not paths:
        raise SelfeeError("no videos given")
    if writes is not None:
        check_stems(paths, writes)
    bad: list[VideoError] = []
    cfg = apply_corners(cfg, paths, corners, arena, failures=bad)
    mine = select(paths) if select is not None else paths
    opened = {str(p) for p in mine}
    bad = [e for e in bad if e.path in opened]
    for e in bad:
        log.error("%s", e)
    dropped = {e.path for e in bad}
    infos, unusable = probe_many([p for p in mine if str(p) not in dropped], min_frames=min_frames, decode_check=True)
    good = []
    for info in infos:
        try:
            preprocessor_for(info, cfg, min_frames)
            good.append(info)
        except VideoError as exc:
            log.error("%s", exc)
            unusable.append(exc)
    order = {str(p): i for i, p in enumerate(paths)}
    failures = sorted(bad + unusable, key=lambda e: order.get(e.path, len(order)))
    if require and not good:
        raise SelfeeError(f"none of the {len(mine)} videos can be used (see the messages above)")
    return Inputs(cfg, good, failures)


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, directories (their videos, recursively) and glob patterns -> sorted unique files.

    Names that match nothing are kept, so that the caller reports them as missing.
    """
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise SelfeeError(f"{p}: directory contains no videos ({', '.join(VIDEO_SUFFIXES[:5])}, ...)")
            out.extend(found)
        elif any(ch in s for ch in "*?[") and not p.exists():
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
            if not found:
                raise SelfeeError(f"{s}: pattern matches no files")
            out.extend(found)
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def check_stems(paths: Iterable[Path], writes: str) -> None:
    """Two videos whose outputs (``writes``, e.g. ``"{stem}.npy"``) would have the same name are an error."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            name = writes.format(stem=p.stem)
            raise SelfeeError(f"{p} and {seen[p.stem]} would both write '{name}'; use different output folders")
        seen[p.stem] = p


def check_decodes(info: VideoInfo, frames: int = 1) -> None:
    """Decode the first ``frames`` frames; raise :class:`VideoError` when none comes out.

    ``probe`` reads packets only, so a file whose packet data is damaged (e.g. zeroed) passes it;
    this rejects such a file before it is used, at the cost of decoding one frame.
    """
    try:
        with VideoReader(info, threads=1) as reader:
            got = reader.read(0, max(1, min(frames, info.frames)), grey=True).shape[0]
    except VideoError as exc:
        raise VideoError(info.path, f"cannot decode its first frame: {exc.problem}") from None
    if got == 0:
        raise VideoError(info.path, "cannot decode its first frame (the stream data is damaged or missing)")


def preprocessor_for(info: VideoInfo, cfg, min_frames: int = 1, **kwargs):
    """The video's :class:`~selfee.video.preprocess.Preprocessor` from ``cfg`` (``kwargs`` go to it); a
    :class:`VideoError` when its time window, ROI or arena does not fit the video, or when the window
    has fewer than ``min_frames`` frames."""
    from selfee.video.preprocess import Preprocessor

    try:
        pre = Preprocessor(cfg.data.preprocess_for(info.path), info, **kwargs)
    except VideoError:
        raise
    except ValueError as exc:  # e.g. an ROI outside the frame (ConfigError is a ValueError too)
        raise VideoError(info.path, str(exc)) from None
    if pre.frames < min_frames:
        raise VideoError(info.path, f"has {pre.frames} frames in the selected window; at least {min_frames} are needed")
    return pre


def probe_many(
    paths: Iterable[Path], min_frames: int = 1, decode_check: bool = False
) -> tuple[list[VideoInfo], list[VideoError]]:
    """Probe every path; bad ones are returned as errors (and logged), the rest go on.

    ``decode_check`` also decodes each video's first frame (:func:`check_decodes`), so that a
    file whose packets are readable but whose data is not is rejected here, with one line.
    """
    good, bad = [], []
    for p in paths:
        try:
            info = probe(p)
            if info.frames < min_frames:
                raise VideoError(p, f"has {info.frames} frames; at least {min_frames} are needed (2k+1 for live frames)")
            if decode_check:
                check_decodes(info)
            if info.vfr:
                log.warning(
                    "%s: variable frame rate; frame_interval counts frames, times in the outputs come from the stream",
                    p,
                )
            good.append(info)
        except VideoError as exc:
            log.error("%s", exc)
            bad.append(exc)
    return good, bad
