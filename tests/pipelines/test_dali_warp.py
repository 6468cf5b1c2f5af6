"""DALI's warp_perspective with :func:`selfee.video.arena.dali_warp_args` is the torch arena warp."""

import numpy as np
import pytest
import torch

from selfee.video.arena import Arena, ArenaWarp, dali_warp_args

pytest.importorskip("nvidia.dali")

from nvidia.dali import fn, pipeline_def  # noqa: E402

QUAD = ((60.0, 40.0), (250.0, 55.0), (270.0, 200.0), (45.0, 190.0))  # a tilted square seen in perspective


def test_dali_warp_perspective_with_our_matrix_matches_the_torch_warp():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(rgb[::8, ::8], 8, 0), 8, 1)  # blocks: interpolation is exact inside them
    a = Arena("open_field", QUAD, size=120)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: [rgb], batch=True, layout="HWC")
        return fn.experimental.warp_perspective(x, **dali_warp_args(a))

    p = pipe()
    p.build()
    (out,) = p.run()
    got = np.array(out[0]).astype(int)
    ref = ArenaWarp(a, 240, 320)(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    d = np.abs(got - ref.astype(int))
    assert got.shape == (120, 120, 3)
    assert np.median(d) == 0 and d.mean() < 1.0
