"""``embed --shard I/N``: deterministic shares, independent processes into one folder, the merged manifest."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import numbered_frames, write_video
from selfee.embed import embed_videos
from selfee.embed.shards import parse_shard, select
from selfee.errors import SelfeeError
from selfee.export.open import open_embedder


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4) and parse_shard(None) is None
    for bad in ("4/4", "1/0", "a/b", "1-4", "-1/2"):
        with pytest.raises(SelfeeError, match="--shard"):
            parse_shard(bad)


def test_select_by_name_is_sorted_round_robin_and_covers_everything(tmp_path):
    names = ["e.mp4", "a.mp4", "d.mp4", "b.mp4", "c.mp4"]
    paths = [tmp_path / n for n in names]
    parts = [[p.name for p in select(paths, i, 2)] for i in range(2)]
    assert parts == [["a.mp4", "c.mp4", "e.mp4"], ["b.mp4", "d.mp4"]]
    assert select(list(reversed(paths)), 1, 2) == select(paths, 1, 2)  # input order does not matter
    assert select(paths, 5, 6) == [] and len(select(paths, 0, 1)) == 5


def test_select_by_size_balances_bytes(tmp_path):
    paths = []
    for name, size in [("a", 50), ("b", 10), ("c", 40), ("d", 30), ("e", 20)]:
        p = tmp_path / f"{name}.mp4"
        p.write_bytes(b"x" * size)
        paths.append(p)
    parts = [select(paths, i, 2, by="size") for i in range(2)]
    assert [p.name for p in parts[0]] == ["a.mp4", "b.mp4", "e.mp4"]  # 50 + 10 + 20 = 80 vs 40 + 30 = 70
    assert sorted(p.name for part in parts for p in part) == sorted(p.name for p in paths)
    with pytest.raises(SelfeeError, match="--shard-by"):
        select(paths, 0, 2, by="random")


def _cli(videos, out, weights, shard):
    return [sys.executable, "-m", "selfee.cli", "embed", *map(str, videos), "--weights", str(weights), "--out",
            str(out), "--backend", "torch", "--device", "cpu", "--batch-size", "8", "--shard", shard]


def test_two_concurrent_shard_processes_write_one_output_set(tiny, tmp_path):
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(10 + 4 * i), g=8) for i in range(3)]
    out = tmp_path / "emb"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(_cli(videos, out, tiny[0], f"{i}/2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for _stdout, stderr, rc in results:
        assert rc == 0, stderr[-2000:]
    parts = [json.loads((out / f"manifest.shard-{i}-of-2.json").read_text()) for i in range(2)]
    assert [[v["stem"] for v in p["videos"]] for p in parts] == [["v0", "v2"], ["v1"]]
    manifest = json.loads((out / "manifest.json").read_text())  # written by whichever finished last
    assert [v["stem"] for v in manifest["videos"]] == ["v0", "v1", "v2"] and manifest["shards"] == 2
    assert manifest["frames_embedded"] == sum(p["frames_embedded"] for p in parts) and not manifest["failed"]
    single = tmp_path / "single"
    embed_videos(videos, tiny[0], single, backend="torch", device="cpu", batch_size=8, open_embedder=open_embedder)
    for i in range(3):
        np.testing.assert_allclose(np.load(out / f"v{i}.npy"), np.load(single / f"v{i}.npy"), rtol=1e-5, atol=1e-6)
        assert (out / f"v{i}.csv").read_text() == (single / f"v{i}.csv").read_text()
    # a rerun without --shard finds everything complete and rewrites the full manifest
    (out / "manifest.json").unlink()
    again = embed_videos(videos, tiny[0], out, backend="torch", device="cpu", batch_size=8,
                         open_embedder=open_embedder)
    assert all(v.get("skipped") for v in again["videos"]) and (out / "manifest.json").is_file()


def test_a_shard_waits_for_the_others_and_an_empty_share_still_merges(tiny, tmp_path):
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(10), g=8) for i in range(2)]
    out = tmp_path / "emb"
    kw = dict(backend="torch", device="cpu", batch_size=8, open_embedder=open_embedder, show_progress=False)
    first = embed_videos(videos, tiny[0], out, shard_of=(0, 3), **kw)
    assert not first["complete"] and not (out / "manifest.json").exists()
    empty = embed_videos(videos, tiny[0], out, shard_of=(2, 3), **kw)  # 2 videos, 3 shards: nothing to embed
    assert empty["videos"] == [] and not empty["complete"]
    last = embed_videos(videos, tiny[0], out, shard_of=(1, 3), **kw)
    assert last["complete"]
    assert [v["stem"] for v in json.loads((out / "manifest.json").read_text())["videos"]] == ["v0", "v1"]
