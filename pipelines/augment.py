"""Selfee's augmentation as a DALI graph, with the semantics of ``selfee.augment`` (the reference).

Parameters are drawn by the reference (``selfee.augment.sample_params``, one source of truth for
ranges and rates) and fed per sample; the graph applies them: one ``warp_affine`` for crop +
resize + rotation + flips (black outside the rotated crop, from a second nearest-neighbour warp of
a mask), the Turbo colormap as one lookup table over (channel, value), then brightness, contrast,
saturation and hue in each sample's own order through DALI conditionals. DALI's own colour
operators are not used: ``brightness_contrast`` centres contrast on mid-grey and ``hsv``/``hue``
rotate hue in YIQ, while torchvision (and the reference) blend with the image's mean grey and
rotate hue in HSV; both are built here from arithmetic operators instead.
"""

from __future__ import annotations

import numpy as np
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, types

from selfee.augment import AugmentParams, affine_theta
from selfee.config import AugmentConfig
from selfee.live_frames import BT601
from selfee.pipelines.backend import batch_to_torch, dali_input, device_id, sync_pipeline
from selfee.turbo import turbo_table

PARAMS = ("matrix", "mask", "turbo", "brightness", "contrast", "saturation", "hue", "order")


# ---------------------------------------------------------------------------------------------
# Parameters: reference draws -> per-sample DALI arguments
# ---------------------------------------------------------------------------------------------


def _pixel_affine(lin: np.ndarray, shift: np.ndarray, src_wh, out_wh) -> np.ndarray:
    """N x 2 x 3 matrices for ``warp_affine``: output pixel -> source pixel, both in DALI's
    coordinates (pixel i spans [i, i + 1)), from a map ``n_src = lin @ n_out + shift`` between
    normalized coordinates (-1 and 1 at the outer pixel edges, as ``align_corners=False``)."""
    s = np.diag([src_wh[0] / 2.0, src_wh[1] / 2.0])
    d = np.diag([2.0 / out_wh[0], 2.0 / out_wh[1]])
    a = s @ lin @ d  # N x 2 x 2
    b = np.einsum("ij,nj->ni", s, shift + 1.0 - lin.sum(axis=2))
    return np.concatenate([a, b[:, :, None]], axis=2).astype(np.float32)  # N x 2 x 3


def dali_params(p: AugmentParams, src_hw, out_hw) -> dict[str, list[np.ndarray]]:
    """Per-sample arrays of one view's parameters, as the graph's external sources take them."""
    (h, w), (oh, ow) = src_hw, out_hw
    theta = affine_theta(p, src_hw, out_hw).double().numpy()
    matrix = _pixel_affine(theta[:, :, :2], theta[:, :, 2], (w, h), (ow, oh))
    # The mask: output points whose un-rotated, un-flipped position falls inside the crop.
    rad = np.deg2rad(p.angle.double().numpy())
    c, s = np.cos(rad), np.sin(rad)
    fa = 1.0 - 2.0 * p.hflip.numpy()
    fb = 1.0 - 2.0 * p.vflip.numpy()
    rot = np.stack([np.stack([c * fa, -s * fb * oh / ow], 1), np.stack([s * fa * ow / oh, c * fb], 1)], 1)
    mask = _pixel_affine(rot, np.zeros((len(c), 2)), (w, h), (ow, oh))  # the mask image has the source size
    f32 = lambda t: [np.array(v, np.float32) for v in t.tolist()]  # noqa: E731
    return {
        "matrix": list(matrix),
        "mask": list(mask),
        "turbo": [np.array(v, np.bool_) for v in p.turbo.tolist()],
        "brightness": f32(p.brightness),
        "contrast": f32(p.contrast),
        "saturation": f32(p.saturation),
        "hue": f32(p.hue),
        "order": [np.array(v, np.int32) for v in p.order.tolist()],
    }


# ---------------------------------------------------------------------------------------------
# Colour operators from DALI arithmetic (torchvision semantics, values in [0, 1], HWC)
# ---------------------------------------------------------------------------------------------


def _channels(x):
    return x[:, :, 0:1], x[:, :, 1:2], x[:, :, 2:3]


def _gray(x):
    r, g, b = _channels(x)
    return r * BT601[0] + g * BT601[1] + b * BT601[2]


def _blend(x, other, f):
    return dmath.clamp(x * f + other * (1.0 - f), 0.0, 1.0)


def _brightness(x, f):
    return dmath.clamp(x * f, 0.0, 1.0)


def _contrast(x, f):
    return _blend(x, fn.reductions.mean(_gray(x)), f)


def _saturation(x, f):
    return _blend(x, _gray(x), f)


