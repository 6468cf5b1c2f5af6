"""Live frames: grey frames t-k, t, t+k stacked as the three channels (past, current, future).

This module is the single source of truth for the rule and its edge policy. At the edges of the
frames in use, a missing past or future frame is replaced by the current one.

Grey means the BT.601 luma of the full-range frame, as the original's JPEG path produced
(``cv2.imread(..., IMREAD_GRAYSCALE)`` of the frames it had written as RGB, i.e. libjpeg's
``Y = (19595 R + 38470 G + 7471 B + 32768) >> 16``). For 8-bit YUV video that luma is the decoder's
Y plane (expanded to full range when the stream is limited-range), so
``selfee.video.frame_to_grey`` reads it directly instead of converting to RGB and back; other
sources go through RGB and :func:`rgb_to_gray`. The two agree to a few grey levels, the size of
the rounding in FFmpeg's YUV-to-RGB conversion (tests/core/test_video.py measures it).
"""

from __future__ import annotations

import numpy as np
import torch

BT601 = (0.299, 0.587, 0.114)
# BT.601 weights in 16-bit fixed point, rounded as libjpeg does (they sum to 65536).
GRAY_FIXED = (19595, 38470, 7471)


def neighbor_indices(t: torch.Tensor, k: int, n_frames, first: int = 0) -> torch.Tensor:
    """Frame indices (past, current, future) for each centre ``t``: N -> N x 3.

    Frames outside ``[first, n_frames)`` do not exist; they are replaced by the centre frame.
    ``n_frames`` may be a tensor (one length per sample).
    """
    t = torch.as_tensor(t, dtype=torch.long)
    past = t - k
    future = t + k
    past = torch.where(past < first, t, past)
    future = torch.where(future >= n_frames, t, future)
    return torch.stack([past, t, future], dim=-1)


def neighbor_index(t: int, k: int, n_frames: int, first: int = 0) -> tuple[int, int, int]:
    """Scalar version of :func:`neighbor_indices`."""
    past = t - k if t - k >= first else t
    future = t + k if t + k < n_frames else t
    return past, t, future


def rgb_to_gray_np(rgb: np.ndarray) -> np.ndarray:
    """... x H x W x 3 uint8 RGB -> ... x H x W uint8 luma (the module's rule)."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((r * GRAY_FIXED[0] + g * GRAY_FIXED[1] + b * GRAY_FIXED[2] + 32768) >> 16).astype(np.uint8)


def rgb_to_gray(rgb: torch.Tensor, channels_last: bool = False, chunk: int = 8) -> torch.Tensor:
    """T x 3 x H x W (or T x H x W x 3 with ``channels_last``) uint8 RGB -> T x H x W uint8 luma.

    Integer arithmetic in chunks of frames keeps the temporaries small.
    """
    c = -1 if channels_last else -3
    shape = rgb.shape[:-1] if channels_last else rgb.shape[:-3] + rgb.shape[-2:]
    out = torch.empty(shape, dtype=torch.uint8, device=rgb.device)
    for i in range(0, rgb.shape[0], chunk):
        x = rgb[i : i + chunk].to(torch.int32)
        r, g, b = x.unbind(c)
        y = (r * GRAY_FIXED[0] + g * GRAY_FIXED[1] + b * GRAY_FIXED[2] + 32768) >> 16
        out[i : i + chunk] = y.to(torch.uint8)
    return out
