"""``selfee-fast embed`` (hands off to :func:`selfee.embed.embed_videos`) and ``selfee-fast convert``."""

from __future__ import annotations

from pathlib import Path

import typer

from selfee.cli.options import EXIT_PARTIAL, ConfigOpt, PresetOpt, SetOpt


def embed(
    videos: list[str] = typer.Argument(..., help="Video files, folders of videos, or glob patterns."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Checkpoint (selfee-fast or original) or exported model."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>.npy, <stem>.csv, manifest.json."),
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
    batch_size: int = typer.Option(None, "--batch-size", help="Frames per inference batch (embed.batch_size)."),
    device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    backend: str = typer.Option(None, help="auto (default: an export runs in its runtime; a checkpoint on the backend "
                                "measured fastest here among those accurate to fp32, cached), torch, torchscript, "
                                "onnx or tensorrt."),
    precision: str = typer.Option(None, help="auto, fp32, bf16, fp16 or int8: the precision a checkpoint runs in "
                                  "(with --backend auto: the candidates timed)."),
    dtype: str = typer.Option(None, help="float32 or float16 for the saved embeddings."),
    window: int = typer.Option(None, help="Also save the original's windowed average pooling over N frames "
                               "(OUT/<stem>.window<N>.npy)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos already embedded (default: skip them)."),
    corners: str = typer.Option(None, help="Arena corners: a JSON/CSV file, a folder of <stem>.json/.csv, or 'x,y x,y x,y x,y'."),
    arena: str = typer.Option(None, help="Arena kind for --corners: open_field or plus_maze."),
    shard: str = typer.Option(None, "--shard", help="Embed only share I of N of the sorted videos (I from 0; "
                              "SLURM: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); N processes share one --out."),
    shard_by: str = typer.Option("name", "--shard-by", help="How --shard splits: name (every N-th sorted path) "
                                 "or size (balances the bytes)."),
):
    """Embed every frame of videos with trained weights.

    For each video writes OUT/<stem>.npy (frames x dim), OUT/<stem>.csv (frame,time_s) and a
    manifest.json for the run. The data settings (live frames, frame interval, input size,
    preprocessing) come from the weights' config unless --config/--preset/--set change them.
    A rerun skips the videos already complete and redoes partial ones. Under torchrun the
    videos are shared among the GPUs. With --shard I/N, N independent processes (a SLURM array,
    several machines) each embed their share into the same OUT; the last to finish writes
    manifest.json (a rerun does too).
    """
    from functools import partial

    from selfee.config import SelfeeConfig
    from selfee.embed import embed_videos
    from selfee.embed.shards import parse_shard
    from selfee.export.open import open_embedder

    overrides = list(sets)
    if dtype:
        overrides.append(f"embed.dtype={dtype}")
    if window is not None:
        overrides.append(f"embed.window={window}")
    cfg = None
    if config is not None or preset is not None:
        cfg = SelfeeConfig.load(config, preset=preset, overrides=overrides)
        overrides = []
    manifest = embed_videos(videos, weights, out, cfg=cfg, overrides=overrides, batch_size=batch_size,
                            device=device, backend=backend, overwrite=overwrite, corners=corners, arena=arena,
                            open_embedder=partial(open_embedder, precision=precision), shard_of=parse_shard(shard), shard_by=shard_by)
    n_ok, n_bad = len(manifest["videos"]), len(manifest["failed"])
    n_skip = sum(1 for v in manifest["videos"] if v.get("skipped"))
    typer.echo(f"embedded {n_ok} video(s) into {out}" + (f" ({n_skip} already done)" if n_skip else "")
               + (f"; {n_bad} failed" if n_bad else "")
               + (f" (shard {shard}; all shards complete, manifest.json written)" if manifest.get("complete")
                  else f" (shard {shard}; waiting for the other shards)" if shard else ""))
    if n_bad:
        raise typer.Exit(EXIT_PARTIAL)


def convert(
    original: Path = typer.Argument(..., help="Original Selfee weights (.pkl state_dict of CLD_SimSiam)."),
    out: Path = typer.Argument(..., help="Output selfee-fast checkpoint (.pt)."),
):
    """Convert original Selfee weights into a selfee-fast checkpoint (strict: every tensor checked)."""
    from selfee.checkpoint import convert_file

    path = convert_file(original, out)
    typer.echo(f"wrote {path}")
