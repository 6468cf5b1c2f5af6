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
    """N x C x H x W uint8 -> N x C x h x w uint8, bilinear with antialiasing, rounded.

    On the CPU, PyTorch's native uint8 kernel (fixed-point, ~4x faster) is used; elsewhere the
    float kernel. The two agree to 1 grey level.
    """
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.device.type == "cpu" and x.dtype == torch.uint8:
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
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


def sampling_grid(params: AugmentParams, src_hw, out_hw, dtype=torch.float32) -> torch.Tensor:
    """N x h x w x 2 grid for ``grid_sample``; points outside the rotated crop are sent off the frame.

    Built by broadcasting (what ``affine_grid`` computes, without its batched matrix product). A
    point lies outside the rotated crop exactly when its source position lies outside the crop
    rectangle (the crop is axis-aligned in the source), so one grid gives both.
    """
    H, W = src_hw
    oh, ow = out_hw
    theta = affine_theta(params, src_hw, out_hw).to(dtype)  # N x 2 x 3
    dev = theta.device
    xs = (torch.arange(ow, device=dev, dtype=dtype) * 2 + 1) / ow - 1  # pixel centres, align_corners=False
    ys = (torch.arange(oh, device=dev, dtype=dtype) * 2 + 1) / oh - 1
    n = theta.shape[0]
    grid = torch.empty(n, oh, ow, 2, dtype=dtype, device=dev)
    outside = torch.zeros(n, oh, ow, dtype=torch.bool, device=dev)
    half = torch.stack([params.crop[:, 2] / W, params.crop[:, 3] / H], 1).to(dtype) * (1 + 1e-6)  # N x 2
    for axis in range(2):
        t = theta[:, axis]
        d = t[:, 0].view(n, 1, 1) * xs.view(1, 1, ow) + t[:, 1].view(n, 1, 1) * ys.view(1, oh, 1)  # offset from the crop centre
        outside |= d.abs() > half[:, axis].view(n, 1, 1)
        torch.add(d, t[:, 2].view(n, 1, 1), out=grid[..., axis])
    return grid.masked_fill_(outside.unsqueeze(-1), -4.0)  # zeros padding -> black


def geometric(x: torch.Tensor, params: AugmentParams, out_hw, scale: float = 1.0) -> torch.Tensor:
    """Crop, resize, rotate and flip a batch in one bilinear resampling (then multiply by ``scale``)."""
    grid = sampling_grid(params, x.shape[-2:], tuple(out_hw), x.dtype if x.is_floating_point() else torch.float32)
    y = F.grid_sample(x if x.is_floating_point() else x.float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    return y.mul_(scale) if scale != 1.0 else y


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


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (fraction of the circle) per sample; torchvision's semantics.

    Hue and the sector functions are computed from max/min directly, so value and saturation are
    never materialised: ``channel = max - chroma * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for red, green, blue.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    # 6 h before the modulo, in [-1, 5): (g - b) / c on red's sector, 2 + (b - r) / c, 4 + (r - g) / c.
    h = torch.where(maxc == r, g - b, torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0)))
    h.div_(torch.where(chroma > 0, chroma, torch.ones_like(chroma)))
    h.add_((6.0 * shift).view(-1, 1, 1).to(h.dtype))
    out = torch.empty_like(x)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = (h + n).remainder_(6.0)
        w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.sub(maxc, w.mul_(chroma), out=out[:, channel])
    return out


def jitter(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, each sample in its own random order."""
    return _colour(x, params, None, with_turbo=False)


def colour(x: torch.Tensor, params: AugmentParams, table: torch.Tensor | None = None) -> torch.Tensor:
    """Turbo (per sample with probability) then the four jitters, in each sample's own order."""
    return _colour(x, params, table, with_turbo=True)


def _colour(x: torch.Tensor, params: AugmentParams, table, with_turbo: bool) -> torch.Tensor:
    """Samples are grouped by what they get (Turbo or not, and the order of the four jitters: 48
    groups at most), and each group gets its operators in turn on its own rows: every operator runs
    once per sample, with no masks over the batch. ``x`` is not modified."""
    if x.shape[0] == 0:
        return x.clone()
    dt = x.dtype
    factors = [params.brightness.to(dt), params.contrast.to(dt), params.saturation.to(dt)]
    w = torch.tensor(BT601, dtype=dt, device=x.device)
    key = (params.order * torch.tensor([64, 16, 4, 1], device=params.order.device)).sum(1)
    if with_turbo:
        key = key + 256 * params.turbo.to(key.dtype)
    key = key.cpu()
    out = torch.empty_like(x)
    for k in key.unique().tolist():
        rows = (key == k).nonzero().flatten().to(x.device)
        y = x.index_select(0, rows)
        if k >= 256:
            y = turbo(y, table)
        for op in (k // 64 % 4, k // 16 % 4, k // 4 % 4, k % 4):
            if op == 3:
                y = adjust_hue(y, params.hue[rows])
                continue
            f = factors[op][rows].view(-1, 1, 1, 1)
            if op == 0:
                y = y.mul_(f).clamp_(0, 1)
                continue
            if op == 1:  # mean grey = grey of the channel means (grey is linear)
                base = (y.mean(dim=(2, 3)) @ w).view(-1, 1, 1, 1)
            else:
                base = (y[:, 0:1] * w[0]).add_(y[:, 1:2], alpha=float(w[1])).add_(y[:, 2:3], alpha=float(w[2]))
            y = y.mul_(f).add_(base * (1 - f)).clamp_(0, 1)
        out.index_copy_(0, rows, y)
    return out


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def apply(x: torch.Tensor, params: AugmentParams, out_hw, table: torch.Tensor | None = None,
          scale: float = 1.0) -> torch.Tensor:
    """Apply one view's parameters to a N x 3 x H x W batch (float in [0, 1], or uint8 with scale 1/255)."""
    return colour(geometric(x, params, out_hw, scale), params, table)


def augment(
    frames: torch.Tensor, cfg: AugmentConfig, out_hw, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 N x 3 x H x W (on any device) -> one augmented float view N x 3 x h x w in [0, 1]."""
    if not cfg.enabled:
        x = to_float(frames)
        return F.interpolate(x, size=tuple(out_hw), mode="bilinear", antialias=True, align_corners=False)
    params = sample_params(frames.shape[0], frames.shape[-2:], cfg, generator, device=frames.device)
    src = frames if frames.is_floating_point() else frames.float()
    return apply(src, params, tuple(out_hw), scale=1.0 if frames.is_floating_point() else 1.0 / 255)


def two_views(
    frames: torch.Tensor,
    cfg: AugmentConfig,
    out_hw,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
):
    """Two independently augmented views of the same uint8 live frames."""
    src = frames.float()  # converted once for both views; 1/255 is applied to the smaller output
    if not cfg.enabled:
        v1 = augment(frames, cfg, out_hw, generator)
        v2 = v1.clone()
    else:
        views = []
        for _ in range(2):
            params = sample_params(frames.shape[0], frames.shape[-2:], cfg, generator, device=frames.device)
            views.append(apply(src, params, tuple(out_hw), scale=1.0 / 255))
        v1, v2 = views
    if channels_last:
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)
    return v1, v2
