"""GPU paths without a test elsewhere (gpu marker, strict): the arena warp on the GPU inside embedding,
NVDEC's probe (what ``doctor`` and bench/gpu_check.sh run), and doctor's report on a GPU machine."""

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import cfg_for  # noqa: E402
from test_dali_decode_arena import ARENAS, S, grey_content  # noqa: E402

from conftest import write_video  # noqa: E402
from selfee.data import make_sources  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.video import probe  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("arena-gpu") / "g.mp4", grey_content(40, 64, 96), g=10, bf=2, crf=0)


@pytest.mark.parametrize("kind", list(ARENAS))
def test_embedding_warps_the_arena_on_the_gpu(h264, kind):
    from selfee.pipelines.embed import dali_embed_batches

    cfg = cfg_for(**{"data.input_size": [S, S], "data.preprocess.arena": kind,
                     "data.preprocess.arena_corners": ARENAS[kind], "data.preprocess.arena_size": S})
    (src,) = make_sources([probe(h264)], cfg)
    record = {}
    ours = list(dali_embed_batches(src, cfg, 16, "cuda", sequence=8, record=record))
    assert record["lane"] == "nvdec" and record["frames"] == {"nvdec": 40}
    ref = list(iter_embed_batches(src, cfg, 16))  # PyAV + the torch ArenaWarp
    x, z = torch.cat([b.frames.cpu() for b in ours]), torch.cat([b.frames for b in ref])
    assert ours[0].frames.is_cuda and x.shape == z.shape == (40, 3, S, S)
    assert int((x.int() - z.int()).abs().max()) <= 1  # grey content: NVDEC's RGB and the warp only round


def test_nvdec_probe_decodes_its_clip():
    from selfee.pipelines.probe import nvdec_decodes

    ok, why = nvdec_decodes(torch.cuda.current_device())
    assert ok, why


def test_doctor_on_the_gpu(h264):
    from selfee.doctor import run_doctor

    report = run_doctor([h264])
    assert report["gpu"] is True
    checks = {c.name: c for c in report["machine"]}
    assert checks["torch"].status == "ok" and checks["nvdec"].status == "ok", checks
    assert report["videos"][0]["decode"]["lane"] == "nvdec" and report["videos"][0]["reencode"] is None
