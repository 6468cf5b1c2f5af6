"""The bench runner: rows for each measure, JSON with the environment, backends that cannot run reported."""

import json

import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee._deps import available
from selfee.bench.embed import run_backends
from selfee.cli import app

from .conftest import CFG, decoded_count


def test_bench_command_writes_a_table_and_json(tmp_path):
    video = write_video(tmp_path / "v.mp4", numbered_frames(40), g=8)
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--part", "decode", "--device", "cpu",
                                 "--video", str(video), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "PyAV (CPU, RGB)" in r.output and "frames/s" in r.output
    saved = json.loads(out.read_text())
    env = saved["environment"]
    assert {"cpu", "torch", "dali", "onnxruntime", "tensorrt", "cuda_available"} <= set(env)
    rows = {(row["measure"], row["what"]): row for row in saved["results"]}
    assert rows[("decode", "PyAV (CPU, RGB)")]["value"] > 0
    assert rows[("decode", "PyAV (CPU, RGB)")]["setting"]["profile"] == "quick"


def test_embedding_rows_model_only_and_end_to_end(tiny, tmp_path):
    video = write_video(tmp_path / "v.mp4", numbered_frames(30), g=8)
    rows = run_backends(CFG, tiny[0], video, ["torch", "tensorrt"], "cpu", batch=8, iters=1, repeats=1)
    torch_row, trt_row = rows
    assert torch_row["model_fps"] > 0 and torch_row["end_to_end_fps"] > 0
    assert torch_row["frames"] == decoded_count(video) and torch_row["pipeline"] == "pyav"  # embed.pipeline=torch
    if not (available("tensorrt") and torch.cuda.is_available()):
        assert "error" in trt_row and ("tensorrt" in trt_row["error"].lower() or "GPU" in trt_row["error"])


def test_environment_reads_versions_from_package_metadata_without_importing(monkeypatch):
    import importlib.metadata
    import sys

    from selfee.bench import timing

    for module in ("tensorrt", "onnxruntime"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    env = timing.environment()
    assert "onnxruntime" not in sys.modules and "tensorrt" not in sys.modules
    assert env["onnxruntime"] == importlib.metadata.version("onnxruntime") and env["torch"] == torch.__version__
    assert "tensorrt" in env and "dali" in env  # None where not installed (tests/core/test_runtime.py: which ones)
