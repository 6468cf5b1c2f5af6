"""Several ranks (torchrun; gloo on the CPU here, NCCL on GPUs): videos sharded, one output set."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import numbered_frames, write_video
from selfee.embed import embed_videos, shard
from selfee.export.open import open_embedder


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
    embed_videos(videos, tiny[0], single, backend="torch", device="cpu", batch_size=8, open_embedder=open_embedder)
    for i in range(3):
        np.testing.assert_allclose(np.load(out / f"v{i}.npy"), np.load(single / f"v{i}.npy"), rtol=1e-5, atol=1e-6)
        assert (out / f"v{i}.csv").read_text() == (single / f"v{i}.csv").read_text()


# Runs the CLI under torchrun with one rank changed: "slow" (the default process group gets a 3 s timeout,
# as NCCL's 10 minutes would be for a long run, and rank 1 starts 8 s late) or "fail" (rank 1 cannot load
# the weights).
WRAPPER = """
import datetime, os, sys, time
import torch.distributed as dist
import selfee.embed.run as R
import selfee.export.open as O
mode, rank = os.environ["SELFEE_TEST_MODE"], int(os.environ["RANK"])
if mode == "slow":
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3))
    if rank == 1:
        original = R.embed_video
        def late(*args, **kwargs):
            time.sleep(8)
            return original(*args, **kwargs)
        R.embed_video = late
if mode == "fail" and rank == 1:
    def broken(*args, **kwargs):
        raise RuntimeError("injected: this GPU cannot load the weights")
    O.open_embedder = broken
from selfee.cli import app
app(sys.argv[1:], prog_name="selfee-fast")
"""


def _torchrun(tmp_path, mode, videos, out, weights):
    import os

    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(wrapper),
           "embed", *map(str, videos), "--weights", str(weights), "--out", str(out), "--backend", "torch",
           "--device", "cpu", "--batch-size", "8"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SELFEE_TEST_MODE": mode})


@pytest.mark.slow
def test_a_rank_finishing_long_after_the_other_does_not_trip_the_timeout(tiny, tmp_path):
    """The ranks meet once at the end, on a gloo group of their own with a long timeout: rank 0 waits
    for rank 1 longer than the default group's timeout and the run still succeeds."""
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(12), g=8) for i in range(2)]
    out = tmp_path / "emb"
    proc = _torchrun(tmp_path, "slow", videos, out, tiny[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and not manifest["failed"]
    assert [v["stem"] for v in manifest["videos"]] == ["v0", "v1"] and manifest["seconds"] >= 8


@pytest.mark.slow
def test_a_rank_that_fails_before_the_end_stops_the_others_with_its_error(tiny, tmp_path):
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(12), g=8) for i in range(2)]
    out = tmp_path / "emb"
    proc = _torchrun(tmp_path, "fail", videos, out, tiny[0])  # would hang until the timeout without the report
    assert proc.returncode != 0
    assert "embedding stopped on rank 1: RuntimeError: injected: this GPU cannot load the weights" in proc.stderr
    assert not (out / "manifest.json").exists()
    assert (out / "v0.npy").is_file() or (out / "v1.npy").is_file()  # rank 0's video is kept
