"""Arena correction and tracking commands: ``arena``, ``prepare`` and ``track``.

Each command parses its options and hands off to the library (:mod:`selfee.tracking.preview`,
:mod:`selfee.tracking.prepare`, :func:`selfee.tracking.track_videos`); heavy libraries are imported
inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

from selfee.cli.options import EXIT_PARTIAL, ConfigOpt, PresetOpt, SetOpt, load_config

CORNERS_HELP = (
    "Arena corners: a corner file (.json/.csv, one for all videos or keyed by video), a folder of "
    "<stem>.json/.csv, or the corners as text 'x1,y1 x2,y2 x3,y3 x4,y4'. Open field: clockwise from "
    "the upper left; plus maze: the two open-arm ends, then the two closed-arm ends."
)
ARENA_HELP = "Arena kind for corners that do not name one: open_field or plus_maze."
CornersOpt = typer.Option(None, "--corners", help=CORNERS_HELP)
KindOpt = typer.Option(None, "--arena", help=ARENA_HELP)
StartOpt = typer.Option(None, "--start", help="Skip this many seconds of each video (data.preprocess.start_s).")
DurationOpt = typer.Option(None, "--duration", help="Use this many seconds (data.preprocess.duration_s).")


def _config(config: Path | None, preset: str | None, sets: list[str], kind: str | None, start: float | None,
            duration: float | None):
    """The config of prepare and track: --arena checked, --start/--duration as the preprocessing window."""
    _check_kind(kind)
    return load_config(config, preset, sets, **{"data.preprocess.start_s": start, "data.preprocess.duration_s": duration})


def arena(
    video: Path = typer.Argument(..., help="The video to show."),
    out: Path = typer.Option(None, "--out", "-o", help="PNG to write: a frame with a pixel grid (and the corners)."),
    time_s: float = typer.Option(None, "--time", help="Seconds into the video (default: the middle)."),
    grid: int = typer.Option(None, "--grid", help="Grid spacing in pixels (default: about ten lines)."),
    corners: str = typer.Option(None, "--corners", help=CORNERS_HELP + " Drawn on the PNG, with the warped arena."),
    kind: str = typer.Option("open_field", "--arena", help=ARENA_HELP),
    size: int = typer.Option(500, "--size", help="Side of the warped square, pixels."),
    margin: float = typer.Option(None, "--margin", help="Margin fraction (default: 0.2 open field, 0.1 plus maze)."),
    pick: Path = typer.Option(None, "--pick", help="Open a window, click the four corners, write them to this JSON file."),
):
    """Help choose arena corners: save a frame with a coordinate grid, or click them where a display exists.

    With --out, writes the PNG (and, with --corners, the corners drawn on it beside the warped
    arena, to check them). With --pick FILE, shows the frame, takes four clicks in corner order
    and writes a corner file that --corners accepts.
    """
    if out is None and pick is None:
        raise typer.BadParameter("give --out PNG, --pick FILE, or both")
    _check_kind(kind)
    if pick is not None:
        from selfee.tracking.preview import pick_corners

        path = pick_corners(video, pick, kind, time_s)
        typer.echo(f"wrote {path}")
        corners = str(path) if corners is None else corners
    if out is not None:
        from selfee.tracking.preview import arena_preview

        res = arena_preview(video, out, time_s, grid, corners, kind, size, margin)
        typer.echo(f"wrote {res['png']} (frame {res['frame']}, {res['width']}x{res['height']})")


def prepare(
    videos: list[str] = typer.Argument(..., help="Video files, folders of videos, or glob patterns."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for the preprocessed videos (<stem>.mp4)."),
    write_video: bool = typer.Option(False, "--write-video", help="Encode the preprocessed frames for inspection."),
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
    corners: str = CornersOpt,
    kind: str = KindOpt,
    start: float = StartOpt,
    duration: float = DurationOpt,
):
    """Show what training and embedding will see: each video's frame window and preprocessed size.

    The preprocessing (time window, arena warp, ROI, resize, ...) comes from the config and
    --corners, exactly as train and embed apply it on the fly. With --write-video, also writes
    OUT/<stem>.mp4 of the preprocessed frames (H.264).
    """
    from selfee.tracking.prepare import prepare_videos

    cfg = _config(config, preset, sets, kind, start, duration)
    res = prepare_videos(videos, out, cfg, corners, write_video, kind)
    for r in res["videos"]:
        h, w = r["out_hw"]
        line = f"{r['video']}: frames {r['start']}-{r['stop'] - 1} ({r['frames']}), {w}x{h}"
        if r["arena"] != "none":
            line += f", {r['arena']}"
        if "path" in r:
            line += f" -> {r['path']}"
        typer.echo(line)
    if res["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


def track(
    videos: list[str] = typer.Argument(..., help="Video files, folders of videos, or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
    corners: str = CornersOpt,
    kind: str = KindOpt,
    start: float = StartOpt,
    duration: float = DurationOpt,
    threshold: float = typer.Option(25.0, help="Difference from the background that marks the animal, grey levels."),
    polarity: str = typer.Option("auto", help="auto, dark (animal darker than the floor), light, or any."),
    min_area: int = typer.Option(20, "--min-area", help="Smallest blob taken as the animal, pixels."),
    open_px: int = typer.Option(5, "--open", help="Remove parts thinner than this (the tail), pixels; 0: off."),
    background: str = typer.Option("median", help="Background from the sampled frames: median or mean."),
    background_frames: int = typer.Option(50, "--background-frames", help="Frames sampled for the background."),
    ellipse: bool = typer.Option(False, "--ellipse", help="Also write the blob's ellipse (major, minor, angle)."),
    inside_only: bool = typer.Option(
        False, "--inside-only", help="With an arena: look for the animal inside the corners only, not in the margin."
    ),
    speed_window: int = typer.Option(5, "--speed-window", help="Frames in the position filter used for speed."),
    speed_filter: str = typer.Option("mean", "--speed-filter", help="Position filter: mean, median or none."),
    centre_fraction: float = typer.Option(0.5, "--centre", help="Open field: centre zone size, fraction of the arena."),
    arm_width: float = typer.Option(0.1, "--arm-width", help="Plus maze: arm width / maze length (centre square)."),
    arena_length: float = typer.Option(None, "--arena-length", help="Real arena side (plus maze: end to end)."),
    unit: str = typer.Option("cm", "--unit", help="Unit of --arena-length, for the summary's column names."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write <stem>_track.png (trajectory and heat map)."),
):
    """Track one animal per video: background subtraction, largest blob, centroid.

    Writes OUT/<stem>_track.csv (frame, time_s, x, y, speed, zone, found, area; x, y, speed are
    empty where no animal was found), OUT/<stem>_track.png, OUT/summary.csv (distance, speed,
    time and entries per zone) and OUT/manifest.json. With an arena, positions are in pixels of
    the warped square arena; speed is in pixels per second (see --arena-length for real units).
    """
    from selfee.tracking import TrackOptions, track_videos

    opts = TrackOptions(
        threshold=threshold, polarity=polarity, min_area=min_area, open_px=open_px, background=background,
        background_frames=background_frames, ellipse=ellipse, inside_only=inside_only, speed_window=speed_window,
        speed_filter=speed_filter, centre_fraction=centre_fraction, arm_width=arm_width,
        arena_length=arena_length, unit=unit, plot=plot,
    )
    cfg = _config(config, preset, sets, kind, start, duration)
    manifest = track_videos(videos, out, cfg, opts, corners, kind)
    n_ok, n_bad = len(manifest["videos"]), len(manifest["failed"])
    typer.echo(f"tracked {n_ok} video(s) into {out}" + (f"; {n_bad} failed" if n_bad else ""))
    if n_bad:
        raise typer.Exit(EXIT_PARTIAL)


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in ("open_field", "plus_maze"):
        raise typer.BadParameter("must be open_field or plus_maze", param_hint="--arena")
