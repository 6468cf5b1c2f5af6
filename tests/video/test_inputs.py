"""Opening the inputs: one step and one policy for every command (report a bad video in one line, skip it)."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import numbered_frames, write_video
from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError
from selfee.video import expand_inputs, open_inputs, probe_many

QUAD = [[4, 4], [60, 4], [60, 44], [4, 44]]


@pytest.fixture
def folder(tmp_path):
    """good, short (3 frames), late (its window starts after the end), bent (bad corners), junk (not a video)."""
    d = tmp_path / "in"
    d.mkdir()
    for name, n in (("good", 40), ("short", 3), ("late", 40), ("bent", 40)):
        write_video(d / f"{name}.mp4", numbered_frames(n))
    (d / "junk.mp4").write_text("not a video")
    corners = tmp_path / "corners.json"
    corners.write_text(json.dumps({"videos": {"good.mp4": QUAD, "bent.mp4": [QUAD[0], QUAD[2], QUAD[1], QUAD[3]]}}))
    return d, corners


def test_each_unusable_video_is_one_line_in_input_order_and_the_others_go_on(folder, caplog):
    d, corners = folder
    cfg = SelfeeConfig.load(overrides=['data.videos={"late.mp4": {"start_s": 60}}'])
    with caplog.at_level(logging.ERROR, logger="selfee"):
        inputs = open_inputs([d, d / "missing.mp4"], cfg, corners=corners, min_frames=5)
    assert [i.path.name for i in inputs.videos] == ["good.mp4"]
    assert inputs.cfg.data.preprocess_for("good.mp4").arena == "open_field"  # its corners applied
    names = [e.path.rsplit("/", 1)[-1] for e in inputs.failures]
    assert names == ["bent.mp4", "junk.mp4", "late.mp4", "short.mp4", "missing.mp4"]  # the order given
    problems = dict(zip(names, (e.problem for e in inputs.failures)))
    assert "convex" in problems["bent.mp4"] and "not a video" in problems["junk.mp4"]
    assert "past the end" in problems["late.mp4"] and "has 3 frames" in problems["short.mp4"]
    assert problems["missing.mp4"] == "file not found"
    assert sorted(r.getMessage() for r in caplog.records) == sorted(str(e) for e in inputs.failures)
    assert inputs.failed[0] == {"video": str(d / "bent.mp4"), "error": problems["bent.mp4"]}


def test_none_usable_is_an_error_unless_the_caller_decides(folder):
    d, _ = folder
    with pytest.raises(SelfeeError, match="none of the 2 videos can be used"):
        open_inputs([d / "junk.mp4", d / "short.mp4"], SelfeeConfig(), min_frames=5)
    assert open_inputs([d / "junk.mp4"], SelfeeConfig(), require=False).videos == []
    with pytest.raises(SelfeeError, match="no videos given"):
        open_inputs([], SelfeeConfig())


def test_a_share_of_the_inputs_and_outputs_that_would_collide(folder, tmp_path):
    d, _ = folder
    mine = open_inputs([d / "good.mp4", d / "late.mp4"], SelfeeConfig(), select=lambda ps: ps[1:])
    assert [i.path.name for i in mine.videos] == ["late.mp4"] and not mine.failures
    other = tmp_path / "other"
    other.mkdir()
    write_video(other / "good.mp4", numbered_frames(5))
    with pytest.raises(SelfeeError, match="would both write 'good.npy'; use different output folders"):
        open_inputs([d / "good.mp4", other / "good.mp4"], SelfeeConfig(), writes="{stem}.npy")


def test_probe_many_reports_bad_and_short_videos(tmp_path):
    good = write_video(tmp_path / "good.mp4", numbered_frames(20))
    short = write_video(tmp_path / "short.mp4", numbered_frames(3))
    infos, bad = probe_many([good, short, tmp_path / "gone.mp4"], min_frames=5)
    assert [i.path.name for i in infos] == ["good.mp4"]
    assert len(bad) == 2 and "3 frames" in str(bad[0]) and "not found" in str(bad[1])


def test_expand_inputs(tmp_path):
    sub = tmp_path / "videos" / "day1"
    sub.mkdir(parents=True)
    a = write_video(sub / "a.mp4", numbered_frames(5))
    b = write_video(tmp_path / "videos" / "b.avi", numbered_frames(5), codec="mpeg4")
    (tmp_path / "videos" / "notes.txt").write_text("x")
    assert expand_inputs([tmp_path / "videos"]) == sorted([a, b])
    assert expand_inputs([str(tmp_path / "videos" / "**" / "*.mp4")]) == [a]
    assert expand_inputs([a, a]) == [a]
    with pytest.raises(SelfeeError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.mkv")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SelfeeError, match="contains no videos"):
        expand_inputs([empty])
