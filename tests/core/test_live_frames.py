"""The live-frame rule, its edges, and the grey conversion (PIL's own RGB->L is the reference)."""

import numpy as np
import torch
from PIL import Image

from selfee.live_frames import neighbor_index, neighbor_indices, rgb_to_gray, rgb_to_gray_np


def test_neighbor_indices_interior_and_edges():
    t = torch.arange(10)
    idx = neighbor_indices(t, 2, 10)
    assert idx[5].tolist() == [3, 5, 7]
    assert idx[0].tolist() == [0, 0, 2]  # no past: the current frame stands in
    assert idx[1].tolist() == [1, 1, 3]
    assert idx[8].tolist() == [6, 8, 8]  # no future
    assert idx[9].tolist() == [7, 9, 9]
    for i in range(10):
        assert tuple(idx[i].tolist()) == neighbor_index(i, 2, 10)


def test_neighbor_indices_per_sample_length():
    idx = neighbor_indices(torch.tensor([4, 4]), 1, torch.tensor([5, 10]))
    assert idx.tolist() == [[3, 4, 4], [3, 4, 5]]


def test_gray_matches_pil():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(rgb).convert("L"))
    assert (rgb_to_gray_np(rgb) == ref).all()
    t = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    assert (rgb_to_gray(t)[0].numpy() == ref).all()
    assert (rgb_to_gray(torch.from_numpy(rgb)[None], channels_last=True)[0].numpy() == ref).all()


def test_gray_of_grey_is_identity():
    v = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert (rgb_to_gray(v)[0] == v[0, 0]).all()


def test_live_frames_gathered_from_a_decoded_run_are_past_current_future():
    """The gather the loaders make: neighbour indices shifted into a run of decoded frames."""
    frames = torch.arange(20, dtype=torch.uint8).view(20, 1, 1).expand(20, 4, 4).contiguous()
    run, start = frames[5:15], 5  # the run holds video frames 5..14 of a 20-frame video
    live = run[neighbor_indices(torch.tensor([7, 12]), 2, 20) - start]
    assert live[:, :, 0, 0].tolist() == [[5, 7, 9], [10, 12, 14]]
    end = frames[neighbor_indices(torch.tensor([19, 0]), 3, 20)]
    assert end[:, :, 0, 0].tolist() == [[16, 19, 19], [0, 0, 3]]
