"""The analysis commands through the CLI: help texts, outputs, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import bouts, cluster_sequence, write_embed
from selfee.cli import app

runner = CliRunner()
COMMANDS = ["classify", "anomaly", "map", "motifs", "compare", "pose-states", "pose-crop", "evaluate"]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Per command: its input arguments / options and the main files it writes, as its --help must name them.
HELP_NAMES = {
    "classify": (["embed_dir", "--labels"], ["metrics.json", "per_video.csv", "per_class.csv", "confusion.csv",
                                             "predictions/<video>.csv", "ethogram.png"]),
    "anomaly": (["--reference", "--query", "--control", "--videos"],
                ["scores/<video>.csv", "anomalous_ranges.csv", "summary.json", "anomaly_scores.png"]),
    "map": (["embed_dir", "--labels"], ["map.csv", "map_by_video.png", "map_by_label.png"]),
    "motifs": (["embed_dir"], ["states/<video>.csv", "usage.csv", "transitions.csv", "model.npz", "ethogram.png"]),
    "compare": (["embed_dirs"], ["dtw_distances.csv", "nearest.csv", "dtw_mds.png", "compare.json"]),
    "pose-states": (["h5", "--video"], ["OUT/<stem>.csv", "OUT/pose_features/<stem>.csv"]),
    "pose-crop": (["h5", "--video"], ["OUT/<stem>.mp4"]),
    "evaluate": (["videos", "--labels", "--weights"],
                 ["OUT/embed_<method>/", "OUT/classify_<method>/", "OUT/evaluation.csv", "evaluation.json",
                  "evaluation.png"]),
}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_explains_inputs_and_outputs(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    # rich wraps the text in boxes: compare whole words, without punctuation around them
    words = {w.strip("().;:") for w in res.output.replace("\u2502", " ").replace(",", " ").split()}
    inputs, outputs = HELP_NAMES[cmd]
    for name in ["--out", *inputs, *outputs]:
        assert name in words, f"{cmd} --help does not name {name}"


@pytest.fixture
def two_groups(tmp_path, rng):
    centers = unit(rng.standard_normal((3, 8)))
    for g in ("a", "b"):
        for v in range(2):
            s = bouts(rng, 150, 3, 20)
            write_embed(tmp_path / g, f"{g}{v}", cluster_sequence(rng, centers, s, 0.05))
            (tmp_path / "labels").mkdir(exist_ok=True)
            (tmp_path / "labels" / f"{g}{v}.csv").write_text(
                "frame,label\n" + "".join(f"{i},s{x}\n" for i, x in enumerate(s)))
    return tmp_path


def test_commands_run_and_write_their_outputs(two_groups):
    t = two_groups
    r = runner.invoke(app, ["classify", str(t / "a"), "--labels", str(t / "labels"), "--out", str(t / "cls"), "--k", "5"])
    assert r.exit_code == 0, r.output
    assert "macro F1" in r.output and (t / "cls" / "metrics.json").is_file()
    r = runner.invoke(app, ["anomaly", "--reference", str(t / "a"), "--query", str(t / "b"), "--out", str(t / "an"),
                            "--window", "5"])
    assert r.exit_code == 0, r.output
    assert "reference leave-one-video-out" in r.output and (t / "an" / "anomalous_ranges.csv").is_file()
    r = runner.invoke(app, ["map", str(t / "a"), "--out", str(t / "map"), "--method", "pca", "--labels", str(t / "labels")])
    assert r.exit_code == 0, r.output
    assert (t / "map" / "map_by_label.png").is_file()
    r = runner.invoke(app, ["motifs", str(t / "a"), "--out", str(t / "mo"), "--k", "3", "--pca-dim", "0"])
    assert r.exit_code == 0, r.output
    assert len(list((t / "mo" / "states").glob("*.csv"))) == 2
    r = runner.invoke(app, ["compare", str(t / "a"), str(t / "b"), "--out", str(t / "cmp"), "--permutations", "50"])
    assert r.exit_code == 0, r.output
    assert json.loads((t / "cmp" / "compare.json").read_text())["videos"] == ["a/a0", "a/a1", "b/b0", "b/b1"]


def test_device_auto_is_the_default_and_resolves_to_the_gpu_or_the_cpu(two_groups):
    import torch

    from selfee.analysis.anomaly import AnomalyOptions
    from selfee.analysis.classify import KnnOptions
    from selfee.errors import SelfeeError
    from selfee.runtime import resolve_device

    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert KnnOptions().device == AnomalyOptions().device == "auto"
    assert str(resolve_device("auto")) == here and str(resolve_device("CPU")) == "cpu"
    with pytest.raises(SelfeeError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    t = two_groups
    r = runner.invoke(app, ["classify", str(t / "a"), "--labels", str(t / "labels"), "--out", str(t / "cls"), "--k", "5"])
    assert r.exit_code == 0, r.output
    assert json.loads((t / "cls" / "metrics.json").read_text())["options"]["device"] == here
    r = runner.invoke(app, ["anomaly", "--reference", str(t / "a"), "--query", str(t / "b"), "--out", str(t / "an"),
                            "--window", "5"])
    assert r.exit_code == 0, r.output
    assert json.loads((t / "an" / "summary.json").read_text())["options"]["device"] == here
    if here == "cpu":  # asking for a GPU that is not there is a one-line error
        r = runner.invoke(app, ["classify", str(t / "a"), "--labels", str(t / "labels"), "--out", str(t / "c2"),
                                "--device", "cuda"])
        assert r.exit_code == 2 and r.output.strip().splitlines() == [r.output.strip()]
        assert "no CUDA GPU" in r.output


def test_one_bad_input_gives_exit_code_3_and_the_rest_run(two_groups):
    t = two_groups
    (t / "a" / "a1.csv").write_text("frame,time_s\n0,0\n")
    write_embed(t / "a", "a2", np.ones((150, 8)))
    (t / "labels" / "a2.csv").write_text("frame,label\n" + "".join(f"{i},s{i % 2}\n" for i in range(150)))
    r = runner.invoke(app, ["classify", str(t / "a"), "--labels", str(t / "labels"), "--out", str(t / "cls"), "--k", "5"])
    assert r.exit_code == 3, r.output
    assert "a1.npy: 150 rows but a1.csv lists 1 frames" in r.output


def test_known_failures_are_one_line_errors(tmp_path):
    r = runner.invoke(app, ["classify", str(tmp_path / "nope"), "--labels", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error:") and "not a directory of embeddings" in r.output
    write_embed(tmp_path / "e", "v", np.ones((10, 3)))
    r = runner.invoke(app, ["classify", str(tmp_path / "e"), "--labels", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--smooth-window", "4"])
    assert r.exit_code == 2 and "odd" in r.output
