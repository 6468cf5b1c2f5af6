"""The app: the command table, one-line errors and exit codes, SELFEE_DEBUG, ``python -m selfee``."""

import os
import subprocess
import sys

import pytest

from selfee.cli.app import COMMANDS, app
from selfee.errors import SelfeeError

from .conftest import run


def test_help_lists_every_command_in_the_tables_order():
    r = run("--help")
    assert r.exit_code == 0
    listed = [line.split()[1] for line in r.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    assert [c for c in listed if c in COMMANDS] == list(COMMANDS)
    assert [c.name for c in app.registered_commands] == list(COMMANDS)


def test_bad_config_is_one_line():
    r = run("config", "-s", "optim.batch_size=0")
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: config field 'optim.batch_size'") and len(r.output.strip().splitlines()) == 1


def test_unexpected_errors_are_one_line_with_exit_1_and_ctrl_c_exits_130(monkeypatch, tmp_path):
    def boom(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("selfee.checkpoint.convert_file", boom)
    r = run("convert", tmp_path / "a.pkl", tmp_path / "b.pt")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == ["error: RuntimeError: boom (set SELFEE_DEBUG=1 for the traceback)"]

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("selfee.checkpoint.convert_file", interrupt)
    r = run("convert", tmp_path / "a.pkl", tmp_path / "b.pt")
    assert r.exit_code == 130 and r.output.strip() == "interrupted"


@pytest.mark.parametrize("error", [SelfeeError("checkpoint not found"), RuntimeError("boom")])
def test_debug_variable_lets_the_exception_through(monkeypatch, tmp_path, error):
    def fail(*args):
        raise error

    monkeypatch.setattr("selfee.checkpoint.convert_file", fail)
    args = ("convert", tmp_path / "a.pkl", tmp_path / "b.pt")
    handled = run(*args, env={"SELFEE_DEBUG": "0"})
    assert isinstance(handled.exception, SystemExit) and handled.exit_code in (1, 2)
    assert handled.output.startswith("error: ")
    debug = run(*args, env={"SELFEE_DEBUG": "1"})
    assert debug.exception is error and debug.exit_code == 1 and "error: " not in debug.output


def _selfee(*args, debug: str):
    env = {**os.environ, "SELFEE_DEBUG": debug}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_python_m_selfee_shows_the_traceback_only_with_selfee_debug(tmp_path):
    args = ("selfee", "convert", tmp_path / "missing.pkl", tmp_path / "o.pt")
    plain = _selfee(*args, debug="0")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.pkl'}: checkpoint not found"]
    debug = _selfee(*args, debug="1")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].endswith("checkpoint not found")


def test_python_m_selfee_cli_is_the_same_program():
    """What torchrun runs (``torchrun ... -m selfee.cli embed ...``)."""
    r = _selfee("selfee.cli", "--help", debug="0")
    assert r.returncode == 0 and "Usage:" in r.stdout and "track" in r.stdout


def test_the_strict_option_turns_strict_mode_on_for_the_command(monkeypatch):
    from selfee.fallback import strict

    monkeypatch.setenv("SELFEE_STRICT", "")  # restored (unset) after the test, whatever the option wrote
    assert not strict()
    r = run("--strict", "config")
    assert r.exit_code == 0, r.output
    assert strict()
