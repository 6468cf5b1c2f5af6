"""``selfee-fast demo``: the whole job on a small generated video (:func:`selfee.demo.run_demo`)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("selfee-demo"), "--out", "-o", help="Folder for the demo's video, run and outputs."),
    steps: int = typer.Option(None, help="Training steps (default: a budget that runs in a few minutes on 2 CPU cores)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, help="Seed of the generated video and of training."),
):
    """The whole job on a small generated video: train briefly, embed, check k-NN recovery of labels
    against an untrained encoder and raw pixels (OUT/demo.json, OUT/run/quality.png)."""
    from selfee.demo import run_demo

    run_demo(out, steps=steps, device=device, seed=seed)
