"""``selfee-fast doctor``: the report, --json, and the exit status (non-zero when something cannot work)."""

import json

from conftest import numbered_frames, real_video, write_video

from .conftest import run


def test_doctor_on_the_444_video_of_the_issue(shared_data):
    video = real_video(shared_data, "m3v1mp4.mp4")
    r = run("doctor", video)
    assert r.exit_code == 0, r.output  # PyAV decodes it: slower, but it works
    assert "H.264 4:4:4 (High 4:4:4 Predictive) cannot go to NVDEC" in r.output
    assert f"ffmpeg -i {video} -map 0:v:0 -c:v libx264" in r.output and "-pix_fmt yuv420p -r 30 -g 30" in r.output


def test_doctor_json_and_exit_status(tmp_path):
    good = write_video(tmp_path / "good.mp4", numbered_frames(30))
    r = run("doctor", "--json", good)
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] is True and report["videos"][0]["facts"]["codec"] == "h264"
    assert {c["name"] for c in report["machine"]} >= {"python", "torch", "pyav"}
    missing = run("doctor", tmp_path / "missing.mp4")
    assert missing.exit_code == 1 and "[FAIL] read" in missing.output and "cannot work" in missing.output


def test_doctor_without_videos_checks_the_machine():
    r = run("doctor")
    assert r.exit_code in (0, 1) and r.output.startswith("Machine") and "python:" in r.output
