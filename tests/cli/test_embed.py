"""``embed`` and ``convert`` through the CLI: partial runs exit 3, missing weights and bad files are one line."""

import torch

from conftest import numbered_frames, write_video

from .conftest import run


def test_convert_errors(tmp_path):
    r = run("convert", tmp_path / "missing.pkl", tmp_path / "out.pt")
    assert r.exit_code == 2 and "checkpoint not found" in r.output
    other = tmp_path / "other.pkl"
    torch.save({"weights": torch.ones(1)}, other)
    r = run("convert", other, tmp_path / "out.pt")
    assert r.exit_code == 2 and "not an original Selfee state_dict" in r.output


def test_train_then_embed(tmp_path, tiny_config):
    v = write_video(tmp_path / "clip.mp4", numbered_frames(30))
    r = run("train", v, "--out", tmp_path / "run", "--steps", 2, "--config", tiny_config())
    assert r.exit_code == 0, r.output
    r = run("embed", v, tmp_path / "missing.mp4", "--weights", tmp_path / "run" / "last.pt", "--out", tmp_path / "emb",
            "--device", "cpu")
    assert r.exit_code == 3  # partial: one video failed, the other was embedded
    assert (tmp_path / "emb" / "clip.npy").exists() and "missing.mp4" in r.output
    r = run("embed", v, "--weights", tmp_path / "nothing.pt", "--out", tmp_path / "emb")
    assert r.exit_code == 2 and "weights file not found" in r.output
