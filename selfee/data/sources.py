"""Training videos: a probed video with its preprocessing, the unit every loader samples from."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfee.config import SelfeeConfig
from selfee.video import Preprocessor, VideoInfo, preprocessor_for


@dataclass(frozen=True)
class VideoSource:
    """A probed video and its preprocessing; sample indices are relative to its time window."""

    info: VideoInfo
    pre: Preprocessor
    # what the run has already said about this video (shared by every loader of the run: train, held-out,
    # the embedding's BatchNorm frames), so that each problem is reported once
    said: set = field(default_factory=set, compare=False, repr=False)

    @property
    def frames(self) -> int:
        return self.pre.frames

    @property
    def name(self) -> str:
        return self.info.path.name


def make_sources(infos: list[VideoInfo], cfg: SelfeeConfig, cache_dir=None) -> list[VideoSource]:
    """Sources with their preprocessing; ``cache_dir`` keeps per-video backgrounds beside a run's outputs.

    Raises :class:`VideoError` for a video whose time window or ROI cannot be used (the videos
    :func:`selfee.video.open_inputs` returns have been checked).
    """
    return [VideoSource(info, preprocessor_for(info, cfg, cfg.data.min_frames, cache_dir=cache_dir,
                                               grey=cfg.data.live_frames)) for info in infos]

