"""``selfee-fast doctor``: what a user runs first on a new machine or a new batch of recordings.

The machine (:mod:`selfee.doctor.machine`): Python, torch and its GPUs, the driver and CUDA runtime,
DALI (and whether NVDEC decodes a tiny generated clip), ONNX Runtime's providers that really load,
TensorRT (whether it builds an engine), PyAV's codecs. The videos (:mod:`selfee.doctor.videos`):
container, codec, pixel format, size, frame rate, keyframes, which decode path each takes and why,
and for those that cannot take the fast path the ``ffmpeg`` command that re-encodes them.

Every line is a :class:`Check`: ``ok``, ``warn`` or ``fail`` with what to do. ``fail`` means something
requested cannot work (the command exits non-zero).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


@dataclasses.dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""  # what to do (for warn and fail)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_doctor(videos: list[str | Path] = (), gpu: bool | None = None) -> dict:
    """The whole report: ``{"machine": [Check...], "videos": [video report...], "ok": bool}``.

    ``gpu``: whether the fast paths are the GPU's (default: a CUDA GPU is visible).
    """
    import torch

    from selfee.doctor.machine import machine_checks
    from selfee.doctor.videos import video_report

    gpu = torch.cuda.is_available() if gpu is None else gpu
    machine = machine_checks(gpu)
    reports = [video_report(v, gpu) for v in videos]
    worst = [c.status for c in machine] + [c.status for r in reports for c in r["checks"]]
    return {"machine": machine, "videos": reports, "gpu": gpu, "ok": "fail" not in worst}


def to_json(report: dict) -> str:
    def plain(x):
        if isinstance(x, Check):
            return x.as_dict()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return json.dumps(plain(report), indent=2)


MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def _lines(checks: list[Check], indent: str = "  ") -> list[str]:
    out = []
    for c in checks:
        out.append(f"{indent}[{MARK[c.status]}] {c.name}: {c.detail}")
        if c.fix and c.status != "ok":
            out.extend(f"{indent}       -> {line}" for line in c.fix.splitlines())
    return out


def render(report: dict) -> str:
    """The report as text: the machine's checks, then each video's facts and checks."""
    lines = ["Machine" + (" (GPU fast paths)" if report["gpu"] else " (no CUDA GPU: CPU paths)"),
             *_lines(report["machine"])]
    for r in report["videos"]:
        lines += ["", f"Video {r['path']}"]
        facts = r.get("facts") or {}
        if facts:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in facts.items()))
        lines += _lines(r["checks"])
        if r.get("reencode"):
            lines += ["  re-encode for the fast path:", f"    {r['reencode']}"]
    verdict = "everything requested can work" if report["ok"] else "something requested cannot work (FAIL above)"
    return "\n".join([*lines, "", f"doctor: {verdict}"])