def _hue(x, shift):
    """Hue rotation in HSV, as torchvision's ``adjust_hue``, in few operators.

    With v = max, v s = max - min = cr and h6 = 6 h from the usual sectors, channel n in (5, 3, 1)
    is ``v - cr clamp(min(k, 4 - k), 0, 1)``, ``k = (n + h6 + 6 shift) mod 6`` (torchvision's sectors).
    """
    r, g, b = _channels(x)
    maxc = dmath.max(dmath.max(r, g), b)
    cr = maxc - dmath.min(dmath.min(r, g), b)
    is_r = maxc == r
    is_g = (maxc == g) & (maxc != r)
    is_b = (maxc != g) & (maxc != r)
    h6 = (is_r * (g - b) + is_g * (2.0 * cr + b - r) + is_b * (4.0 * cr + r - g)) / (cr + (cr == 0.0)) + 6.0 * shift
    out = []
    for n in (5.0, 3.0, 1.0):
        k = n + h6
        k = k - 6.0 * dmath.floor(k / 6.0)
        out.append(maxc - cr * dmath.clamp(dmath.min(k, 4.0 - k), 0.0, 1.0))
    return fn.cat(*out, axis=2)


def _turbo(x, lut_keys, lut_values):
    """Channel c <- Turbo[round(255 x), c]: one lookup over index 256 c + value."""
    idx = [fn.cast(dmath.floor(ch * 255.0 + 0.5), dtype=types.INT32) + 256 * c for c, ch in enumerate(_channels(x))]
    return fn.lookup_table(fn.cat(*idx, axis=2), keys=lut_keys, values=lut_values, dtype=types.FLOAT, default_value=0.0)


# ---------------------------------------------------------------------------------------------
# The graph and its runner
# ---------------------------------------------------------------------------------------------


class DaliAugmenter:
    """Two views of a batch of uint8 frames (B x 3 x h x w torch, CPU or GPU) with given parameters.

    Returns float32 views in [0, 1], B x 3 x H x W, channels-last in memory, on ``device``.
    """

    def __init__(self, cfg: AugmentConfig, batch_size: int, out_hw, device: torch.device, num_threads: int = 2):
        self.cfg = cfg
        self.out_hw = tuple(int(v) for v in out_hw)
        self.device = device
        self.batch_size = batch_size
        gpu = device.type == "cuda"
        table = turbo_table().numpy().astype(np.float32) / 255.0  # 256 x 3
        lut_keys = list(range(768))
        lut_values = table.T.reshape(-1).tolist()  # index 256 c + v -> table[v, c]
        oh, ow = self.out_hw
        enabled = cfg.enabled

        @sync_pipeline(batch_size, device_id(device), num_threads=num_threads, conditionals=enabled)
        def views():
            frames = fn.external_source(name="frames", dtype=types.UINT8, layout="HWC", device="gpu" if gpu else "cpu")
            if not enabled:
                x = fn.cast(frames, dtype=types.FLOAT) / 255.0  # as the reference: a division, not * (1/255)
                return x, x
            ones = fn.cast(frames[:, :, 0:1] * 0 + 1, dtype=types.UINT8)
            outs = []
            for view in ("a", "b"):
                p = {k: fn.external_source(name=f"{view}_{k}") for k in PARAMS}
                x = fn.warp_affine(frames, matrix=p["matrix"], size=[oh, ow], fill_value=0.0,
                                   interp_type=types.INTERP_LINEAR, dtype=types.FLOAT)
                inside = fn.warp_affine(ones, matrix=p["mask"], size=[oh, ow], fill_value=0.0,
                                        interp_type=types.INTERP_NN)
                x = x * (inside * (1.0 / 255.0))
                if p["turbo"]:
                    x = _turbo(x, lut_keys, lut_values)
                for pos in range(4):
                    op = p["order"][pos]
                    if op == 0:
                        x = _brightness(x, p["brightness"])
                    elif op == 1:
                        x = _contrast(x, p["contrast"])
                    elif op == 2:
                        x = _saturation(x, p["saturation"])
                    else:
                        x = _hue(x, p["hue"])
                outs.append(x)
            return tuple(outs)

        self.pipe = views()
        self.pipe.build()

    def __call__(self, frames: torch.Tensor, p1: AugmentParams | None, p2: AugmentParams | None, channels_last=True):
        hwc = frames.permute(0, 2, 3, 1).contiguous()
        self.pipe.feed_input("frames", dali_input(hwc), layout="HWC")
        if self.cfg.enabled:
            src_hw = tuple(frames.shape[-2:])
            for view, p in (("a", p1), ("b", p2)):
                for k, v in dali_params(p, src_hw, self.out_hw).items():
                    self.pipe.feed_input(f"{view}_{k}", v)
        out = self.pipe.run()
        views = []
        for o in out:
            t = batch_to_torch(o, self.device).permute(0, 3, 1, 2)  # NHWC memory = channels-last NCHW
            views.append(t if channels_last else t.contiguous())
        return views[0], views[1]
