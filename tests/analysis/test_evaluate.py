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


def test_untrained_baseline_gets_batchnorm_statistics_of_plain_frames_and_the_trained_features(tmp_path, tiny_cfg):
    from selfee.analysis.evaluate import untrained_embedder
    from selfee.data import make_sources
    from selfee.embed.bn import plain_frames
    from selfee.video import probe_many

    video = write_video(tmp_path / "clip.mp4", numbered_frames(40, 32, 32), crf=0)
    cfg = tiny_cfg("train.embed_bn_frames=24", "optim.batch_size=8", "embed.features=backbone")
    init = untrained_embedder(cfg, "cpu", seed=3, videos=[video], bn="init").encoder
    fitted = untrained_embedder(cfg, "cpu", seed=3, videos=[video], bn="frames").encoder
    torch.manual_seed(3)  # what a run with train.seed=3 starts from
    start = Selfee(cfg.model).encoder
    w = "backbone.conv1.weight"
    assert torch.equal(init.state_dict()[w], start.state_dict()[w]) and torch.equal(fitted.state_dict()[w], start.state_dict()[w])
    assert init.features == fitted.features == "backbone"
    assert torch.equal(init.backbone.bn1.running_mean, torch.zeros(64))  # as built: no normalisation
    # "frames": the cumulative average of per-batch means of conv1's output over the first 24 plain frames
    infos, _ = probe_many([video], min_frames=3)
    used, seen = [], 0
    for x in plain_frames(cfg, make_sources(infos, cfg), torch.device("cpu")):
        used.append(x[: 24 - seen])
        seen += len(used[-1])
        if seen >= 24:
            break
    with torch.no_grad():
        means = torch.stack([start.backbone.conv1(x.float()).double().mean(dim=(0, 2, 3)) for x in used])
    assert torch.allclose(fitted.backbone.bn1.running_mean.double(), means.mean(0), atol=1e-5)
    assert int(fitted.backbone.bn1.num_batches_tracked) == len(used) == 3
