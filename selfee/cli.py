"""The ``selfee-fast`` command line. Commands parse options and hand off to one library function."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import typer

from selfee.cli_utils import EXIT_PARTIAL, handle_errors, setup_logging

app = typer.Typer(
    name="selfee-fast",
    help="GPU-fast Selfee: self-supervised features of animal behaviour, straight from raw videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger("selfee")


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
):
    setup_logging(verbose, quiet)


# ---------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML or YAML config file.", exists=False)
PresetOpt = typer.Option(None, "--preset", "-p", help="Named preset: fly, mouse (the paper's two settings) or tiny.")
SetOpt = typer.Option(
    [], "--set", "-s", help="Override any config field, e.g. --set optim.batch_size=128 (repeatable)."
)


def load_config(config: Path | None, preset: str | None, sets: list[str], **shortcuts):
    """Defaults <- preset <- file <- --set <- the command's named shortcut options."""
    from selfee.config import SelfeeConfig

    extra = [f"{k}={_yaml(v)}" for k, v in shortcuts.items() if v is not None]
    return SelfeeConfig.load(config, preset=preset, overrides=[*sets, *extra])


def _yaml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


@app.command()
@handle_errors
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
):
    """Train Selfee (SimSiam + CLD on live frames) on videos, no frame extraction needed.

    Writes OUT/step*.pt and OUT/last.pt checkpoints, OUT/metrics.csv (losses, collapse levels,
    learning rate, throughput, held-out loss) and OUT/config.yaml. Ctrl-C writes a checkpoint;
    --resume continues exactly where it stopped.
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
    summary = run_training(cfg, videos or [], out, resume=resume, corners=corners, arena=arena)
    if summary:
        typer.echo(
            f"done: step {summary['step']}, loss {summary.get('loss', float('nan')):.4f}; checkpoints in {out}"
        )


@app.command()
@handle_errors
def embed(
    videos: list[str] = typer.Argument(..., help="Video files, folders of videos, or glob patterns."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Checkpoint (selfee-fast or original) or exported model."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>.npy, <stem>.csv, manifest.json."),
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
    batch_size: int = typer.Option(None, "--batch-size", help="Frames per inference batch (embed.batch_size)."),
    device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    backend: str = typer.Option(None, help="torch, torchscript, onnx or tensorrt (default: from the weights file)."),
    dtype: str = typer.Option(None, help="float32 or float16 for the saved embeddings."),
    window: int = typer.Option(None, help="Also save the original's windowed average pooling over N frames "
                               "(OUT/<stem>.window<N>.npy)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos already embedded (default: skip them)."),
    corners: str = typer.Option(None, help="Arena corners: a JSON/CSV file, a folder of <stem>.json/.csv, or 'x,y x,y x,y x,y'."),
    arena: str = typer.Option(None, help="Arena kind for --corners: open_field or plus_maze."),
):
    """Embed every frame of videos with trained weights.

    For each video writes OUT/<stem>.npy (frames x dim), OUT/<stem>.csv (frame,time_s) and a
    manifest.json for the run. The data settings (live frames, frame interval, input size,
    preprocessing) come from the weights' config unless --config/--preset/--set change them.
    A rerun skips the videos already complete and redoes partial ones. Under torchrun the
    videos are shared among the GPUs.
    """
    from selfee.config import SelfeeConfig
    from selfee.embed import embed_videos
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
                            open_embedder=open_embedder)
    n_ok, n_bad = len(manifest["videos"]), len(manifest["failed"])
    n_skip = sum(1 for v in manifest["videos"] if v.get("skipped"))
    typer.echo(f"embedded {n_ok} video(s) into {out}" + (f" ({n_skip} already done)" if n_skip else "")
               + (f"; {n_bad} failed" if n_bad else ""))
    if n_bad:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
@handle_errors
def convert(
    original: Path = typer.Argument(..., help="Original Selfee weights (.pkl state_dict of CLD_SimSiam)."),
    out: Path = typer.Argument(..., help="Output selfee-fast checkpoint (.pt)."),
):
    """Convert original Selfee weights into a selfee-fast checkpoint (strict: every tensor checked)."""
    from selfee.checkpoint import convert_file

    path = convert_file(original, out)
    typer.echo(f"wrote {path}")


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("selfee-demo"), "--out", "-o", help="Folder for the demo's video, run and outputs."),
    steps: int = typer.Option(None, help="Training steps (default: a budget that runs in a few minutes on 2 CPU cores)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
):
    """The whole job on a small generated video: train briefly, embed, check k-NN recovery of labels."""
    from selfee.demo import run_demo

    run_demo(out, steps=steps, device=device)


@app.command("config")
@handle_errors
def show_config(
    config: Path = ConfigOpt,
    preset: str = PresetOpt,
    sets: list[str] = SetOpt,
):
    """Print the resolved configuration (defaults <- preset <- file <- --set) as YAML."""
    cfg = load_config(config, preset, sets)
    typer.echo(cfg.to_yaml().rstrip())
    typer.echo(f"# derived: optim.lr = {cfg.optim.lr:g}, optim.warmup_steps = {cfg.optim.warmup_steps}")


def _register_groups():
    from selfee.commands import MODULES

    for name in MODULES:
        importlib.import_module(f"selfee.commands.{name}").register(app)


_register_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
