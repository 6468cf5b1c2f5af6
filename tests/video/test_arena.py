"""Arena geometry: the homography, the torch warp against OpenCV, masks, corner checks, the Preprocessor's warp step."""

import logging

import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.config import PreprocessConfig
from selfee.errors import ConfigError
from selfee.video import probe
from selfee.video.arena import MASK_FILL, Arena, ArenaWarp, apply_homography, homography
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
