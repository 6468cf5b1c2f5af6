"""bench/gpu_check.sh: one line and exit 0 without a GPU; with one (faked here by a PYTHON wrapper that says
a GPU is present and stands in for pytest and the benchmarks), every step recorded and one summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def run(out: Path, python: str, tmp_path: Path):
    env = {**os.environ, "PYTHON": python, "SELFEE_REPO": str(REPO)}  # run from elsewhere: the repo is found
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    r = run(tmp_path / "out", sys.executable, tmp_path)
    if "no CUDA GPU" not in r.stdout:
        pytest.skip("a GPU is here: the script runs for real")
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stderr == ""
    assert not (tmp_path / "out").exists()


FAKE = r'''#!/usr/bin/env bash
# a GPU machine in outline: torch "sees" a GPU, pytest and the benchmarks write canned results
if [ "$1" = "-c" ]; then exit 0; fi
if [ "$1" = "-m" ]; then
  case "$2" in
    pytest) echo "3 passed"; exit 0 ;;
    selfee.bench.train_step) out=${@: -1}; echo '{"results": [{"amp": "bf16", "compile": false, "samples_per_s": 2345.6}]}' > "$out"; exit 0 ;;
    selfee.bench.pipeline) echo "NVDEC broke (fake)"; exit 1 ;;
    selfee.bench.embed) out=${@: -1}; echo '{"results": [{"backend": "torch", "model_fps": 12000, "end_to_end_fps": 10500.4}, {"backend": "tensorrt", "model_fps": null, "error": "TensorRT is not installed"}]}' > "$out"; exit 0 ;;
  esac
fi
exec PYTHON "$@"
'''


def test_every_step_is_recorded_and_summarised(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "out"
    r = run(out, str(fake), tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr  # the pipeline step failed
    steps = (out / "steps.txt").read_text().splitlines()
    assert [s.split()[0] for s in steps] == ["doctor", "gpu_tests", "train_step", "pipeline", "embed"]
    assert [s.split()[1] for s in steps] == ["rc=0", "rc=0", "rc=0", "rc=1", "rc=0"]
    report = json.loads((out / "doctor.json").read_text())  # the real doctor ran
    assert {c["name"] for c in report["machine"]} >= {"python", "torch", "pyav"}
    summary = (out / "summary.md").read_text()
    assert "| train_step | bf16 False | samples_per_s | 2,346 |" in summary
    assert "| embed | torch | end_to_end_fps | 10,500 |" in summary
    assert "| embed | tensorrt | model_fps | - |" in summary and "TensorRT is not installed" in summary
    assert "| pipeline | - | - | no result (see pipeline.log) |" in summary
    assert "NVDEC broke (fake)" in (out / "pipeline.log").read_text()
