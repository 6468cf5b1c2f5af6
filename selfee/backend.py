"""The one decision between DALI and the PyTorch reference, for training (``train.pipeline``) and
embedding (``embed.pipeline``): :func:`choose_backend`. A DALI path that was asked for and cannot be
taken goes through :func:`selfee.fallback.fallback` (said, or an error in strict mode)."""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from selfee._deps import available, install_hint, require
from selfee.errors import SelfeeError
from selfee.fallback import fallback
from selfee.runtime import indexed, resolve_device


class Backend(NamedTuple):
    """The implementation :func:`choose_backend` picked, and why."""

    name: str  # "dali", "torch" (the PyTorch/PyAV reference) or "synthetic"
    why: str
    fallback: dict | None = None  # selfee.fallback's record when a DALI path that was asked for was not taken
    impl: Any = None  # the DALI implementation, when name == "dali"

    def record(self, wanted: str) -> dict:
        """What run summaries store: the kind asked for, the path taken, why, and whether it was a fallback."""
        return {"wanted": wanted, "taken": self.name, "why": self.why, "fallback": self.fallback is not None}


def choose_backend(kind: str, device, feature: str, reference: str, impl: str, option: str) -> Backend:
    """The one decision between DALI and the PyTorch reference, for training and embedding.

    ``kind`` is the setting ``option`` (``train.pipeline``, ``embed.pipeline``): "torch" takes the
    reference; "auto" takes DALI for work on a GPU where DALI is installed, the reference otherwise
    (on the CPU the reference lane measured faster than DALI's CPU lane, bench/RESULTS.md); "dali"
    forces DALI. ``impl`` ("module:attribute") is the DALI implementation of ``feature``.

    DALI chosen, it is tried on the device (a tiny graph, once per process). Where "auto" would take
    DALI but it cannot run there (or its implementation does not import), the reference replaces it
    through :func:`selfee.fallback.fallback` (a warning; an error in strict mode). Where "dali" was
    forced, that is an error.
    """
    if kind not in ("dali", "auto"):
        return Backend("torch", f"{option}={kind}")
    if kind == "auto" and str(device).split(":")[0] != "cuda":
        return Backend("torch", f"{option}=auto on the CPU, where the reference is the faster lane")
    if kind == "auto" and not available("nvidia.dali"):  # a GPU run without its fast pipeline: said (strict: an error)
        return _fell_back(feature, reference, f"DALI is not installed ({install_hint('nvidia.dali')})")
    require("nvidia.dali", feature)
    module, _, attr = impl.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        if kind == "dali":
            raise SelfeeError(f"{feature} is unavailable: {exc}") from None
        return _fell_back(feature, reference, str(exc))
    from selfee.pipelines.backend import backend_error

    dev = indexed(resolve_device() if str(device) == "auto" else device)  # DALI needs the GPU's number
    err = backend_error(dev.type, dev.index if dev.type == "cuda" else None)
    if err is not None:
        if kind == "dali":
            raise SelfeeError(f"{option}=dali: DALI cannot run on {dev} ({err})")
        return _fell_back(feature, reference, f"DALI cannot run on {dev}: {err}")
    return Backend("dali", f"{option}={kind} on {dev}", impl=obj)


def _fell_back(feature: str, reference: str, why: str) -> Backend:
    return Backend("torch", why, fallback=fallback(feature, reference, why))
