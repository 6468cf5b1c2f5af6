"""TorchScript export of the encoder: traced, frozen, metadata in the archive as ``selfee.json``.

PyTorch marks TorchScript deprecated (in favour of torch.export); it still runs everywhere
libtorch does, which is why it is offered. The deprecation warnings are silenced here only.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch

from selfee.errors import SelfeeError
from selfee.export.graph import FrameEncoder, precision_dtype

EXTRA = "selfee.json"


def to_torchscript(encoder: torch.nn.Module, example: torch.Tensor, out: str | os.PathLike, meta: dict,
                   precision: str = "fp32", device: str | torch.device = "cpu") -> Path:
    """Trace ``FrameEncoder(encoder)`` on ``example`` (uint8 frames), freeze it, save it with ``meta``.

    Freezing inlines the weights and folds batch norms into the convolutions. On CUDA the weights
    are channels-last (what cuDNN is fastest with); the archive loads on any device.
    """
    device = torch.device(device)
    dtype = precision_dtype(precision)
    net = copy.deepcopy(encoder).eval().to(device=device, dtype=dtype)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    module = FrameEncoder(net, dtype).eval()
    out = Path(out)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, example.to(device), check_trace=False)
        frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(out), _extra_files={EXTRA: json.dumps(meta)})
    return out


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, str]:
    """(module, metadata JSON text) of an export written by :func:`to_torchscript`."""
    extra = {EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=torch.device(device), _extra_files=extra)
    except Exception as exc:  # not a TorchScript archive, truncated, ...
        raise SelfeeError(f"{path}: cannot load TorchScript ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return module.eval(), extra[EXTRA]
