"""Selfee's augmentation as batched tensor ops on the training device (the reference semantics).

Per view and per sample, in the original's order: random resized crop (each side uniform in
``crop_scale`` of the frame, resized to the input size), rotation uniform in +-``rotation_deg``
(counter-clockwise positive, corners outside the crop filled black), horizontal and vertical flips,
the Turbo colormap (one lookup), then brightness/contrast/saturation/hue jitter in a random order
per sample. Crop, resize, rotation and flips are one affine resampling (``grid_sample``) per batch;
nothing loops over samples in Python.

The DALI pipelines (``selfee.pipelines``) reproduce these semantics; parameters come from
:class:`selfee.config.AugmentConfig` in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfee.config import AugmentConfig
from selfee.live_frames import BT601
from selfee.turbo import turbo_table

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


def working_size(input_size: tuple[int, int], crop_min: float) -> tuple[int, int]:
    """Frame size kept in memory for training (height, width).

    A crop of ``crop_min`` of each side of a frame this size resizes to the input size without
    upsampling, so decoded frames are shrunk once (antialiased) to this size and the random crop
    never needs more pixels than it has.
    """
    h, w = input_size
    return (math.ceil(h / crop_min), math.ceil(w / crop_min))


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x C x H x W uint8 -> N x C x h x w uint8, bilinear with antialiasing, rounded."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (no mean/std normalization: the original weights expect none)."""
    return x.float().div_(255.0)


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@dataclass
class AugmentParams:
    """Random parameters of one view for N samples (all tensors of length N)."""

    crop: torch.Tensor  # N x 4: centre x, centre y, width, height, in source pixels
    angle: torch.Tensor  # degrees, counter-clockwise
    hflip: torch.Tensor  # bool
    vflip: torch.Tensor  # bool
    turbo: torch.Tensor  # bool
    brightness: torch.Tensor  # multiplicative factors
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # shift, fraction of the hue circle
    order: torch.Tensor  # N x 4 permutation of (brightness, contrast, saturation, hue)


def _uniform(n, lo, hi, g, device):
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def sample_params(
    n: int, src_hw: tuple[int, int], cfg: AugmentConfig, generator: torch.Generator | None = None, device=None
) -> AugmentParams:
    """Draw one view's parameters for ``n`` samples of frames of size ``src_hw``."""
    g = generator
    if device is None:
        device = g.device if g is not None else torch.device("cpu")
    H, W = src_hw
    lo, hi = cfg.crop_scale
    cw = _uniform(n, lo, hi, g, device) * W
    ch = _uniform(n, lo, hi, g, device) * H
    cx = cw / 2 + torch.rand(n, generator=g, device=device) * (W - cw)
    cy = ch / 2 + torch.rand(n, generator=g, device=device) * (H - ch)
    angle = _uniform(n, -cfg.rotation_deg, cfg.rotation_deg, g, device)
    hflip = torch.rand(n, generator=g, device=device) < cfg.hflip_p
    vflip = torch.rand(n, generator=g, device=device) < cfg.vflip_p
    turbo = torch.rand(n, generator=g, device=device) < cfg.turbo_p
    b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g, device)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, device)
    s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g, device)
    h = _uniform(n, -cfg.hue, cfg.hue, g, device)
    order = torch.rand(n, 4, generator=g, device=device).argsort(dim=1)
    return AugmentParams(torch.stack([cx, cy, cw, ch], 1), angle, hflip, vflip, turbo, b, c, s, h, order)


# ---------------------------------------------------------------------------------------------
# Geometry: crop + resize + rotation + flips as one affine map
# ---------------------------------------------------------------------------------------------


def affine_theta(params: AugmentParams, src_hw, out_hw) -> torch.Tensor:
    """N x 2 x 3 matrices mapping normalized output coordinates to normalized source coordinates.

    Forward chain (as the original): crop -> resize to out -> rotate about the centre -> hflip ->
    vflip. The inverse is taken analytically, in pixel units, then normalized (align_corners=False).
    """
    H, W = src_hw
    oh, ow = out_hw
    cx, cy, cw, chh = params.crop.unbind(1)
    rad = params.angle * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    fa = 1.0 - 2.0 * params.hflip.to(c.dtype)
    fb = 1.0 - 2.0 * params.vflip.to(c.dtype)
    theta = torch.empty(c.shape[0], 2, 3, dtype=c.dtype, device=c.device)
    theta[:, 0, 0] = cw / W * c * fa
    theta[:, 0, 1] = -cw * oh / (W * ow) * s * fb
    theta[:, 0, 2] = 2 * cx / W - 1
    theta[:, 1, 0] = chh * ow / (H * oh) * s * fa
    theta[:, 1, 1] = chh / H * c * fb
    theta[:, 1, 2] = 2 * cy / H - 1
    return theta


