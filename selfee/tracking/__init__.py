"""Arena corners, preprocessing previews and single-animal tracking (``selfee-fast arena``, ``prepare``, ``track``).

``detect`` (background and the largest blob of a frame), ``track`` (one video: positions, speed,
zones; :class:`TrackOptions`), ``metrics`` (measures of a track: filters, speed, distance, zones,
the summary), ``outputs`` (the track command's files, :func:`track_videos`), ``preview`` (choosing
arena corners: a grid PNG, a click picker) and ``prepare`` (what the on-the-fly preprocessing makes
of each video). The names below are the public ones of tracking.
"""

from selfee.tracking.detect import (
    BlobDetector,
    choose_polarity,
    decoded_frames,
    ellipse_of,
    make_background,
    sample_frames,
)
from selfee.tracking.outputs import plot_track, summary_csv, track_csv, track_videos
from selfee.tracking.track import Track, TrackOptions, summary_row, track_video

__all__ = [
    "BlobDetector",
    "Track",
    "TrackOptions",
    "choose_polarity",
    "decoded_frames",
    "ellipse_of",
    "make_background",
    "plot_track",
    "sample_frames",
    "summary_csv",
    "summary_row",
    "track_csv",
    "track_video",
    "track_videos",
]
