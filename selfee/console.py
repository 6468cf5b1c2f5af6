"""Terminal output, for the library and the CLI alike: one-line log messages on stderr, progress bars.

Log records of the ``selfee`` logger print as one line each (info plain, others prefixed
``warning:``/``error:``); ``SELFEE_DEBUG=1`` adds tracebacks, here and in the CLI's error handling
(:mod:`selfee.cli.app`). Long loops (training, embedding, tracking, analyses) show a rich progress
bar on a terminal.
"""

from __future__ import annotations

import logging
import os
import sys


def debug_enabled() -> bool:
    """``SELFEE_DEBUG`` is set (and not 0/false/no): show tracebacks."""
    return os.environ.get("SELFEE_DEBUG", "").strip() not in ("", "0", "false", "no")


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
