"""The demo's generated behaviour video: one animal whose states differ by posture and motion only.

States, in bouts of 30-80 frames (rounds of every state once, in a random order):

* ``rest``: compact posture, wings folded, nothing moves;
* ``run``: the body runs straight ahead, fast (bouncing off the walls);
* ``spin``: the body turns on the spot, fast;
* ``flutter``: the body stands, both wings out, beating.

Everything else is a nuisance that changes at every bout, independently of the state: where the
animal is, which way it faces, its size, and how bright the floor and the animal are (lighting gain
and offset). Those are what Selfee's augmentations teach a network to ignore (random crop, rotation,
flips, Turbo colormap, brightness and contrast jitter), so raw pixels and an untrained network are
confounded by them, while training is meant to remove them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STATES = ("rest", "run", "spin", "flutter")


@dataclass(frozen=True)
class VideoDesign:
    """What the generated video looks like; lengths are fractions of the frame side unless noted."""

    size: int = 128  # frame side, pixels
    bout_frames: tuple[int, int] = (30, 80)  # bout length range, frames (inclusive)
    body_length: float = 0.26
    size_jitter: float = 0.15  # body length varies by +-this fraction between bouts
    run_speed: float = 0.035  # per frame
    spin_speed: float = 0.3  # radians per frame
    wing_hz: float = 0.23  # wing beats per frame
    floor: tuple[float, float] = (0.3, 0.9)  # floor reflectance range (one value per bout)
    animal: tuple[float, float] = (0.02, 0.25)  # animal reflectance range (one value per bout)
    noise: float = 3.0  # sensor noise, grey levels


def _bouts(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    labels = np.empty(n, np.int64)
    t, last = 0, -1
    while t < n:
        order = rng.permutation(len(STATES))
        if order[0] == last:
            order = np.roll(order, -1)
        for s in order:
            length = int(rng.integers(lo, hi + 1))
            labels[t : t + length] = s
            t += length
        last = order[-1]
    return labels[:n]


def _ellipse(yy, xx, cx, cy, a, b, theta):
    """Anti-aliased coverage (0..1) of an ellipse with semi-axes a (along theta) and b."""
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - r) * min(a, b) + 0.5, 0.0, 1.0)


def _draw(yy, xx, x, y, heading, L, state, t, phase, wing_hz):
    """Coverage of the animal: body (abdomen, thorax, head) and two wings."""
    c, s = math.cos(heading), math.sin(heading)
    cover = np.zeros_like(xx)
    for off, a, b in ((-0.22, 0.28, 0.13), (0.08, 0.15, 0.12), (0.28, 0.08, 0.09)):
        cover = np.maximum(cover, _ellipse(yy, xx, x + off * L * c, y + off * L * s, a * L, b * L, heading))
    wings = 0.0
    for side in (1, -1):
        if state == "flutter":
            angle = math.pi - side * (1.2 + 0.6 * math.sin(2 * math.pi * wing_hz * t + phase))
        else:
            angle = math.pi - side * 0.15
        wa = heading + angle
        wx, wy = x + 0.05 * L * c + 0.3 * L * math.cos(wa), y + 0.05 * L * s + 0.3 * L * math.sin(wa)
        wings = np.maximum(wings, _ellipse(yy, xx, wx, wy, 0.3 * L, 0.09 * L, wa))
    return cover, wings


def synthetic_behaviour(n_frames: int = 1500, size: int | None = None, seed: int = 0,
                        design: VideoDesign | None = None):
    """Frames (T x S x S x 3 uint8, grey) and per-frame state labels (T ints into STATES).

    Deterministic for a given ``seed`` and design.
    """
    d = design or VideoDesign()
    S = size or d.size
    rng = np.random.default_rng(seed)
    labels = _bouts(rng, n_frames, *d.bout_frames)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    texture = rng.normal(0, 0.03, (S, S)).astype(np.float32)
    frames = np.empty((n_frames, S, S, 3), np.uint8)
    x = y = heading = L = floor = body = phase = 0.0
    for i in range(n_frames):
        state = STATES[labels[i]]
        if i == 0 or labels[i] != labels[i - 1]:  # a new bout: new nuisances
            L = d.body_length * S * (1 + d.size_jitter * rng.uniform(-1, 1))
            margin = 0.6 * L
            x, y = rng.uniform(margin, S - margin, 2)
            heading = rng.uniform(0, 2 * math.pi)
            floor, body = rng.uniform(*d.floor), rng.uniform(*d.animal)
            phase = rng.uniform(0, 2 * math.pi)
            spin_dir = 1 if rng.uniform() < 0.5 else -1
        margin = 0.6 * L
        if state == "run":
            heading += rng.normal(0, 0.05)
            nx, ny = x + d.run_speed * S * math.cos(heading), y + d.run_speed * S * math.sin(heading)
            if not (margin <= nx <= S - margin and margin <= ny <= S - margin):
                heading = math.atan2(S / 2 - y, S / 2 - x) + rng.normal(0, 0.5)
            else:
                x, y = nx, ny
        elif state == "spin":
            heading += spin_dir * d.spin_speed
        body_cov, wing_cov = _draw(yy, xx, x, y, heading, L, state, i, phase, d.wing_hz)
        img = floor * (1 + texture)
        img = img + (0.5 * (floor + body) - img) * wing_cov  # translucent wings
        img = img + (body - img) * body_cov
        img = 255.0 * img + rng.normal(0, d.noise, (S, S))
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)[..., None]
    return frames, labels
