"""The ``selfee-fast`` command line: the app in :mod:`selfee.cli.app`, one module per command group.

``selfee-fast ...``, ``python -m selfee ...`` and ``python -m selfee.cli ...`` (what torchrun runs)
are the same program.
"""

from selfee.cli.app import app, main

__all__ = ["app", "main"]
