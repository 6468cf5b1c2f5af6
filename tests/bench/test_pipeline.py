"""The pipeline bench (bench/pipeline.py) where DALI is missing: the rows say so, the others are measured."""

import json
import sys


def test_pipeline_bench_reports_dali_unavailable_rows(tmp_path, monkeypatch, capsys):
    from selfee.bench import pipeline as bench

    # As if DALI were not installed: importing the DALI modules fails
    for name in ("selfee.pipelines.backend", "selfee.pipelines.train", "selfee.pipelines.embed", "nvidia.dali"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "bench.json"
    bench.main(["--device", "cpu", "--size", "32", "32", "--video-size", "48", "64", "--frames", "40",
                "--batch-size", "16", "--batches", "1", "--repeats", "1", "--skip-original", "--embed",
                "--out", str(out)])
    rows = {r["loader"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["reference (PyAV + torch)"]["samples_per_s"] > 0
    for name in ("DALI, H.264", "DALI, VP9 (DALI's CPU decoder)", "DALI embedding decode (frames/s)"):
        assert rows[name]["samples_per_s"] is None and rows[name]["note"].startswith("DALI unavailable (")
    assert "DALI unavailable" in capsys.readouterr().out
