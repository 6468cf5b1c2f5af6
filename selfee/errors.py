"""Errors a user can act on: the CLI prints them as one line (traceback only with SELFEE_DEBUG=1)."""

from __future__ import annotations


class SelfeeError(Exception):
    """A known failure with a message fit for a user (bad input, missing dependency, ...)."""


class ConfigError(SelfeeError, ValueError):
    """An invalid configuration value; the message names the field."""


class VideoError(SelfeeError):
    """A video that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingDependency(SelfeeError, ImportError):
    """An optional package a feature needs is not installed."""
