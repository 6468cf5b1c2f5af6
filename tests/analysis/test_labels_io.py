"""Label files (both formats, malformed lines), embedding directories and frame matching."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_embed
from selfee.analysis import io
from selfee.errors import SelfeeError


def test_text_labels_are_one_based_inclusive_with_comments(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("#0 nothing   2 chasing  3 winging\n1 3 2\n\n4 4 3  # one frame\n7 8 wing extension\n")
    lab = io.read_labels(p)
    assert lab.frames.tolist() == [0, 1, 2, 3, 6, 7]
    assert lab.labels.tolist() == ["2", "2", "2", "3", "wing extension", "wing extension"]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1 3 a\n4 x b\n", 2, "integers"),
        ("1 3 a\n5\n", 2, "start end label"),
        ("0 3 a\n", 1, "1-based"),
        ("5 3 a\n", 1, "start <= end"),
        ("1 3 a\n# c\n3 4 b\n", 3, "overlaps the one on line 1"),
    ],
)
def test_malformed_text_lines_name_file_and_line(tmp_path, text, line, words):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(SelfeeError) as exc:
        io.read_labels(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:{line}:")
    assert words in msg


def test_csv_labels_zero_based_and_blank_means_unlabelled(tmp_path):
    p = tmp_path / "v.csv"
    p.write_text("frame,label\n5,walk\n3,groom\n4,\n")
    lab = io.read_labels(p)
    assert lab.frames.tolist() == [3, 5]
    assert lab.labels.tolist() == ["groom", "walk"]


@pytest.mark.parametrize(
    "text, where",
    [("frame,lab\n1,a\n", ":1:"), ("frame,label\n1,a\nx,b\n", ":3:"), ("frame,label\n1,a\n-2,b\n", ":3:"),
     ("frame,label\n1\n", ":2:")],
)
def test_malformed_csv_lines(tmp_path, text, where):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(SelfeeError, match=str(p).replace("\\", "\\\\") + where):
        io.read_labels(p)


def test_duplicate_csv_frame_names_the_line_of_its_second_label(tmp_path):
    p = tmp_path / "dup.csv"
    # frame 7 first on line 3, again on line 7 (a comment, a blank line and an empty label in between)
    p.write_text("frame,label\n1,a\n7,a\n# note\n\n3,\n7,b\n1,c\n")
    with pytest.raises(SelfeeError) as exc:
        io.read_labels(p)
    assert str(exc.value) == f"{p}:7: frame 7 is labelled again (first on line 3)"
    p.write_text("frame,label\n2,\n2,a\n")  # an empty label is no label: not a duplicate
    assert io.read_labels(p).frames.tolist() == [2]


def test_labels_follow_the_frame_column_not_the_row(tmp_path):
    # Rows are video frames 10, 12, 14, ... (every other frame from 10).
    frames = np.arange(10, 30, 2)
    write_embed(tmp_path / "e", "v", np.ones((len(frames), 4)), frames=frames)
    (v,), errors = io.list_videos(tmp_path / "e")
    assert not errors
    (tmp_path / "v.txt").write_text("11 13 a\n15 15 b\n")  # 1-based: video frames 10-12 and 14
    names = io.read_labels(tmp_path / "v.txt").for_video(v)
    assert names.tolist() == ["a", "a", "b"] + [""] * 7


def test_list_videos_skips_unpaired_npy_and_reports_bad_pairs(tmp_path):
    d = tmp_path / "e"
    write_embed(d, "good", np.ones((5, 3)))
    np.save(d / "good.w16.npy", np.ones((2, 3)))  # a windowed variant without its own CSV: not a video
    write_embed(d, "short", np.ones((5, 3)))
    (d / "short.csv").write_text("frame,time_s\n0,0\n1,0.1\n")
    videos, errors = io.list_videos(d)
    assert [v.stem for v in videos] == ["good"]
    assert len(errors) == 1 and "5 rows but short.csv lists 2 frames" in str(errors[0])


def test_both_label_formats_for_one_video_is_an_error(tmp_path):
    (tmp_path / "v.txt").write_text("1 2 a\n")
    (tmp_path / "v.csv").write_text("frame,label\n0,a\n")
    with pytest.raises(SelfeeError, match="keep one"):
        io.find_label_file(tmp_path, "v")


def test_segments_cover_the_video_in_order(tmp_path):
    write_embed(tmp_path, "v", np.arange(20, dtype=float).reshape(10, 2))
    (v,), _ = io.list_videos(tmp_path)
    segs = io.split_segments([v], 3)
    assert [s.stem for s in segs] == ["v#1", "v#2", "v#3"]
    assert np.concatenate([s.frames for s in segs]).tolist() == list(range(10))
    assert np.array_equal(np.concatenate([s.load() for s in segs]), v.load())
