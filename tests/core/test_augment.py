"""Augmentation: Turbo table, geometry, flips/rotation/crop statistics, colour jitter vs torchvision."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from selfee.augment import (
    AugmentParams,
    adjust_hue,
    affine_theta,
    apply,
    augment,
    colour,
    geometric,
    resize_uint8,
    sample_params,
    turbo,
    two_views,
    working_size,
)
from selfee.config import AugmentConfig
from selfee.turbo import turbo_table

NO_COLOUR = dict(turbo_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def test_turbo_table_matches_the_published_colormap():
    matplotlib = pytest.importorskip("matplotlib")
    ref = np.round(matplotlib.colormaps["turbo"](np.arange(256))[:, :3] * 255).astype(np.uint8)
    table = turbo_table().numpy()
    assert (table == ref).all()
    # first/last entries of the original Selfee table
    assert table[0].tolist() == [48, 18, 59] and table[-1].tolist() == [122, 4, 3]


def test_turbo_is_a_per_channel_lookup():
    x = torch.tensor([0, 128, 255], dtype=torch.float32).view(1, 3, 1, 1) / 255
    y = (turbo(x) * 255).round().view(3).tolist()
    t = turbo_table()
    assert y == [t[0, 0].item(), t[128, 1].item(), t[255, 2].item()]


def _params(n, src, **kw):
    H, W = src
    base = dict(
        crop=torch.tensor([[W / 2, H / 2, W, H]] * n, dtype=torch.float32),
        angle=torch.zeros(n),
        hflip=torch.zeros(n, dtype=torch.bool),
        vflip=torch.zeros(n, dtype=torch.bool),
        turbo=torch.zeros(n, dtype=torch.bool),
        brightness=torch.ones(n),
        contrast=torch.ones(n),
        saturation=torch.ones(n),
        hue=torch.zeros(n),
        order=torch.arange(4).repeat(n, 1),
    )
    base.update(kw)
    return AugmentParams(**base)


def test_identity_geometry_is_exact():
    x = torch.rand(2, 3, 12, 16)
    p = _params(2, (12, 16))
    assert torch.allclose(affine_theta(p, (12, 16), (12, 16)), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    assert torch.allclose(geometric(x, p, (12, 16)), x, atol=1e-5)


def test_flips():
    x = torch.rand(1, 3, 8, 10)
    h = geometric(x, _params(1, (8, 10), hflip=torch.tensor([True])), (8, 10))
    v = geometric(x, _params(1, (8, 10), vflip=torch.tensor([True])), (8, 10))
    assert torch.allclose(h, x.flip(-1), atol=1e-5)
    assert torch.allclose(v, x.flip(-2), atol=1e-5)


def test_crop_takes_the_right_region():
    x = torch.zeros(1, 1, 20, 20)
    x[..., 10:, 10:] = 1.0  # bottom-right quadrant bright
    p = _params(1, (20, 20), crop=torch.tensor([[15.0, 15.0, 10.0, 10.0]]))
    y = geometric(x, p, (10, 10))
    assert y.min() > 0.99


def test_rotation_is_counter_clockwise_and_corners_are_black():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 15:] = 1.0  # a bar pointing right (east) from the centre
    y = geometric(x, _params(1, (21, 21), angle=torch.tensor([90.0])), (21, 21))
    # counter-clockwise by 90 degrees: the bar now points up (north)
    assert y[0, 0, 2:8, 10].mean() > 0.5 and y[0, 0, 10, 15:].max() < 0.1
    full = torch.ones(1, 1, 21, 21)
    y = geometric(full, _params(1, (21, 21), angle=torch.tensor([45.0])), (21, 21))
    assert y[0, 0, 0, 0] == 0 and y[0, 0, 10, 10] == pytest.approx(1.0)


def test_parameter_ranges_and_rates():
    cfg = AugmentConfig()
    g = torch.Generator().manual_seed(0)
    n = 20000
    p = sample_params(n, (300, 400), cfg, g)
    sw, sh = p.crop[:, 2] / 400, p.crop[:, 3] / 300
    assert sw.min() >= 0.7 and sw.max() <= 1.0 and sh.min() >= 0.7 and sh.max() <= 1.0
    assert abs(sw.mean().item() - 0.85) < 0.01  # uniform on [0.7, 1]
    x0, x1 = p.crop[:, 0] - p.crop[:, 2] / 2, p.crop[:, 0] + p.crop[:, 2] / 2
    assert x0.min() >= -1e-4 and x1.max() <= 400 + 1e-4
    assert p.angle.abs().max() <= 37 and abs(p.angle.std().item() - 74 / math.sqrt(12)) < 0.5
    for rate in (p.hflip, p.vflip, p.turbo):
        assert abs(rate.float().mean().item() - 0.5) < 0.02
    assert p.brightness.min() >= 0.9 and p.brightness.max() <= 1.1 and p.hue.abs().max() <= 0.1
    assert (p.order.sort(1).values == torch.arange(4)).all()
    firsts = torch.bincount(p.order[:, 0], minlength=4).float() / n
    assert (firsts - 0.25).abs().max() < 0.02  # random order


@pytest.mark.parametrize("op, ref", [
    ("brightness", TF.adjust_brightness),
    ("contrast", TF.adjust_contrast),
    ("saturation", TF.adjust_saturation),
])
def test_jitter_matches_torchvision(op, ref):
    """Each of the colour operators alone (the others at their identity) is torchvision's."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 9, 11, generator=g)
    f = torch.tensor([0.9, 1.0, 1.05, 1.1])
    y = colour(x, _params(4, (9, 11), **{op: f}))
    for i in range(4):
        assert torch.allclose(y[i], ref(x[i], f[i].item()), atol=2e-3)


