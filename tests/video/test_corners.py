"""Corner files in every accepted form, bad ones named, per-video overrides and their config entries."""

import json
import logging

import pytest

from selfee.config import SelfeeConfig
from selfee.errors import ConfigError, VideoError
from selfee.video.corners import (
    apply_corners,
    corners_overrides,
    parse_corners_text,
    read_corners,
    write_corners,
)

QUAD = ((60.0, 40.0), (250.0, 55.0), (270.0, 200.0), (45.0, 190.0))


def test_corner_files_in_every_accepted_form(tmp_path):
    pts = [[10, 20], [300, 22], [310, 230], [12, 228]]
    (tmp_path / "list.json").write_text(json.dumps(pts))
    (tmp_path / "obj.json").write_text(json.dumps({"arena": "open_field", "corners": pts, "size": 400, "margin": 0.1}))
    (tmp_path / "multi.json").write_text(json.dumps({"videos": {"a.mp4": pts, "b": {"corners": pts}}}))
    (tmp_path / "plain.csv").write_text("\n".join(f"{x},{y}" for x, y in pts) + "\n")
    (tmp_path / "multi.csv").write_text(
        "video,arena,x,y\n" + "".join(f"{v},open_field,{x},{y}\n" for v in ("a", "b") for x, y in pts)
    )
    want = tuple((float(x), float(y)) for x, y in pts)
    assert read_corners(tmp_path / "list.json") == {"*": {"arena_corners": want}}
    assert read_corners(tmp_path / "obj.json")["*"] == {
        "arena": "open_field", "arena_corners": want, "arena_size": 400, "arena_margin": 0.1,
    }
    assert set(read_corners(tmp_path / "multi.json")) == {"a.mp4", "b"}
    assert read_corners(tmp_path / "plain.csv") == {"*": {"arena_corners": want}}
    multi = read_corners(tmp_path / "multi.csv")
    assert multi["b"] == {"arena_corners": want, "arena": "open_field"}
    assert parse_corners_text("10,20 300,22; 310,230 (12,228)") == want


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("three.json", "[[0,0],[1,0],[1,1]]", "four"),
        ("bad.json", "{not json", "cannot parse"),
        ("key.json", '{"corners": [[0,0],[1,0],[1,1],[0,1]], "colour": 1}', "unknown key 'colour'"),
        ("nan.csv", "x,y\n0,0\n1,zero\n1,1\n0,1\n", "numbers"),
        ("c.txt", "0,0", "must end in"),
    ],
)
def test_bad_corner_files_name_the_file(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        read_corners(p)
    assert name in str(exc.value)


def test_corners_overrides_from_a_folder_a_single_file_and_text(tmp_path, caplog):
    d = tmp_path / "corners"
    write_corners(d / "v1.json", "plus_maze", [(40, 120), (280, 110), (165, 10), (155, 230)])
    (d / "v2.csv").write_text("x,y\n10,20\n300,22\n310,230\n12,228\n")
    with caplog.at_level(logging.WARNING, logger="selfee"):
        out = corners_overrides(["x/v1.mp4", "x/v2.avi", "x/v3.mp4"], d)
    assert set(out) == {"v1.mp4", "v2.avi"} and "v3.mp4" in caplog.text
    assert out["v1.mp4"]["arena"] == "plus_maze" and "arena" not in out["v2.avi"]
    single = corners_overrides(["a.mp4", "b.mp4"], "10,20 300,22 310,230 12,228")
    assert single["a.mp4"] == single["b.mp4"]


def test_apply_corners_keeps_each_videos_other_settings():
    cfg = SelfeeConfig.load(
        overrides=["data.preprocess.start_s=2", "data.videos={b: {start_s: 5, invert: true}}"]
    )
    quad = "60,40 250,55 270,200 45,190"
    new = apply_corners(cfg, ["d/a.mp4", "d/b.mp4"], quad, kind="open_field")
    a, b = new.data.preprocess_for("d/a.mp4"), new.data.preprocess_for("d/b.mp4")
    assert a.arena == b.arena == "open_field" and a.arena_corners == QUAD
    assert a.start_s == 2 and (b.start_s, b.invert) == (5, True)
    assert cfg.data.preprocess_for("d/a.mp4").arena == "none"  # the original is untouched
    with pytest.raises(ConfigError, match="a.mp4"):
        apply_corners(cfg, ["a.mp4"], "0,0 100,100 100,0 0,100")  # a bow tie, reported per video


def test_apply_corners_can_collect_per_video_failures_and_keep_the_others(tmp_path):
    d = tmp_path / "corners"
    write_corners(d / "good.json", "open_field", QUAD)
    (d / "bowtie.json").write_text("[[0,0],[100,100],[100,0],[0,100]]")
    (d / "other.json").write_text('{"videos": {"x.mp4": [[0,0],[1,0],[1,1],[0,1]], "y.mp4": [[0,0],[1,0],[1,1],[0,1]]}}')
    (d / "broken.json").write_text("{not json")
    videos = ["v/good.mp4", "v/bowtie.mp4", "v/other.mp4", "v/broken.mp4", "v/plain.mp4"]
    failures = []
    new = apply_corners(SelfeeConfig(), videos, d, failures=failures)
    want = {"v/bowtie.mp4": "do not form a convex quadrilateral", "v/other.mp4": "none named other.mp4 or other",
            "v/broken.mp4": "broken.json: cannot parse JSON"}
    assert sorted(e.path for e in failures) == sorted(want)
    for e in failures:
        assert isinstance(e, VideoError) and str(e) == f"{e.path}: {e.problem}" and want[e.path] in e.problem
    assert set(new.data.videos) == {"good.mp4"}  # bad videos get no entry; a video without corners none either
    assert new.data.preprocess_for("v/good.mp4").arena_corners == QUAD
    with pytest.raises(ConfigError, match="lists several videos"):  # without a list: the first bad one raises
        apply_corners(SelfeeConfig(), videos, d)
