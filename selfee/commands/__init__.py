"""Command groups beyond the core ones; each module defines ``register(app)``.

Modules here import only typer and the core at import time; heavy libraries are imported inside
the command bodies, so ``selfee-fast --help`` stays fast and works without the extras.
"""

# Registered by selfee.cli, in this order.
MODULES = ("analysis", "tracking", "export")
