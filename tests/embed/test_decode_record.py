"""Each embedded video's record (``<stem>.embed.json``) and the run's ``manifest.json`` say which decoder
produced its frames (``"decode"``: lane, why, and for the DALI source the frames per lane)."""

import json

import pytest

from selfee.embed import TorchEmbedder, embed_videos

from .conftest import CFG


def test_the_manifest_records_each_videos_decode_path(tiny, clip, tmp_path):
    emb = TorchEmbedder(tiny[1].encoder, "cpu")
    m = embed_videos([clip], tiny[0], tmp_path / "out", cfg=CFG, embedder=emb, show_progress=False, batch_size=8)
    want = {"lane": "pyav", "why": "embed.pipeline=torch: the PyAV reference"}
    assert m["videos"][0]["decode"] == want
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["videos"][0]["decode"] == want
    assert json.loads((tmp_path / "out" / "clip.embed.json").read_text())["decode"] == want


def test_the_dali_source_records_its_lane_and_frames(tiny, tmp_path):
    pytest.importorskip("nvidia.dali")
    from conftest import numbered_frames, write_video

    try:
        vp9 = write_video(tmp_path / "v.webm", numbered_frames(20), codec="libvpx-vp9")
    except Exception as exc:
        pytest.skip(f"no VP9 encoder: {exc}")
    emb = TorchEmbedder(tiny[1].encoder, "cpu")
    cfg = CFG.replace(**{"embed.pipeline": "dali"})
    m = embed_videos([vp9], tiny[0], tmp_path / "out", cfg=cfg, embedder=emb, show_progress=False, batch_size=8)
    assert m["videos"][0]["decode"] == {"lane": "dali-cpu", "why": "vp9 on DALI's CPU decoder",
                                        "frames": {"dali-cpu": 20}}
