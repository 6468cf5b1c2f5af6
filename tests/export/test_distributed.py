"""Several ranks (torchrun; gloo on the CPU here, NCCL on GPUs): videos sharded, one output set."""

import json
import subprocess
import sys

import numpy as np

from conftest import numbered_frames, write_video
from selfee.embed import embed_videos, shard


def test_shard_balances_by_size_and_covers_every_video(tmp_path):
    paths = []
    for i, size in enumerate([50, 10, 40, 30, 20]):
        p = tmp_path / f"v{i}.mp4"
        p.write_bytes(b"x" * size)
        paths.append(p)
    parts = [shard(paths, r, 2) for r in range(2)]
    assert sorted(p.name for part in parts for p in part) == sorted(p.name for p in paths)
    assert [p.name for p in parts[0]] == ["v0.mp4", "v1.mp4", "v4.mp4"]  # 50 + 10 + 20 vs 40 + 30
    assert shard(paths, 0, 1) == paths


def test_torchrun_two_ranks_write_one_output_set(tiny, tmp_path):
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(12 + 6 * i), g=8) for i in range(3)]
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "selfee.cli", "embed", *map(str, videos), "--weights", str(tiny[0]), "--out", str(out),
           "--backend", "torch", "--device", "cpu", "--batch-size", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and not manifest["failed"]
    assert [v["stem"] for v in manifest["videos"]] == ["v0", "v1", "v2"]  # input order, from both ranks
    single = tmp_path / "single"
    embed_videos(videos, tiny[0], single, backend="torch", device="cpu", batch_size=8)
    for i in range(3):
        np.testing.assert_allclose(np.load(out / f"v{i}.npy"), np.load(single / f"v{i}.npy"), rtol=1e-5, atol=1e-6)
        assert (out / f"v{i}.csv").read_text() == (single / f"v{i}.csv").read_text()
