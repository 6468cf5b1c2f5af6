"""The ``selfee-fast`` app: the command table, global options, logging, one-line errors, ``main``.

Commands live one group a module (:mod:`~selfee.cli.train`, :mod:`~selfee.cli.embed`, ...); each
parses its options and hands off to one library function, importing heavy parts inside its body so
that ``selfee-fast --help`` stays fast and works without the extras. Every command runs under
:func:`handle_errors`: a known failure (:class:`selfee.errors.SelfeeError`) prints one line and
exits 2, as a bad option value does (typer's usage message); anything else prints one line too and
exits 1; ``SELFEE_DEBUG=1`` lets the exception propagate instead, traceback and all. Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer

from selfee.cli import analysis, demo, doctor, embed, export, tracking, train
from selfee.cli.options import EXIT_INTERRUPTED, EXIT_USER_ERROR
from selfee.console import debug_enabled, setup_logging
from selfee.errors import SelfeeError

app = typer.Typer(
    name="selfee-fast",
    help="GPU-fast Selfee: self-supervised features of animal behaviour, straight from raw videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Every command, in the order `selfee-fast --help` lists them.
COMMANDS: dict[str, Callable] = {
    "train": train.train,
    "embed": embed.embed,
    "convert": embed.convert,
    "demo": demo.demo,
    "config": train.show_config,
    "classify": analysis.classify_cmd,
    "anomaly": analysis.anomaly_cmd,
    "map": analysis.map_cmd,
    "motifs": analysis.motifs_cmd,
    "compare": analysis.compare_cmd,
    "pose-states": analysis.pose_states_cmd,
    "pose-crop": analysis.pose_crop_cmd,
    "evaluate": analysis.evaluate_cmd,
    "arena": tracking.arena,
    "prepare": tracking.prepare,
    "track": tracking.track,
    "export": export.export,
    "bench": export.bench,
    "doctor": doctor.doctor,
}


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    strict: bool = typer.Option(False, "--strict", help="Make every fallback from a requested fast path (NVDEC, DALI, "
                                "TensorRT, ORT-CUDA, GPU) an error; also SELFEE_STRICT=1."),
):
    setup_logging(verbose, quiet)
    if strict:
        from selfee.fallback import set_strict

        set_strict(True)


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn known failures into one-line messages and exit codes (the exception itself with SELFEE_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):  # exits, and usage errors typer reports itself
            raise
        except SelfeeError as exc:
            if debug_enabled():
                raise
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # unexpected: still one line unless debugging
            if debug_enabled():
                raise
            raise fail(
                f"{type(exc).__name__}: {exc} (set SELFEE_DEBUG=1 for the traceback)", code=1
            ) from None

    return wrapper


for _name, _command in COMMANDS.items():
    app.command(_name)(handle_errors(_command))


def main() -> None:
    app()
