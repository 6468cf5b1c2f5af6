"""Fallbacks, said out loud: the one place that decides whether a slower path may replace a fast one.

When the path a user asked for (NVDEC, the DALI pipeline, TensorRT, ONNX Runtime's CUDA provider,
a GPU) cannot be taken, the code calls :func:`fallback` with what was wanted, what is taken
instead and why. Normally that is one warning line and the run goes on; in strict mode
(``--strict`` on the command line, or ``SELFEE_STRICT=1`` in the environment, which torchrun
workers and subprocesses inherit) it is a :class:`FallbackError` naming the cause. The returned
record (``{"wanted", "taken", "why"}``) goes into the run's summary, ``run.json`` or the
embedding manifest, so every output says which path produced it.
"""

from __future__ import annotations

import logging
import os

from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

ENV = "SELFEE_STRICT"


class FallbackError(SelfeeError):
    """Strict mode: a requested fast path could not be taken."""


def strict() -> bool:
    """Whether fallbacks are errors (``SELFEE_STRICT`` set to anything but '', 0, false, no, off)."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def set_strict(on: bool) -> None:
    """Turn strict mode on or off for this process and the processes it starts."""
    if on:
        os.environ[ENV] = "1"
    else:
        os.environ.pop(ENV, None)


def fallback(wanted: str, taken: str, why: str, *, subject: str | None = None) -> dict:
    """Report that ``taken`` replaces ``wanted`` because of ``why``; raise instead in strict mode.

    ``subject`` (a video, a weights file) prefixes the message. Returns the record to store.
    """
    where = f"{subject}: " if subject else ""
    message = f"{where}{wanted} unavailable ({why}); using {taken}"
    if strict():
        raise FallbackError(f"{where}{wanted} unavailable ({why}); strict mode forbids falling back to {taken} "
                            f"(unset {ENV} / drop --strict to allow it)")
    log.warning("%s", message)
    return {"wanted": wanted, "taken": taken, "why": str(why)}
