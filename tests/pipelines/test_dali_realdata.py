"""The DALI CPU lane on the real videos in ../shared/data (skipped when absent)."""

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import as_uint8, cfg_for  # noqa: E402

from conftest import real_video  # noqa: E402
from selfee.data import ReferenceLoader, make_sources  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.pipelines.embed import dali_embed_batches  # noqa: E402
from selfee.pipelines.train import DaliTrainPipeline  # noqa: E402
from selfee.video import probe  # noqa: E402

pytestmark = [pytest.mark.dali, pytest.mark.realdata]


def test_training_parity_on_a_real_fly_video(shared_data):
    p = real_video(shared_data, "centered_pair_small.mp4")
    cfg = cfg_for(**{"data.preprocess.duration_s": 20.0, "data.chunk_frames": 64})
    sources = make_sources([probe(p)], cfg)
    ref_loader = ReferenceLoader(sources, cfg)
    ref = [b for _, b in zip(range(2), ref_loader)]
    ref_loader.close()
    pipe = DaliTrainPipeline(sources, cfg, "cpu")
    ours = [b for _, b in zip(range(2), pipe)]
    pipe.close()
    for a, r in zip(ours, ref):
        assert torch.equal(a.frame, r.frame) and torch.equal(as_uint8(a.view1), r.frames)


def test_embedding_count_on_444_h264(shared_data):
    p = real_video(shared_data, "m3v1mp4.mp4")  # H.264 4:4:4: PyAV on CPU (NVDEC would reject it)
    # From the start: after a seek, PyAV's frame-threaded decode of this file is not deterministic
    cfg = cfg_for(**{"data.preprocess.duration_s": 2.0})
    (src,) = make_sources([probe(p)], cfg)
    ours = list(dali_embed_batches(src, cfg, 16, "cpu"))
    ref = list(iter_embed_batches(src, cfg, 16))
    assert torch.cat([b.frame for b in ours]).tolist() == torch.cat([b.frame for b in ref]).tolist()
    assert torch.equal(torch.cat([b.frames for b in ours]), torch.cat([b.frames for b in ref]))
