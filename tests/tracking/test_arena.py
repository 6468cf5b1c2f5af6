"""Arena correction: homography, the torch warp against OpenCV and DALI, corner files, config overrides."""

import json
import logging

import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.config import PreprocessConfig, SelfeeConfig
from selfee.errors import ConfigError, VideoError
from selfee.video import probe
from selfee.video.arena import (
    MASK_FILL,
    Arena,
    ArenaWarp,
    apply_corners,
    apply_homography,
    corners_overrides,
    dali_warp_args,
    homography,
    parse_corners_text,
    read_corners,
    write_corners,
)
from selfee.video.preprocess import Preprocessor

QUAD = ((60.0, 40.0), (250.0, 55.0), (270.0, 200.0), (45.0, 190.0))  # a tilted square seen in perspective


def discs(h, w, centres, r=3, value=255):
    """A black H x W x 3 image with filled discs (pixel centres within r) around each centre."""
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    for cx, cy in centres:
        img[(xs - cx) ** 2 + (ys - cy) ** 2 <= r * r] = value
    return img


def warp_np(arena, rgb):
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    return ArenaWarp(arena, *rgb.shape[:2])(x)[0].permute(1, 2, 0).numpy()


def blob_centroids(grey, k):
    """Centroids of the k bright blobs of a warped image (scipy-free flood by quadrant split)."""
    ys, xs = np.nonzero(grey > 127)
    w = grey[ys, xs].astype(np.float64)
    c = grey.shape[0] / 2
    out = []
    for qx, qy in ((xs < c, ys < c), (xs >= c, ys < c), (xs >= c, ys >= c), (xs < c, ys >= c))[:k]:
        m = qx & qy
        out.append([np.average(xs[m], weights=w[m]), np.average(ys[m], weights=w[m])])
    return np.array(out)


def test_homography_maps_the_four_points_exactly_and_inverts():
    a = Arena("open_field", QUAD, size=200)
    m = homography(QUAD, a.targets)
    assert np.abs(apply_homography(m, QUAD) - a.targets).max() < 1e-9
    assert np.abs(a.to_video(a.to_arena(QUAD)) - np.array(QUAD)).max() < 1e-9
    # a square of side 200 with the default 20 % margin: 20 px on each side, centred on pixel centres
    assert a.targets.tolist() == [[19.5, 19.5], [179.5, 19.5], [179.5, 179.5], [19.5, 179.5]]


def test_homography_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    a = Arena("open_field", QUAD, size=300, margin=0.1)
    ref = cv2.getPerspectiveTransform(np.float32(QUAD), np.float32(a.targets))
    assert np.allclose(a.matrix, ref, atol=1e-6 * np.abs(ref).max())


def test_corners_of_a_drawn_square_land_where_they_should():
    rgb = discs(240, 320, QUAD)
    a = Arena("open_field", QUAD, size=200)
    out = warp_np(a, rgb)[..., 0]
    got = blob_centroids(out, 4)
    assert np.abs(got - a.targets).max() < 1.0


def test_torch_warp_matches_opencv_warp_perspective():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    rgb = np.clip((rgb.astype(int) - 128) * 6 + 128, 0, 255).astype(np.uint8)  # contrast, so that errors show
    a = Arena("open_field", QUAD, size=160)
    ours = warp_np(a, rgb).astype(int)
    ref = cv2.warpPerspective(rgb, a.matrix, (160, 160), flags=cv2.INTER_LINEAR).astype(int)
    d = np.abs(ours - ref)
    assert d.mean() < 0.3 and d.max() <= 3  # OpenCV interpolates with 1/32-pixel fixed-point weights


@pytest.mark.dali
def test_dali_warp_perspective_with_our_matrix_matches_the_torch_warp():
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(rgb[::8, ::8], 8, 0), 8, 1)  # blocks: interpolation is exact inside them
    a = Arena("open_field", QUAD, size=120)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: [rgb], batch=True, layout="HWC")
        return fn.experimental.warp_perspective(x, **dali_warp_args(a))

    p = pipe()
    p.build()
    (out,) = p.run()
    got = np.array(out[0]).astype(int)
    d = np.abs(got - warp_np(a, rgb).astype(int))
    assert got.shape == (120, 120, 3)
    assert np.median(d) == 0 and d.mean() < 1.0


