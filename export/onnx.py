"""ONNX export of the encoder (opset >= 17): uint8 input, dynamic batch axis, metadata in the model."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch

from selfee._deps import require
from selfee.errors import SelfeeError
from selfee.export.graph import INPUT, OUTPUT, FrameEncoder

OPSET = 17
META_KEY = "selfee"  # metadata_props key holding the full JSON record
# Also stored as separate keys, readable in model viewers without parsing JSON.
SHOWN_KEYS = ("input_size", "live_frames", "frame_interval", "checkpoint_sha256", "precision", "embed_dim", "features")


def to_onnx(encoder: torch.nn.Module, example: torch.Tensor, out: str | os.PathLike, meta: dict,
            opset: int = OPSET) -> Path:
    """Export ``FrameEncoder(encoder)`` in fp32 with input ``frames`` (batch x 3 x H x W uint8) and
    output ``embedding`` (batch x dim float32). Batch, height and width are dynamic axes (the
    ResNet pools globally), so one file serves any input size; the metadata holds the trained one.

    The file is always fp32: reduced precision is chosen by the runtime that compiles it
    (TensorRT's FP16/BF16 builder flags), which keeps one ONNX file valid for every backend.
    """
    if opset < 17:
        raise SelfeeError(f"ONNX opset {opset} is too old: selfee-fast exports opset >= 17")
    onnx = require("onnx", "ONNX export")
    module = FrameEncoder(copy.deepcopy(encoder).eval().float().cpu()).eval()
    out = Path(out)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: it needs no extra package (the torch.export-based one
        # needs onnxscript) and handles ResNets completely; its deprecation notice is noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example.cpu(),), str(out), dynamo=False, opset_version=opset,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch"}}, do_constant_folding=True,
        )
    model = onnx.load(str(out))
    set_metadata(model, meta)
    model.doc_string = "selfee-fast encoder: uint8 frames (batch x 3 x H x W, 0-255) -> float32 embeddings"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def set_metadata(model, meta: dict) -> None:
    del model.metadata_props[:]
    for key in SHOWN_KEYS:
        entry = model.metadata_props.add()
        entry.key, entry.value = f"{META_KEY}.{key}", json.dumps(meta.get(key))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)


def read_metadata(path: str | os.PathLike) -> str:
    """The JSON record stored in an ONNX file by :func:`to_onnx` (the weights are not loaded)."""
    onnx = require("onnx", "reading ONNX metadata")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SelfeeError(f"{path}: cannot read ONNX ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    for entry in model.metadata_props:
        if entry.key == META_KEY:
            return entry.value
    raise SelfeeError(f"{path}: not a selfee-fast export (no '{META_KEY}' metadata in the ONNX model)")


def float_input_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy whose input is float32 (values still 0-255): for runtimes that reject uint8 inputs.

    The graph's first node casts the input to float32, which then becomes a no-op.
    """
    onnx = require("onnx", "ONNX input conversion")
    model = onnx.load(str(src))
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return Path(dst)
