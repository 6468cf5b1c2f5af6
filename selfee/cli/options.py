"""What the commands share: the config options and how they resolve, and the exit codes."""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_USER_ERROR = 2  # a known failure (bad input, bad option, missing dependency): one line on stderr
EXIT_PARTIAL = 3  # some inputs failed, the others were processed
EXIT_INTERRUPTED = 130

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML or YAML config file.", exists=False)
PresetOpt = typer.Option(None, "--preset", "-p", help="Named preset: fly, mouse (the paper's two settings), fly-cpu, mouse-cpu (the same in minutes on 2 CPU cores) or tiny.")
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