def test_plus_maze_targets_and_mask():
    o1, o2, c3, c4 = (40, 120), (280, 110), (165, 10), (155, 230)
    a = Arena("plus_maze", (o1, o2, c3, c4), size=100)
    # open arms go horizontal (first end left), closed arms vertical (first end on top); 10 % margin
    assert a.targets.tolist() == [[4.5, 49.5], [94.5, 49.5], [49.5, 4.5], [49.5, 94.5]]
    keep = a.keep_mask()
    assert keep[49, 49] and keep[0, 49] and keep[49, 0] and not keep[0, 0] and not keep[99, 99]
    assert keep[49].all() and keep[:, 49].all() and keep.sum() == 100 * 100 - 4 * 35 * 35
    out = warp_np(a, np.full((240, 320, 3), 7, np.uint8))
    assert (out[~keep] == MASK_FILL).all() and (out[45:55, 45:55] == 7).all()


def test_source_mask_is_the_quadrilateral_grown_by_the_margin():
    a = Arena("open_field", QUAD, size=200, margin=0.0)
    m = a.source_mask(240, 320)
    assert m[120, 160] and not m[5, 5] and not m[235, 315]
    # with no margin the shown region is the quadrilateral: its corners' neighbours inside/outside
    assert m[45, 70] and not m[35, 55]
    wide = Arena("open_field", QUAD, size=200, margin=0.4)
    assert wide.source_mask(240, 320)[35, 55]  # the margin shows a band around the quadrilateral
    inside = wide.source_mask(240, 320, inside=True)
    # ... which ``inside`` leaves out, whatever the margin (up to pixels exactly on the edge)
    assert not inside[35, 55] and inside[45, 70] and (inside != m).sum() < 0.002 * m.sum()


def test_bad_corners_are_rejected_with_a_clear_message(caplog):
    with pytest.raises(ConfigError, match="convex"):
        Arena("open_field", ((0, 0), (100, 100), (100, 0), (0, 100)))  # a bow tie: wrong order
    with pytest.raises(ConfigError, match="one line"):
        Arena("open_field", ((0, 0), (50, 0), (100, 0), (0, 100)))
    with pytest.raises(ConfigError, match="cross"):
        Arena("plus_maze", QUAD)  # open field order is not a cross
    with pytest.raises(ConfigError, match="four"):
        Arena("open_field", ((0, 0), (1, 0), (1, 1)))
    with caplog.at_level(logging.WARNING, logger="selfee"):
        Arena("open_field", tuple(reversed(QUAD)))
    assert "mirrored" in caplog.text


def test_preprocessor_warps_first_and_reports_the_square_size(tmp_path):
    frames = discs(240, 320, QUAD, value=200)[None].repeat(6, 0)
    info = probe(write_video(tmp_path / "a.mp4", frames, crf=0))
    cfg = PreprocessConfig(arena="open_field", arena_corners=QUAD, arena_size=64)
    pre = Preprocessor(cfg, info)
    assert pre.out_hw == (64, 64)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    out = pre(x)
    assert out.shape == (6, 3, 64, 64)
    assert torch.equal(out, ArenaWarp(Arena.from_config(cfg), 240, 320)(x))
    resized = Preprocessor(PreprocessConfig(arena="open_field", arena_corners=QUAD, resize=(32, 48)), info)
    assert resized.out_hw == (32, 48) and resized(x).shape == (6, 3, 32, 48)
    with pytest.raises(ConfigError, match="roi"):
        Preprocessor(PreprocessConfig(arena="open_field", arena_corners=QUAD, roi=(0, 0, 10, 10)), info)


# ---------------------------------------------------------------------------------------------
# Corner files
# ---------------------------------------------------------------------------------------------


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
