"""``evaluate`` end to end: trained vs untrained encoder vs raw pixels on one labelled clip."""

import numpy as np
import torch

from conftest import numbered_frames, write_video
from selfee.analysis.classify import KnnOptions
from selfee.analysis.evaluate import evaluate
from selfee.augment import resize_uint8
from selfee.checkpoint import checkpoint_dict
from selfee.fileio import atomic_save
from selfee.live_frames import rgb_to_gray_np
from selfee.model import Selfee


def test_evaluate_compares_trained_untrained_and_pixels(tmp_path, tiny_cfg):
    frames = numbered_frames(40, 32, 32)
    (tmp_path / "vids").mkdir()
    write_video(tmp_path / "vids" / "clip.mp4", frames, crf=0)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "clip.txt").write_text("1 20 left\n21 40 right\n")
    cfg = tiny_cfg()
    torch.manual_seed(1)
    atomic_save(checkpoint_dict(Selfee(cfg.model), cfg), tmp_path / "w.pt")
    res = evaluate([tmp_path / "vids" / "clip.mp4"], tmp_path / "labels", tmp_path / "w.pt", tmp_path / "ev",
                   KnnOptions(k=5, smooth="none", gap=2), segments=4, pixel_size=4, device="cpu")
    assert [r["method"] for r in res.table] == ["trained", "untrained", "pixels"]
    assert [r["dim"] for r in res.table] == [cfg.model.proj_dim, cfg.model.proj_dim, 3 * 4 * 4]
    assert all(r["frames"] == 40 for r in res.table)
    x = np.load(tmp_path / "ev" / "embed_pixels" / "clip.npy")
    # The pixel baseline is the live frame (t-1, t, t+1 in grey) shrunk to 4 x 4: check frame 7's centre channel.
    grey = torch.from_numpy(rgb_to_gray_np(frames[7]))[None, None]
    want = resize_uint8(resize_uint8(grey, (32, 32)), (4, 4)).flatten().float() / 255
    np.testing.assert_allclose(x[7, 16:32], want.numpy(), atol=1.5 / 255)
    assert (tmp_path / "ev" / "evaluation.png").is_file() and (tmp_path / "ev" / "evaluation.csv").is_file()
