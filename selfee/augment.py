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
from concurrent.futures import Executor, Future
from dataclasses import dataclass, fields

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
        n, c = x.shape[:2]
        if c == 1 and n >= 4:
            # The uint8 kernel is vectorised over the channels of a channels-last image: grey
            # frames go through it four at a time as the channels of one image (same values).
            m = n // 4 * 4
            four = x[:m].reshape(m // 4, 4, *x.shape[-2:]).contiguous(memory_format=torch.channels_last)
            y = F.interpolate(four, size=size, mode="bilinear", antialias=True, align_corners=False)
            y = y.contiguous().view(m, 1, *size)
            return y if m == n else torch.cat([y, resize_uint8(x[m:], size)])
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

    def rows(self, start: int, stop: int) -> AugmentParams:
        """The parameters of samples ``start`` to ``stop - 1``."""
        return AugmentParams(*(getattr(self, f.name)[start:stop] for f in fields(self)))


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
    rectangle (the crop is axis-aligned in the source), so one grid gives both; such points get 8
    added to x (far off the frame, so ``grid_sample`` reads zeros there).
    """
    H, W = src_hw
    oh, ow = out_hw
    theta = affine_theta(params, src_hw, out_hw).to(dtype)  # N x 2 x 3
    dev = theta.device
    xs = (torch.arange(ow, device=dev, dtype=dtype) * 2 + 1) / ow - 1  # pixel centres, align_corners=False
    ys = (torch.arange(oh, device=dev, dtype=dtype) * 2 + 1) / oh - 1
    n = theta.shape[0]
    half = torch.stack([params.crop[:, 2] / W, params.crop[:, 3] / H], 1).to(dtype) * (1 + 1e-6)  # N x 2
    grid = torch.empty(n, oh, ow, 2, dtype=dtype, device=dev)
    x, outside = None, None
    for axis in range(2):
        t = theta[:, axis]
        d = (t[:, 0].view(n, 1, 1) * xs.view(1, 1, ow)) + (t[:, 1].view(n, 1, 1) * ys.view(1, oh, 1))  # from the crop centre
        if axis == 0:
            x = d + t[:, 2].view(n, 1, 1)
        else:
            torch.add(d, t[:, 2].view(n, 1, 1), out=grid[..., 1])
        out = d.abs_().gt_(half[:, axis].view(n, 1, 1))  # 1.0 where outside along this axis (d is spent)
        outside = out if outside is None else outside.add_(out)
    grid[..., 0] = x.add_(outside, alpha=8.0)  # x >= 7 where outside: zeros padding -> black
    return grid


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
    x = x.contiguous()
    return _lookup(x, _turbo_lut(table, x), torch.empty_like(x))


def _turbo_lut(table: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turbo's three channel tables end to end (index 256 c + value, in [0, 1]) and the channel offsets."""
    if table is None:
        table = turbo_table(x.device)
    flat = (table.to(device=x.device, dtype=x.dtype).t() / 255.0).reshape(-1)
    offset = torch.arange(0, 256 * x.shape[1], 256, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return flat, offset


def _lookup(x: torch.Tensor, lut: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """One gather (int32 ``index_select``) from a :func:`_turbo_lut` table; ``x`` and ``out``
    contiguous, ``out`` may be ``x``."""
    flat, offset = lut
    idx = torch.mul(x, 255.0).round_().clamp_(0, 255).add_(offset).to(torch.int32)
    torch.index_select(flat, 0, idx.view(-1), out=out.view(-1))
    return out


def adjust_hue(x: torch.Tensor, shift: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (fraction of the circle) per sample; torchvision's semantics.

    Value and saturation are never materialised: with ``m = min``, ``c = max - min`` and the
    rotated hue ``H`` in sector units [0, 6), red is ``m + c clamp(|H - 3| - 1, 0, 1)``, green
    ``m + c clamp(2 - |H - 2|, 0, 1)`` and blue ``m + c clamp(2 - |H - 4|, 0, 1)``: a few cheap
    passes per channel, and one wrap of ``H`` for all three. ``out`` may be ``x``.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (amax/aminmax over dim 1 are ~20x slower on the CPU)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    # 6 h before the wrap, in [-1, 5): (g - b) / c where red is the max, else 2 + (b - r) / c where
    # green is, else 4 + (r - g) / c. The choice is made with 0/1 floats (comparisons into a bool
    # tensor and torch.where run several times slower on the CPU than float arithmetic).
    # Where c = 0 every numerator is 0, so dividing by a tiny floor instead of c gives hue 0 there.
    is_r = torch.eq(maxc, r, out=torch.empty_like(r))
    is_g = torch.eq(maxc, g, out=torch.empty_like(g))
    h = (r - g).add_(chroma, alpha=4.0)
    h.addcmul_(is_g, (b - r).add_(chroma, alpha=2.0).sub_(h))
    h.addcmul_(is_r, (g - b).sub_(h))
    h.div_(chroma.clamp_min(1e-30))
    h.add_((6.0 * shift).view(-1, 1, 1).to(h.dtype))
    h.sub_(torch.floor(h * (1.0 / 6.0)).mul_(6.0))  # wrapped into [0, 6)
    # The three channels at once: tri(H, c) = clamp(2 - |H - c|, 0, 1) at c = 3, 2, 4, and red's
    # clamp(|H - 3| - 1, 0, 1) is 1 - tri(H, 3).
    centres = torch.tensor([3.0, 2.0, 4.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    w = (h.unsqueeze(1) - centres).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    w[:, 0].neg_().add_(1.0)
    out = torch.empty_like(x) if out is None else out  # x is not read from here on
    return torch.addcmul(minc.unsqueeze(1), chroma.unsqueeze(1), w, out=out)


def colour(x: torch.Tensor, params: AugmentParams, table: torch.Tensor | None = None) -> torch.Tensor:
    """Turbo (per sample with probability) then the four jitters, in each sample's own order."""
    return _colour(x.clone(memory_format=torch.contiguous_format), params, table, with_turbo=True)


def _colour(x: torch.Tensor, params: AugmentParams, table, with_turbo: bool) -> torch.Tensor:
    """In place on ``x``. Consecutive samples that get the same operators (Turbo or not, the order
    of the four jitters: 48 cases) are taken together, and each operator runs on their rows in
    turn: every operator runs once per sample, with no masks and no gathering of rows (with a random
    order per sample, most runs are one sample long). Blending the operators of a slot over the
    whole batch instead made fewer calls but twice the CPU time."""
    n = x.shape[0]
    if n == 0:
        return x
    x = x.contiguous()  # rows are taken as flat slices
    dt = x.dtype
    w = [float(v) for v in BT601]
    wt = torch.tensor(BT601, dtype=dt, device=x.device)
    factors = torch.stack([params.brightness, params.contrast, params.saturation], 1).to(device=x.device, dtype=dt)
    rest = 1 - factors
    hue = params.hue.to(device=x.device, dtype=dt)
    lut = _turbo_lut(table, x) if with_turbo else None
    key = (params.order.cpu() * torch.tensor([64, 16, 4, 1])).sum(1)
    if with_turbo:
        key = key + 256 * params.turbo.cpu().to(key.dtype)
    key = key.tolist()
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and key[stop] == key[start]:
            stop += 1
        k = key[start]
        y = x[start:stop]
        if k >= 256:
            _lookup(y, lut, out=y)
        for op in (k // 64 % 4, k // 16 % 4, k // 4 % 4, k % 4):
            if op == 3:
                adjust_hue(y, hue[start:stop], out=y)
                continue
            f = factors[start:stop, op].view(-1, 1, 1, 1)
            if op == 0:
                y.mul_(f).clamp_(0, 1)
                continue
            if op == 1:  # mean grey = grey of the channel means (grey is linear)
                base = (y.mean(dim=(2, 3)) @ wt).view(-1, 1, 1, 1)
            else:
                base = (y[:, 0:1] * w[0]).add_(y[:, 1:2], alpha=w[1]).add_(y[:, 2:3], alpha=w[2])
            y.mul_(f).add_(base.mul_(rest[start:stop, op].view(-1, 1, 1, 1))).clamp_(0, 1)
        start = stop
    return x


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def apply(x: torch.Tensor, params: AugmentParams, out_hw, table: torch.Tensor | None = None,
          scale: float = 1.0) -> torch.Tensor:
    """Apply one view's parameters to a N x 3 x H x W batch (float in [0, 1], or uint8 with scale 1/255)."""
    return _colour(geometric(x, params, out_hw, scale), params, table, with_turbo=True)


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


def two_views(frames: torch.Tensor, cfg: AugmentConfig, out_hw, *args, **kwargs):
    """Two independently augmented views of the same uint8 live frames (:func:`two_views_async`'s
    arguments, waited for).

    With ``executor`` (CPU frames), the samples are augmented in ``groups`` groups (at most
    :data:`MAX_ROWS` samples each) on its threads; the views are the same as without it.
    """
    return two_views_async(frames, cfg, out_hw, *args, **kwargs).result()


class PendingViews:
    """Two views being augmented on an executor's threads; :meth:`result` waits for them."""

    def __init__(self, views: tuple[torch.Tensor, torch.Tensor], tasks: list[Future]):
        self._views = views
        self._tasks = tasks

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        for t in self._tasks:
            t.result()
        self._tasks = []
        return self._views


# Samples per executor task at most: few calls per batch (each operator call costs ~10 us whatever
# its size, which small inputs feel), small enough allocations that they are reused, not mapped anew.
MAX_ROWS = 16


def two_views_async(
    frames: torch.Tensor,
    cfg: AugmentConfig,
    out_hw,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
    executor: Executor | None = None,
    groups: int = 2,
) -> PendingViews:
    """:func:`two_views`, started: the parameters are drawn now (in the caller's generator order),
    the pixels are computed on ``executor``'s threads (in the calling thread without one)."""
    out_hw = tuple(out_hw)
    if not cfg.enabled:
        v1 = augment(frames, cfg, out_hw, generator)
        return _done(v1, v1.clone(), channels_last)
    n = frames.shape[0]
    params = [sample_params(n, frames.shape[-2:], cfg, generator, device=frames.device) for _ in range(2)]
    if executor is None:
        src = frames.float()  # converted once for both views; 1/255 is applied to the smaller output
        return _done(*(apply(src, p, out_hw, scale=1.0 / 255) for p in params), channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    views = tuple(torch.empty((n, frames.shape[1], *out_hw), memory_format=fmt, device=frames.device)
                  for _ in range(2))

    def rows(start: int, stop: int) -> None:
        src = frames[start:stop].float()
        for p, out in zip(params, views):
            out[start:stop].copy_(apply(src, p.rows(start, stop), out_hw, scale=1.0 / 255))

    size = min(MAX_ROWS, -(-n // max(1, groups)))
    tasks = [executor.submit(rows, a, min(a + size, n)) for a in range(0, n, size)]
    return PendingViews(views, tasks)


def _done(v1: torch.Tensor, v2: torch.Tensor, channels_last: bool) -> PendingViews:
    if channels_last:
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    return PendingViews((v1, v2), [])
