"""``selfee-fast doctor``: per-video facts and decode paths on generated videos of known formats, the
re-encode command, the decode cost of long GOPs (hand-computed), and the machine checks, with the GPU
probes faked where this CPU machine cannot run them."""

from __future__ import annotations

import json
import shlex
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.doctor import Check, render, run_doctor, to_json
from selfee.doctor import machine as machine_mod
from selfee.doctor.videos import _fps_text, decoded_per_sample, reencode_command, video_report


def encode(path, frames, **kw):
    try:
        return write_video(path, frames, **kw)
    except Exception as exc:  # encoder or pixel format missing from this FFmpeg build
        pytest.skip(f"cannot encode {kw}: {exc}")


def by_name(report) -> dict[str, Check]:
    return {c.name: c for c in report["checks"]}


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------


def test_a_fast_path_video_needs_nothing(tmp_path):
    p = encode(tmp_path / "ok.mp4", numbered_frames(50), g=25)
    r = video_report(p, gpu=True)
    assert r["facts"] == {"container": "mov", "codec": "h264", "profile": r["facts"]["profile"], "pix_fmt": "yuv420p",
                          "bit_depth": 8, "size": "64x48", "fps": 25.0, "frame_rate": "constant",
                          "keyframe_interval": "median 25, max 25 frames (1.0 s)", "frames": 50, "duration_s": 2.0}
    checks = by_name(r)
    assert checks["nvdec"].status == checks["decode"].status == checks["keyframes"].status == "ok"
    assert r["decode"] == {"lane": "nvdec", "why": "h264 yuv420p on NVDEC"} and r["reencode"] is None
    on_cpu = video_report(p, gpu=False)
    assert on_cpu["decode"]["lane"] == "pyav" and by_name(on_cpu)["decode"].status == "ok"


def test_h264_444_is_explained_and_gets_the_reencode_command(tmp_path, monkeypatch):
    p = encode(tmp_path / "full chroma.mp4", numbered_frames(30), pix_fmt="yuv444p")
    r = video_report(p, gpu=True)
    nv = by_name(r)["nvdec"]
    assert nv.status == "warn" and r["facts"]["pix_fmt"] == "yuv444p"
    assert "H.264 4:4:4" in nv.detail and "cannot go to NVDEC" in nv.detail and "8-bit 4:2:0" in nv.detail
    assert r["decode"]["lane"] == "pyav" and by_name(r)["decode"].status == "warn"
    cmd = r["reencode"]
    mkdir, ffmpeg = cmd.split(" && ")
    args = shlex.split(ffmpeg)
    assert args[:3] == ["ffmpeg", "-i", str(p)]  # the space in the name is quoted
    opt = dict(zip(args[3:-1:2], args[4:-1:2]))
    assert opt["-c:v"] == "libx264" and opt["-pix_fmt"] == "yuv420p" and opt["-r"] == "25" and opt["-g"] == "25"
    assert args[-1] == str(tmp_path / "reencoded" / "full chroma.mp4")  # the stem is kept (labels match by stem)
    assert shlex.split(mkdir) == ["mkdir", "-p", str(tmp_path / "reencoded")]
    monkeypatch.setenv("SELFEE_STRICT", "1")  # strict mode would stop on it: a failure on a GPU machine
    assert by_name(video_report(p, gpu=True))["nvdec"].status == "fail"
    assert by_name(video_report(p, gpu=False))["nvdec"].status == "warn"


def test_10_bit_h264(tmp_path):
    p = encode(tmp_path / "deep.mp4", numbered_frames(20), pix_fmt="yuv420p10le")
    r = video_report(p, gpu=True)
    assert r["facts"]["bit_depth"] == 10
    assert "10-bit H.264" in by_name(r)["nvdec"].detail and r["reencode"] is not None


def test_variable_frame_rate_goes_to_timestamps(tmp_path):
    from selfee.video import VideoWriter

    p = tmp_path / "vfr.mp4"
    t = 0
    with VideoWriter(p, 25, time_base=Fraction(1, 1000)) as out:
        for i, f in enumerate(numbered_frames(20)):
            out.write(f, pts=t)
            t += 40 if i % 2 else 90
    r = video_report(p, gpu=True)
    checks = by_name(r)
    assert r["facts"]["frame_rate"] == "variable" and checks["frame rate"].status == "warn"
    assert "timestamps" in checks["frame rate"].detail and "variable frame rate" in checks["nvdec"].detail
    assert " -r " in r["reencode"]


def test_a_long_gop_says_how_many_frames_training_decodes(tmp_path):
    p = encode(tmp_path / "sparse.mp4", numbered_frames(60), fps=2, g=60)  # one keyframe in 30 s
    r = video_report(p, gpu=True)
    kf = by_name(r)["keyframes"]
    assert kf.status == "warn" and "frames per sample" in kf.detail
    assert r["facts"]["keyframe_interval"] == "median 60, max 60 frames (30.0 s)"
    assert by_name(r)["nvdec"].status == "ok" and "-g 2 " in r["reencode"]


