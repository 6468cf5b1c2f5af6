"""TensorRT engines built from the ONNX export (TensorRT 10 Python API) and the Embedder that runs them.

One optimization profile (batch 1 .. max, tuned for opt; the input size fixed), FP16 or BF16
builder flags (fp32 also turns TF32 off, so it means fp32), a timing cache kept across builds,
and a JSON sidecar ``<engine>.json`` with the metadata, the TensorRT version, the GPU, the
precision and the shapes. An engine runs only with the TensorRT version and GPU model it was
built for; the sidecar says which.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from selfee._deps import require
from selfee.embed import HostToDevice, device_to_host
from selfee.errors import SelfeeError
from selfee.export.graph import parse_metadata

log = logging.getLogger("selfee")


def _trt():
    trt = require("tensorrt", "building or running TensorRT engines")
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise SelfeeError(f"TensorRT {trt.__version__} is installed; selfee-fast needs TensorRT 10 or newer")
    return trt


def check_available():
    """The tensorrt module, when both TensorRT (10+) and a CUDA GPU are present; else a clear error."""
    trt = _trt()
    if not torch.cuda.is_available():
        raise SelfeeError(
            "TensorRT engines are built and run on an NVIDIA GPU, and PyTorch sees none here "
            "(use --format onnx without --trt, or run in the project's CUDA container with --gpus all)"
        )
    return trt


def default_timing_cache(trt) -> Path:
    """One timing cache per GPU model and TensorRT version, reused by every build."""
    from selfee.export.runtime import cache_dir

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower()
    return cache_dir() / "tensorrt" / f"timing-{gpu}-trt{trt.__version__}.cache"


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(0)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return network, parser
    errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    return None, errors


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, meta: dict, precision: str = "fp16",
                 max_batch: int = 256, opt_batch: int | None = None, timing_cache: str | os.PathLike | None = None,
                 workspace_gib: float | None = None) -> dict:
    """Build ``out`` from the ONNX export; returns the engine metadata (``meta`` plus what TensorRT built)."""
    from selfee.export.onnx import float_input_copy

    trt = check_available()
    onnx_path = Path(onnx_path)
    out = Path(out)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, logger, onnx_path)
    if network is None:
        # Parsers that reject uint8 network inputs get a copy whose input is float (0-255).
        log.warning("TensorRT rejected the uint8 input (%s); building from a float-input copy", parser)
        alt = float_input_copy(onnx_path, onnx_path.with_name(f".{onnx_path.stem}.float.onnx"))
        try:
            network, parser = _parse(trt, builder, logger, alt)
        finally:
            alt.unlink(missing_ok=True)
        if network is None:
            raise SelfeeError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {parser}")

    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)

    h, w = meta["input_size"]
    opt_batch = opt_batch or max_batch
    shapes = {"min": (1, 3, h, w), "opt": (opt_batch, 3, h, w), "max": (max_batch, 3, h, w)}
    inp = network.get_input(0)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(trt)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("%s: timing cache not usable with this GPU/TensorRT; starting a new one", cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    log.info("building the TensorRT %s engine (batch 1-%d, opt %d, %dx%d); this takes minutes the first time",
             precision, max_batch, opt_batch, h, w)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SelfeeError(f"TensorRT could not build an engine from {onnx_path} (see TensorRT's messages above)")
    out.write_bytes(memoryview(plan))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_tmp = cache_path.with_name(cache_path.name + f".{os.getpid()}.partial")
    cache_tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    os.replace(cache_tmp, cache_path)

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        **meta,
        "precision": precision,
        "tensorrt": str(trt.__version__),
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "shapes": {k: list(v) for k, v in shapes.items()},
        "input_dtype": str(network.get_input(0).dtype).split(".")[-1].lower(),
        "onnx": onnx_path.name,
        "timing_cache": str(cache_path),
    }


def read_engine_metadata(path: str | os.PathLike) -> dict:
    """The sidecar ``<engine>.json`` written with the engine."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        raise SelfeeError(f"{path}: no {side.name} beside the engine (export it with selfee-fast export --trt)")
    return parse_metadata(side.read_text(), str(side))


_DTYPES = {"UINT8": torch.uint8, "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16}


class TensorRTEmbedder:
    """A TensorRT engine on its GPU: frames copied on a side stream, inference with execute_async_v3."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto"):
        from selfee.train import resolve_device

        trt = check_available()
        self.device = resolve_device(str(device))
        if self.device.type != "cuda":
            raise SelfeeError("the TensorRT backend runs on a GPU: use --device cuda (or auto)")
        self.meta = read_engine_metadata(path)
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(logger)
            self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                raise SelfeeError(
                    f"{path}: TensorRT {trt.__version__} on {torch.cuda.get_device_name(self.device)} cannot load this "
                    f"engine (built with TensorRT {self.meta.get('tensorrt')} for {self.meta.get('gpu')}); rebuild it here"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SelfeeError(f"{path}: expected one input and one output, found {inputs} and {outputs}")
        self.input, self.output = inputs[0], outputs[0]
        self.in_dtype = _DTYPES[self.engine.get_tensor_dtype(self.input).name]
        self.out_dtype = _DTYPES[self.engine.get_tensor_dtype(self.output).name]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input, 0)[2][0])
        self.dim = int(self.meta["embed_dim"])
        self.fixed_size = tuple(self.meta["shapes"]["max"][2:])  # the profile's height, width
        self.h2d = HostToDevice(self.device)

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor):
        x = self.h2d(frames)
        if x.dtype != self.in_dtype:
            x = x.to(self.in_dtype)
        x = x.contiguous()
        stream = torch.cuda.current_stream(self.device)
        out = []
        for i in range(0, x.shape[0], self.max_batch):
            xi = x[i : i + self.max_batch]
            yi = torch.empty((xi.shape[0], self.dim), dtype=self.out_dtype, device=self.device)
            self.context.set_input_shape(self.input, tuple(xi.shape))
            self.context.set_tensor_address(self.input, xi.data_ptr())
            self.context.set_tensor_address(self.output, yi.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise SelfeeError("TensorRT inference failed (see TensorRT's messages above)")
            out.append(yi)
        return device_to_host(out[0] if len(out) == 1 else torch.cat(out))

    def __call__(self, frames: torch.Tensor):
        return self.submit(frames).result()