def test_hue_matches_torchvision():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 9, 11, generator=g)
    shift = torch.tensor([-0.1, 0.03, 0.1])
    y = adjust_hue(x, shift)
    for i in range(3):
        assert torch.allclose(y[i], TF.adjust_hue(x[i], shift[i].item()), atol=1e-4)


def test_colour_applies_ops_in_each_samples_order():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    p = _params(2, (5, 5), brightness=torch.tensor([1.1, 1.1]), contrast=torch.tensor([0.9, 0.9]),
                saturation=torch.tensor([1.05, 1.05]), hue=torch.tensor([0.05, 0.05]), order=order)
    y = colour(x, p)
    for i, ops in enumerate(order.tolist()):
        ref = x[i]
        for op in ops:
            ref = [lambda t: TF.adjust_brightness(t, 1.1), lambda t: TF.adjust_contrast(t, 0.9),
                   lambda t: TF.adjust_saturation(t, 1.05), lambda t: TF.adjust_hue(t, 0.05)][op](ref)
        assert torch.allclose(y[i], ref, atol=3e-3)


def test_views_shapes_ranges_and_independence():
    frames = torch.randint(0, 256, (8, 3, 40, 30), dtype=torch.uint8)
    v1, v2 = two_views(frames, AugmentConfig(), (32, 24), torch.Generator().manual_seed(0), channels_last=True)
    assert v1.shape == v2.shape == (8, 3, 32, 24)
    assert v1.is_contiguous(memory_format=torch.channels_last)
    assert v1.min() >= 0 and v1.max() <= 1
    assert not torch.allclose(v1, v2)


def test_disabled_augmentation_is_a_plain_resize():
    frames = torch.randint(0, 256, (2, 3, 40, 30), dtype=torch.uint8)
    y = augment(frames, AugmentConfig(enabled=False), (20, 15))
    ref = TF.resize(frames.float() / 255, [20, 15], antialias=True)
    assert torch.allclose(y, ref, atol=1e-5)


def test_no_colour_augment_keeps_values_of_a_flat_frame():
    frames = torch.full((4, 3, 30, 30), 100, dtype=torch.uint8)
    cfg = AugmentConfig(rotation_deg=0, **NO_COLOUR)
    y = augment(frames, cfg, (16, 16), torch.Generator().manual_seed(0))
    assert torch.allclose(y, torch.full_like(y, 100 / 255), atol=1e-5)


def test_turbo_rate_on_a_batch():
    frames = torch.full((400, 3, 8, 8), 0, dtype=torch.uint8)
    cfg = AugmentConfig(rotation_deg=0, brightness=0, contrast=0, saturation=0, hue=0)
    y = augment(frames, cfg, (8, 8), torch.Generator().manual_seed(0))
    coloured = (y[:, 0, 4, 4] > 0.1).float().mean().item()  # black -> Turbo's dark blue (48/255)
    assert abs(coloured - 0.5) < 0.08


def test_working_size_and_resize():
    assert working_size((256, 192), 0.7) == (366, 275)
    x = torch.randint(0, 256, (2, 1, 50, 60), dtype=torch.uint8)
    y = resize_uint8(x, (25, 30))
    ref = TF.resize(x.float(), [25, 30], antialias=True).round().clamp(0, 255).to(torch.uint8)
    assert (y.int() - ref.int()).abs().max() <= 1  # the CPU's uint8 kernel rounds in fixed point
    assert (y != ref).float().mean() < 0.5
    assert resize_uint8(x, (50, 60)) is x


def test_apply_composes_geometry_then_colour():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    p = sample_params(2, (16, 16), AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.allclose(apply(x, p, (8, 8)), colour(geometric(x, p, (8, 8)), p))


def test_views_on_worker_threads_equal_the_single_thread_views():
    from selfee.threads import worker_pool

    frames = torch.randint(0, 256, (11, 3, 40, 30), dtype=torch.uint8)  # not a multiple of the task size
    ref = two_views(frames, AugmentConfig(), (32, 24), torch.Generator().manual_seed(5), channels_last=True)
    with worker_pool(2, "test-augment") as pool:
        for groups in (2, 4, 11):
            got = two_views(frames, AugmentConfig(), (32, 24), torch.Generator().manual_seed(5), channels_last=True,
                            executor=pool, groups=groups)
            for a, b in zip(ref, got):
                assert b.is_contiguous(memory_format=torch.channels_last)
                assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [1, 3, 4, 9])
def test_grey_frames_resize_four_at_a_time_like_one_at_a_time(n):
    x = torch.randint(0, 256, (n, 1, 97, 131), dtype=torch.uint8)
    ref = torch.cat([torch.nn.functional.interpolate(f[None], size=(50, 71), mode="bilinear", antialias=True,
                                                     align_corners=False) for f in x])
    assert torch.equal(resize_uint8(x, (50, 71)), ref)