def test_decoded_frames_per_sample_hand_computed():
    short = SimpleNamespace(keyframes=np.arange(0, 1000, 25), frames=1000)
    assert decoded_per_sample(short, 0.5) == pytest.approx(2.0)  # every frame decoded once, half used
    # one GOP of 3000 frames split in 3 parts (MAX_CHUNK 1024), each decoded from the keyframe:
    # 1000 + 2000 + 3000 = 6000 decoded for 1500 samples
    long = SimpleNamespace(keyframes=np.array([0]), frames=3000)
    assert decoded_per_sample(long, 0.5, max_chunk=1024) == pytest.approx(4.0)


@pytest.mark.parametrize("fps, text", [(25.0, "25"), (1000000 / 33333, "30"), (30000 / 1001, "30000/1001"),
                                       (12.5, "12.500")])
def test_frame_rates_for_ffmpeg(fps, text):
    assert _fps_text(fps) == text


def test_sizes_nvdec_cannot_take_are_scaled_in_the_command():
    odd = SimpleNamespace(path=Path("/v/a.avi"), fps=25.0, width=641, height=480)
    assert "-vf 'scale=trunc(iw/2)*2:trunc(ih/2)*2'" in reencode_command(odd)
    huge = SimpleNamespace(path=Path("/v/b.mp4"), fps=25.0, width=5120, height=2880)
    assert "scale=4096:4096:force_original_aspect_ratio=decrease:force_divisible_by=2" in reencode_command(huge)


def test_an_unreadable_video_fails(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    r = video_report(bad, gpu=False)
    assert [c.status for c in r["checks"]] == ["fail"] and r["reencode"] is None
    assert not run_doctor([bad], gpu=False)["ok"]


def test_real_444_video_from_the_issue(shared_data):
    from conftest import real_video

    r = video_report(real_video(shared_data, "m3v1mp4.mp4"), gpu=True)
    assert r["facts"]["profile"] == "High 4:4:4 Predictive" and r["facts"]["pix_fmt"] == "yuv444p"
    assert "H.264 4:4:4" in by_name(r)["nvdec"].detail
    assert "-pix_fmt yuv420p" in r["reencode"] and "-r 30 -g 30" in r["reencode"]


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def test_the_machine_report_on_this_cpu_machine_works():
    report = run_doctor([], gpu=False)
    names = [c.name for c in report["machine"]]
    assert names[:2] == ["python", "torch"] and {"driver", "dali", "onnxruntime", "tensorrt", "pyav"} <= set(names)
    assert all(c.status in ("ok", "warn", "fail") for c in report["machine"])
    assert report["ok"] == all(c.status != "fail" for c in report["machine"])
    text = render(report)
    assert "Machine (no CUDA GPU: CPU paths)" in text and text.splitlines()[-1].startswith("doctor: ")
    assert json.loads(to_json(report))["machine"][0]["name"] == "python"


def test_asking_for_the_gpu_without_one_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (t,) = machine_mod.check_torch(gpu=True)
    if torch.version.cuda:
        assert t.status == "fail" and "no CUDA GPU visible" in t.detail


def test_nvdec_that_does_not_decode_fails(monkeypatch):
    pytest.importorskip("nvidia.dali")
    import selfee.pipelines.probe as probe

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(probe, "nvdec_decodes", lambda index: (False, "CUVID: no decoder (test)"))
    checks = {c.name: c for c in machine_mod.check_dali(gpu=True)}
    assert checks["nvdec"].status == "fail" and checks["nvdec"].detail == "CUVID: no decoder (test)"
    assert "PyAV" in checks["nvdec"].fix


def test_nvdec_probe_reports_why_it_cannot_run_here():
    pytest.importorskip("nvidia.dali")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the gpu tests run the probe")
    from selfee.pipelines.probe import nvdec_decodes

    ok, why = nvdec_decodes(0)
    assert ok is False and why


def test_an_ort_cuda_provider_that_is_listed_but_does_not_load_fails(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    c = machine_mod.check_onnxruntime(gpu=True)  # the real probe: this CPU onnxruntime builds a CPU session
    assert c.status == "fail" and "CUDA provider did not load" in c.detail
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    c = machine_mod.check_onnxruntime(gpu=True)
    assert c.status == "warn" and "onnxruntime-gpu" in c.fix
    assert machine_mod.check_onnxruntime(gpu=False).status == "ok"


def test_an_old_dali_fails_the_dali_check(monkeypatch):
    pytest.importorskip("nvidia.dali")
    import selfee.pipelines.backend as backend

    monkeypatch.setattr(backend, "dali_error", lambda: "DALI 1.40 has no video decoder taking start_frame (test)")
    (c,) = machine_mod.check_dali(gpu=False)
    assert c.status == "fail" and "start_frame" in c.detail and "pip install -U" in c.fix


def test_driver_older_than_the_runtime(monkeypatch):
    monkeypatch.setattr(machine_mod, "driver_cuda_version", lambda: "12.2")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    c = machine_mod.check_driver(gpu=True)
    assert c.status == "fail" and "older than the runtime" in c.detail
    monkeypatch.setattr(machine_mod, "driver_cuda_version", lambda: "13.1")
    assert machine_mod.check_driver(gpu=True).status == "ok"
    monkeypatch.setattr(machine_mod, "driver_cuda_version", lambda: None)
    assert machine_mod.check_driver(gpu=True).status == "fail"
    assert machine_mod.check_driver(gpu=False).status == "ok"
