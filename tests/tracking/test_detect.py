"""The detector on hand-made frames: small blobs and thin parts ignored, polarity, the ellipse of a blob's pixels."""

import numpy as np
import pytest

from selfee.tracking.detect import BlobDetector, choose_polarity, ellipse_of

pytest.importorskip("cv2")


def test_detector_ignores_blobs_below_min_area_and_thin_parts():
    bg = np.full((50, 50), 200, np.uint8)
    y = bg.copy()
    y[10:13, 10:13] = 0  # 9 px: below min_area
    det = BlobDetector(bg, 25, "dark", min_area=20, open_px=0)
    assert det(y) is None
    y[20:30, 20:30] = 0  # a 10 x 10 body ...
    y[24:26, 30:45] = 0  # ... with a 2 px thin tail
    cx, cy, area = BlobDetector(bg, 25, "dark", min_area=20, open_px=5)(y)
    assert (cx, cy) == pytest.approx((24.5, 24.5), abs=0.3) and area < 100
    cx_tail, _, area_tail = BlobDetector(bg, 25, "dark", min_area=20, open_px=0)(y)
    assert cx_tail > 26 and area_tail == 100 + 30


def test_polarity_and_ellipse_helpers():
    bg = np.full((20, 20), 100, np.uint8)
    dark = bg.copy()
    dark[5:10, 5:10] = 10
    assert choose_polarity(bg, [dark], 25) == "dark"
    assert choose_polarity(bg, [255 - dark], 25) == "light"
    pts = np.array([[x, 2 * x] for x in range(-5, 6)], float)  # a line at atan(2)
    assert ellipse_of(pts)[2] == pytest.approx(np.degrees(np.arctan2(2, 1)))
