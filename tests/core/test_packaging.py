"""The wheel holds every package on disk (an editable install would hide a missing one)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_every_package_folder_is_listed_in_pyproject():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    dirs = tool["package-dir"]  # "selfee.pipelines" -> "pipelines"
    on_disk = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in rel:
                on_disk.add(".".join((name, *rel)))
    assert on_disk - listed == set(), "packages missing from [tool.setuptools] packages"
    assert listed - on_disk == set(), "listed packages that do not exist"


def test_the_console_script_and_python_m_run_the_cli_app():
    from selfee.cli.app import main

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["selfee-fast"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main
    for runner in ("selfee/__main__.py", "selfee/cli/__main__.py"):  # python -m selfee, python -m selfee.cli
        assert "from selfee.cli.app import main" in (ROOT / runner).read_text()