def _inside_crop_mask(params: AugmentParams, grid_out: torch.Tensor, out_hw) -> torch.Tensor:
    """N x 1 x h x w: 1 where the un-rotated output point lies inside the resized crop."""
    oh, ow = out_hw
    rad = params.angle * (math.pi / 180.0)
    c = torch.cos(rad).view(-1, 1, 1)
    s = torch.sin(rad).view(-1, 1, 1)
    fa = (1.0 - 2.0 * params.hflip.to(c.dtype)).view(-1, 1, 1)
    fb = (1.0 - 2.0 * params.vflip.to(c.dtype)).view(-1, 1, 1)
    xo, yo = grid_out[..., 0], grid_out[..., 1]
    rx = c * fa * xo - s * fb * yo * (oh / ow)
    ry = s * fa * xo * (ow / oh) + c * fb * yo
    eps = 1e-6
    return ((rx.abs() <= 1 + eps) & (ry.abs() <= 1 + eps)).unsqueeze(1)


def _identity_grid(n, out_hw, device, dtype):
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device, dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(eye, [n, 1, *out_hw], align_corners=False)


def geometric(x: torch.Tensor, params: AugmentParams, out_hw) -> torch.Tensor:
    """Crop, resize, rotate and flip a float batch in one bilinear resampling."""
    n = x.shape[0]
    theta = affine_theta(params, x.shape[-2:], out_hw).to(x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], *out_hw], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = _inside_crop_mask(params, _identity_grid(n, out_hw, x.device, x.dtype), out_hw)
    return y * mask


# ---------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------


def turbo(x: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """Turbo colormap per channel: channel c <- table[value, c]. x: N x 3 x H x W float in [0, 1]."""
    if table is None:
        table = turbo_table(x.device)
    lut = table.to(device=x.device, dtype=x.dtype).t().contiguous() / 255.0  # 3 x 256
    n, c, h, w = x.shape
    idx = (x * 255.0).round_().clamp_(0, 255).long().view(n, c, h * w)
    return torch.gather(lut.unsqueeze(0).expand(n, c, 256), 2, idx).view(n, c, h, w)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(BT601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1).to(a.dtype)
    return (f * a + (1 - f) * b).clamp_(0, 1)


def adjust_brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x, f):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x, f):
    return _blend(x, _gray(x), f)


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_div
    gc = (maxc - g) / cr_div
    bc = (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    # sector i -> (r, g, b) from (v, t, p, q)
    r = torch.stack([v, q, p, p, t, v], 0)
    g = torch.stack([t, v, v, q, p, p], 0)
    b = torch.stack([p, p, t, v, v, q], 0)
    idx = i.unsqueeze(0)
    return torch.stack([r.gather(0, idx)[0], g.gather(0, idx)[0], b.gather(0, idx)[0]], dim=1)


def adjust_hue(x, shift):
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + shift.view(-1, 1, 1).to(h.dtype), 1.0)
    return _hsv_to_rgb(h, s, v)


_JITTER = (
    lambda x, p, sel: adjust_brightness(x, p.brightness[sel]),
    lambda x, p, sel: adjust_contrast(x, p.contrast[sel]),
    lambda x, p, sel: adjust_saturation(x, p.saturation[sel]),
    lambda x, p, sel: adjust_hue(x, p.hue[sel]),
)


def colour(x: torch.Tensor, params: AugmentParams, table: torch.Tensor | None = None) -> torch.Tensor:
    """Turbo (per sample with probability) then the four jitters, in each sample's own order."""
    x = x.clone()
    sel = params.turbo.nonzero().flatten()
    if sel.numel():
        x[sel] = turbo(x[sel], table)
    for pos in range(4):
        for op, fn in enumerate(_JITTER):
            sel = (params.order[:, pos] == op).nonzero().flatten()
            if sel.numel():
                x[sel] = fn(x[sel], params, sel)
    return x


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def apply(x: torch.Tensor, params: AugmentParams, out_hw, table: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one view's parameters to a float N x 3 x H x W batch in [0, 1]."""
    return colour(geometric(x, params, out_hw), params, table)


def augment(
    frames: torch.Tensor, cfg: AugmentConfig, out_hw, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 N x 3 x H x W (on any device) -> one augmented float view N x 3 x h x w."""
    x = to_float(frames)
    if not cfg.enabled:
        return F.interpolate(x, size=tuple(out_hw), mode="bilinear", antialias=True, align_corners=False)
    params = sample_params(x.shape[0], x.shape[-2:], cfg, generator, device=x.device)
    return apply(x, params, tuple(out_hw))


def two_views(
    frames: torch.Tensor,
    cfg: AugmentConfig,
    out_hw,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
):
    """Two independently augmented views of the same uint8 live frames."""
    v1 = augment(frames, cfg, out_hw, generator)
    v2 = augment(frames, cfg, out_hw, generator)
    if channels_last:
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)
    return v1, v2
