"""Shared CLI plumbing: one-line errors, logging, progress bars.

Commands only parse their options and hand off to one library function. Known failures
(:class:`selfee.errors.SelfeeError`) print one line and exit with code 2; anything else prints
one line too, unless ``SELFEE_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

import typer

from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3  # some inputs failed, the others were processed
EXIT_INTERRUPTED = 130


def debug_enabled() -> bool:
    return os.environ.get("SELFEE_DEBUG", "").strip() not in ("", "0", "false", "no")


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn known failures into one-line messages and exit codes (tracebacks with SELFEE_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
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


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and debug_enabled():
            msg += "\n" + self.formatException(record.exc_info)
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now, so rich progress bars can redirect it cleanly."""

    _selfee = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """One line per message on stderr: info plain, others prefixed ``warning:``/``error:``."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("selfee")
    root.setLevel(level)
    if not any(getattr(h, "_selfee", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
    root.propagate = False


def progress(transient: bool = False):
    """A rich Progress with a bar, counts, rate and time left (disabled when not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
        disable=not sys.stderr.isatty() and not os.environ.get("SELFEE_PROGRESS"),
    )
