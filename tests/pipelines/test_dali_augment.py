"""The DALI augmentation graph against the reference: same parameters, same views; rates and ranges."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("nvidia.dali")

from selfee.augment import apply, geometric, sample_params, to_float  # noqa: E402
from selfee.config import AugmentConfig  # noqa: E402
from selfee.pipelines.augment import DaliAugmenter  # noqa: E402
from selfee.turbo import turbo_table  # noqa: E402

CPU = torch.device("cpu")


def smooth_frames(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g).float()
    return F.avg_pool2d(x, 3, 1, 1).round().to(torch.uint8)


def test_views_match_the_reference_for_the_same_parameters():
    cfg = AugmentConfig()
    frames = smooth_frames(24, 46, 35)
    aug = DaliAugmenter(cfg, 24, (32, 24), CPU, num_threads=1)
    p1 = sample_params(24, (46, 35), cfg, torch.Generator().manual_seed(1))
    p2 = sample_params(24, (46, 35), cfg, torch.Generator().manual_seed(2))
    v1, v2 = aug(frames, p1, p2)
    assert v1.shape == (24, 3, 32, 24) and v1.dtype == torch.float32
    assert v1.is_contiguous(memory_format=torch.channels_last)
    for v, p in ((v1, p1), (v2, p2)):
        d = (v - apply(to_float(frames), p, (32, 24))).abs()
        # Equal up to float rounding; a Turbo index at an exact .5 or a pixel on the crop's edge may differ.
        assert (d <= 2e-3).float().mean() > 0.995 and d.mean() < 2e-3
    assert not torch.allclose(v1, v2)


def test_disabled_augmentation_is_exact():
    frames = smooth_frames(4, 32, 48)
    v1, v2 = DaliAugmenter(AugmentConfig(enabled=False), 4, (32, 48), CPU)(frames, None, None, channels_last=False)
    assert torch.equal(v1, frames.float() / 255) and torch.equal(v1, v2) and v1.is_contiguous()


def run_views(cfg, frames, seed=0):
    n, _, h, w = frames.shape
    aug = DaliAugmenter(cfg, n, (h, w), CPU, num_threads=1)
    g = torch.Generator().manual_seed(seed)
    return aug(frames, sample_params(n, (h, w), cfg, g), sample_params(n, (h, w), cfg, g))


def test_flip_rates():
    frames = torch.zeros(400, 3, 16, 16, dtype=torch.uint8)
    frames[:, :, :8, :8] = 255  # marker in the top-left quadrant
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), rotation_deg=0, turbo_p=0, brightness=0, contrast=0, saturation=0, hue=0)
    v, _ = run_views(cfg, frames)
    right = v[:, 0, :, 8:].mean((1, 2)) > 0.25  # the marker moved to the right half
    bottom = v[:, 0, 8:, :].mean((1, 2)) > 0.25
    assert abs(right.float().mean() - 0.5) < 0.08 and abs(bottom.float().mean() - 0.5) < 0.08
    assert 0.1 < (right & bottom).float().mean() < 0.4  # independent


def test_crop_scale_range():
    w = 100
    ramp = torch.arange(w, dtype=torch.float32).mul(255 / (w - 1)).round().to(torch.uint8)
    frames = ramp.view(1, 1, 1, w).expand(300, 3, 20, w).contiguous()
    cfg = AugmentConfig(crop_scale=(0.5, 0.8), rotation_deg=0, hflip_p=0, vflip_p=0, turbo_p=0, brightness=0,
                        contrast=0, saturation=0, hue=0)
    v, _ = run_views(cfg, frames)
    span = (v[:, 0, 10, -1] - v[:, 0, 10, 0]) * (w - 1) / w  # the crop's width as a fraction of the frame
    assert span.min() > 0.48 and span.max() < 0.82
    assert span.min() < 0.55 and span.max() > 0.75  # the whole range is used


def test_rotation_range_from_black_corners():
    frames = torch.full((300, 3, 40, 40), 200, dtype=torch.uint8)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), hflip_p=0, vflip_p=0, turbo_p=0, brightness=0, contrast=0,
                        saturation=0, hue=0)
    v, _ = run_views(cfg, frames)
    black = (v[:, 0] < 0.01).float().mean((1, 2))
    # the reference's black share at +-37 degrees bounds it (the corners outside the rotated crop)
    ones = torch.ones(1, 1, 40, 40)
    p = sample_params(1, (40, 40), cfg, torch.Generator().manual_seed(0))
    p.angle[:] = 37.0
    max_black = (geometric(ones, p, (40, 40)) < 0.01).float().mean().item()
    assert 0.1 < max_black < 0.3
    assert black.max() <= max_black + 0.02 and black.max() > 0.8 * max_black
    assert (black < 0.01).float().mean() < 0.15  # small angles are rare; none is forced to zero


def test_turbo_rate_and_colours():
    frames = torch.zeros(400, 3, 8, 8, dtype=torch.uint8)
    cfg = AugmentConfig(rotation_deg=0, crop_scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0)
    v, _ = run_views(cfg, frames)
    coloured = v[:, :, 4, 4].sum(1) > 0.1
    assert abs(coloured.float().mean() - 0.5) < 0.08
    t = turbo_table()[0].float() / 255  # black -> Turbo's first colour, channel by channel
    assert torch.allclose(v[coloured][:, :, 4, 4], t.expand(int(coloured.sum()), 3), atol=1e-6)


def test_colour_jitter_keeps_its_ranges():
    frames = torch.full((300, 3, 8, 8), 128, dtype=torch.uint8)
    cfg = AugmentConfig(rotation_deg=0, crop_scale=(1.0, 1.0), turbo_p=0, contrast=0, saturation=0, hue=0)
    v, _ = run_views(cfg, frames)
    f = v[:, 0, 4, 4] * 255 / 128  # brightness factor
    assert f.min() >= 0.9 - 1e-4 and f.max() <= 1.1 + 1e-4 and f.std() > 0.04
