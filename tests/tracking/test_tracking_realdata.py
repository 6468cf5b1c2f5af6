"""Agreement with an established tracker (Tracktor) on its own mouse video, when the data is present."""

import numpy as np
import pytest

from conftest import real_video
from selfee.config import PreprocessConfig
from selfee.tracking import TrackOptions, track_video
from selfee.video import probe

pytest.importorskip("cv2")


def test_centroids_agree_with_tracktor_on_mouse_video(shared_data):
    video = real_video(shared_data, "mouse_video.mp4")
    ref_path = shared_data / "labels" / "mouse_video_tracked.csv"
    if not ref_path.is_file():
        pytest.skip(f"{ref_path} not present")
    ref = np.loadtxt(ref_path, delimiter=",", skiprows=1)  # (index), frame (1-based), pos_x, pos_y
    tr = track_video(probe(video), PreprocessConfig(), TrackOptions())  # all 10000 frames, about 10 s
    assert tr.found.all()
    assert np.array_equal(tr.frames + 1, ref[:, 1].astype(int))
    d = np.hypot(*(tr.xy - ref[:, 2:4]).T)
    median, p95 = np.median(d), np.percentile(d, 95)
    print(f"distance to Tracktor: median {median:.2f} px, p95 {p95:.2f} px")
    assert median <= 3.0  # the target (measured: 0.96)
    assert p95 <= 6.0  # measured: 3.83; Tracktor itself repeats positions on 42 % of its frames
