"""``selfee-fast train`` (hands off to :func:`selfee.train.run_training`) and ``selfee-fast config``."""

from __future__ import annotations

from pathlib import Path

import typer

from selfee.cli.options import ConfigOpt, PresetOpt, SetOpt, load_config


def train(
    videos: list[str] = typer.Argument(None, help="Video files, folders of videos, or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, metrics.csv, config.yaml."),
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
    steps: int = typer.Option(None, help="Training steps (optim.steps; paper: 20000)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Global batch size (optim.batch_size; paper: 256)."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate per 256 samples (optim.base_lr; paper: 0.05)."),
    init: str = typer.Option(None, help="Initial weights: none, imagenet (paper) or a checkpoint (either format)."),
    amp: str = typer.Option(None, help="auto (bf16 on GPU, off on CPU), bf16, fp16 or off."),
    device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    pipeline: str = typer.Option(None, help="Data pipeline: auto (DALI on a GPU, else torch), dali, torch or synthetic."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    corners: str = typer.Option(None, help="Arena corners: a JSON/CSV file, a folder of <stem>.json/.csv, or 'x,y x,y x,y x,y'."),
    arena: str = typer.Option(None, help="Arena kind for --corners: open_field or plus_maze."),
    eval_videos: list[str] = typer.Option(None, "--eval-videos", help="Labelled videos for the k-NN quality monitor."),
    eval_labels: Path = typer.Option(None, "--eval-labels", help="Their labels (a folder, as classify reads them)."),
):
    """Train Selfee (SimSiam + CLD on live frames) on videos, no frame extraction needed.

    Writes OUT/step*.pt and OUT/last.pt checkpoints, OUT/metrics.csv (losses, collapse levels,
    learning rate, throughput, held-out loss) and OUT/config.yaml. Ctrl-C writes a checkpoint;
    --resume continues exactly where it stopped. With --eval-videos and --eval-labels, the k-NN
    macro F1 and accuracy of the current weights on those videos are logged every train.knn_every
    steps and at each checkpoint, beside an untrained encoder and raw pixels; OUT/quality.png plots them.
    """
    from selfee.errors import SelfeeError
    from selfee.train import run_training

    cfg = load_config(
        config,
        preset,
        sets,
        **{
            "optim.steps": steps,
            "optim.batch_size": batch_size,
            "optim.base_lr": lr,
            "model.init": init,
            "train.amp": amp,
            "train.device": device,
            "train.pipeline": pipeline,
            "train.compile": compile,
        },
    )
    if not videos and cfg.train.pipeline != "synthetic":
        raise SelfeeError("train: no VIDEOS given (pass video files, folders or glob patterns)")
    if bool(eval_videos) != (eval_labels is not None):
        raise SelfeeError("train: --eval-videos and --eval-labels go together")
    summary = run_training(cfg, videos or [], out, resume=resume, corners=corners, arena=arena,
                           eval_videos=eval_videos or None, eval_labels=eval_labels)
    if summary:
        typer.echo(
            f"done: step {summary['step']}, loss {summary.get('loss', float('nan')):.4f}; checkpoints in {out}"
        )


def show_config(
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
):
    """Print the resolved configuration (defaults <- preset <- file <- --set) as YAML."""
    cfg = load_config(config, preset, sets)
    typer.echo(cfg.to_yaml().rstrip())
    typer.echo(f"# derived: optim.lr = {cfg.optim.lr:g}, optim.warmup_steps = {cfg.optim.warmup_steps}")
