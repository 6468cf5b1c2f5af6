"""Resumable and safe: a killed or failing run leaves no complete-looking .npy; a rerun skips finished
videos and redoes the partial one, with correct outputs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import numbered_frames, write_video
from selfee.embed import HostEmbedder, TorchEmbedder, completed, embed_videos
from selfee.export.open import open_embedder

from .conftest import CFG

RUN = dict(backend="torch", batch_size=8, device="cpu", open_embedder=open_embedder)


@pytest.fixture
def two_videos(tmp_path):
    a = write_video(tmp_path / "a.mp4", numbered_frames(24), g=8)
    b = write_video(tmp_path / "b.mp4", numbered_frames(40), g=8)
    return a, b


def check_resumed(out, a, b, tiny, before_a):
    """The rerun skipped a (file untouched) and redid b; both match a clean run."""
    manifest = embed_videos([a, b], tiny[0], out, **RUN)
    by_stem = {v["stem"]: v for v in manifest["videos"]}
    assert by_stem["a"].get("skipped") is True and not by_stem["b"].get("skipped")
    assert os.stat(out / "a.npy").st_mtime_ns == before_a
    clean = out.parent / "clean"
    embed_videos([a, b], tiny[0], clean, **RUN)
    for stem in "ab":
        np.testing.assert_array_equal(np.load(out / f"{stem}.npy"), np.load(clean / f"{stem}.npy"))
        assert (out / f"{stem}.csv").read_text() == (clean / f"{stem}.csv").read_text()
    assert not list(out.glob("*.partial"))


def test_a_killed_run_resumes(tiny, two_videos, tmp_path):
    a, b = two_videos
    out = tmp_path / "emb"
    # A real kill (SIGKILL, no clean-up possible) in the middle of the second video.
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from selfee.checkpoint import load_model
        from selfee.embed import HostEmbedder, TorchEmbedder, embed_videos

        model, cfg = load_model({str(tiny[0])!r})
        inner = TorchEmbedder(model.encoder, "cpu")
        calls = []

        class Dying(HostEmbedder):
            name, dim = "torch", inner.dim

            def __call__(self, frames):
                calls.append(len(frames))
                if len(calls) == 6:  # a: 3 batches; b: killed at its 3rd
                    os.kill(os.getpid(), signal.SIGKILL)
                return inner(frames)

        embed_videos([{str(a)!r}, {str(b)!r}], {str(tiny[0])!r}, {str(out)!r}, cfg=cfg, embedder=Dying(),
                     batch_size=8)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert (out / "a.npy").is_file() and (out / "a.embed.json").is_file()
    assert not (out / "b.npy").exists() and not (out / "b.embed.json").exists()  # nothing complete-looking
    assert (out / "b.npy.partial").is_file()  # the interrupted rows, under a name no reader takes
    check_resumed(out, a, b, tiny, os.stat(out / "a.npy").st_mtime_ns)


def test_an_injected_failure_mid_video_is_reported_and_redone(tiny, two_videos, tmp_path):
    from selfee.checkpoint import load_model

    a, b = two_videos
    out = tmp_path / "emb"
    model, cfg = load_model(tiny[0])
    inner = TorchEmbedder(model.encoder, "cpu")

    class Failing(HostEmbedder):
        name, dim, calls = "torch", 16, 0

        def __call__(self, frames):
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("injected failure")
            return inner(frames)

    manifest = embed_videos([a, b], tiny[0], out, cfg=cfg, embedder=Failing(), batch_size=8)
    assert [v["stem"] for v in manifest["videos"]] == ["a"]
    assert manifest["failed"][0]["video"].endswith("b.mp4") and "injected failure" in manifest["failed"][0]["error"]
    assert not (out / "b.npy").exists() and not list(out.glob("*.partial"))  # cleaned up after a failure
    check_resumed(out, a, b, tiny, os.stat(out / "a.npy").st_mtime_ns)


def test_outputs_are_redone_when_they_no_longer_match(tiny, two_videos, tmp_path):
    a, _ = two_videos
    out = tmp_path / "emb"
    first = embed_videos([a], tiny[0], out, **RUN)["videos"][0]
    key = first["key"]
    assert completed(out, "a", key) is not None
    # another dtype (a different key): redone
    m = embed_videos([a], tiny[0], out, overrides=["embed.dtype=float16"], **RUN)
    assert not m["videos"][0].get("skipped") and np.load(out / "a.npy").dtype == np.float16
    # a damaged file under the right key: redone
    m = embed_videos([a], tiny[0], out, overrides=["embed.dtype=float16"], **RUN)
    assert m["videos"][0].get("skipped")
    data = (out / "a.npy").read_bytes()
    (out / "a.npy").write_bytes(data[:-10])
    assert completed(out, "a", m["videos"][0]["key"]) is None
    m = embed_videos([a], tiny[0], out, overrides=["embed.dtype=float16"], **RUN)
    assert not m["videos"][0].get("skipped") and np.load(out / "a.npy").shape == (24, 16)
    # --overwrite redoes finished videos too
    m = embed_videos([a], tiny[0], out, overrides=["embed.dtype=float16"], overwrite=True, **RUN)
    assert not m["videos"][0].get("skipped")
    assert json.loads((out / "a.embed.json").read_text())["frames"] == 24
    assert CFG.embed.window == 0
