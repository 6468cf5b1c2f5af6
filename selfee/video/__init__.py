"""Videos: reading (probe, decode, grey), writing, per-video preprocessing and arenas, opening the inputs.

``reader`` (PyAV probing and decoding; the luma rule), ``writer`` (the one encoder), ``preprocess``
(time window, ROI, arena warp, background, illumination), ``arena`` (arena geometry), ``corners``
(corner files, per-video arenas in the config) and ``inputs`` (expanding paths and the one bad-input
policy). The names below are the public ones.
"""

from selfee.video.inputs import (
    VIDEO_SUFFIXES,
    Inputs,
    check_decodes,
    check_stems,
    expand_inputs,
    open_inputs,
    preprocessor_for,
    probe_many,
)
from selfee.video.preprocess import Preprocessor, frame_window, roi_box
from selfee.video.reader import VideoInfo, VideoReader, frame_to_grey, frame_to_rgb, luma, open_video, probe
from selfee.video.writer import VideoWriter

__all__ = [
    "VIDEO_SUFFIXES",
    "Inputs",
    "Preprocessor",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_decodes",
    "check_stems",
    "expand_inputs",
    "frame_to_grey",
    "frame_to_rgb",
    "frame_window",
    "luma",
    "open_inputs",
    "open_video",
    "preprocessor_for",
    "probe",
    "probe_many",
    "roi_box",
]
