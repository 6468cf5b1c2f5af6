"""The CLI tests' runner."""

from __future__ import annotations

from typer.testing import CliRunner

from selfee.cli import app

_runner = CliRunner()


def run(*args, env=None):
    """``selfee-fast ARGS`` in this process (paths may be Path objects); a click Result."""
    return _runner.invoke(app, [str(a) for a in args], env=env)
