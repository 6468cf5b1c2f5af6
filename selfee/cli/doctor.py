"""``selfee-fast doctor``: check the machine and videos before a run (:mod:`selfee.doctor`)."""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_CANNOT_WORK = 1  # something requested cannot work (a FAIL line)


def doctor(
    videos: list[Path] = typer.Argument(None, help="Videos (or folders of videos) to check.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Check this machine (GPU, driver, DALI/NVDEC, ONNX Runtime, TensorRT, PyAV) and videos: which decode path
    each takes and why, and the ffmpeg command that re-encodes one that cannot take the fast path."""
    from selfee.doctor import render, run_doctor, to_json
    from selfee.video import expand_inputs

    report = run_doctor(expand_inputs(videos) if videos else [])  # missing names stay, reported as FAIL
    typer.echo(to_json(report) if as_json else render(report))
    if not report["ok"]:
        raise typer.Exit(EXIT_CANNOT_WORK)
