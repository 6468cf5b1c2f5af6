"""TensorRT engines built from the ONNX export (TensorRT 10 Python API) and the Embedder that runs them.

TensorRT 10.x only (11 removed the FP16/BF16 builder flags). One optimization profile (batch
1 .. max, tuned for opt; the input size fixed), FP16 or BF16 builder flags (INT8 + FP16 for the explicitly
quantized QDQ export of :mod:`selfee.export.quantize`; fp32 also turns TF32
off, so it means fp32), a timing cache kept across builds (a corrupt one is replaced), the
engine built and run on the GPU asked for, and a JSON sidecar ``<engine>.json`` with the
metadata, the TensorRT version, the GPU, the precision and the shapes. An engine runs only with
the TensorRT version and GPU model it was built for; the sidecar says which.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from selfee._deps import require
from selfee.embed.embedder import HostToDevice, device_to_host
from selfee.errors import SelfeeError
from selfee.export.graph import parse_metadata
from selfee.fileio import atomic_write, cache_dir, temp_path
from selfee.runtime import Cuda, resolve_device

log = logging.getLogger("selfee")

SUPPORTED = "TensorRT 10 (10.0 to 10.x)"


def _trt():
    trt = require("tensorrt", "building or running TensorRT engines")
    version = str(trt.__version__)
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise SelfeeError(f"TensorRT reports an unreadable version '{version}'; selfee-fast supports {SUPPORTED}") from None
    if major < 10:
        raise SelfeeError(f"TensorRT {version} is installed; selfee-fast supports {SUPPORTED}: pip install 'tensorrt>=10,<11'")
    if major > 10:
        # TensorRT 11 removed the FP16/BF16 builder flags (weakly typed networks) this build relies on.
        raise SelfeeError(f"TensorRT {version} is installed; selfee-fast supports {SUPPORTED} (TensorRT 11 dropped "
                          "the FP16/BF16 builder flags its engines are built with): pip install 'tensorrt>=10,<11'")
    return trt


class _Cuda(Cuda):
    """The CUDA calls of this module in one place (the CPU tests swap in a recording fake for :data:`CUDA`)."""

    @staticmethod
    def device(device: torch.device):
        """Context: ``device`` is the current device (of this thread) while inside."""
        return torch.cuda.device(device)

    @staticmethod
    def new_stream(device: torch.device):
        return torch.cuda.Stream(device)

    @staticmethod
    def use_stream(stream):
        """Context: ``stream`` is the current stream (of this thread) while inside."""
        return torch.cuda.stream(stream)

    @staticmethod
    def handle(stream) -> int:
        return stream.cuda_stream

    @staticmethod
    def host_to_device(device: torch.device, stream) -> HostToDevice:
        return HostToDevice(device, compute=stream)

    @staticmethod
    def properties(device: torch.device) -> tuple[str, int, int]:
        props = torch.cuda.get_device_properties(device)
        return props.name, props.major, props.minor


CUDA = _Cuda()


def check_available():
    """The tensorrt module, when both TensorRT (10.x) and a CUDA GPU are present; else a clear error."""
    trt = _trt()
    if not CUDA.available():
        raise SelfeeError(
            "TensorRT engines are built and run on an NVIDIA GPU, and PyTorch sees none here "
            "(use --format onnx without --trt, or run in the project's CUDA container with --gpus all)"
        )
    return trt


def gpu_device(device: str | torch.device = "auto") -> torch.device:
    """``device`` as ``cuda:N`` (``auto`` and ``cuda``: the current GPU); anything else is an error."""
    return resolve_device(device, gpu="the TensorRT backend", index=True, cuda=CUDA)


def default_timing_cache(trt, device: torch.device | None = None) -> Path:
    """One timing cache per GPU model and TensorRT version, reused by every build."""
    name = CUDA.properties(device if device is not None else gpu_device())[0]
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return cache_dir() / "tensorrt" / f"timing-{gpu}-trt{trt.__version__}.cache"


def _parse(trt, builder, logger, onnx_path: Path):
    """(network, parser, None), or (None, None, the parser's errors). The parser owns the weights the
    network points to, so it is kept alive until the engine is built."""
    network = builder.create_network(0)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return network, parser, None
    errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    return None, None, errors or "no message"


def _parse_float_copy(trt, builder, logger, onnx_path: Path):
    """:func:`_parse` on a copy of the model whose input is float (0-255), for TensorRT versions or
    tactics that reject uint8 network inputs; the copy is removed once parsed."""
    from selfee.export.onnx import float_input_copy

    alt = float_input_copy(onnx_path, temp_path(onnx_path.with_name(f"{onnx_path.stem}.float.onnx"), keep_suffix=True))
    try:
        return _parse(trt, builder, logger, alt)
    finally:
        alt.unlink(missing_ok=True)


def _builder_config(trt, builder, network, precision: str, shapes: dict, workspace_gib: float | None):
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    # Weakly typed precision flags: deprecated since TensorRT 10.12, removed in 11 (which _trt() refuses).
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision == "int8":
        # Explicit quantization: the Q/DQ nodes of the INT8 ONNX export carry the scales (no calibrator);
        # FP16 lets the layers left unquantized (pooling, the projector's BatchNorm) run in half precision.
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    return config


def _timing_cache(config, path: Path, cache=None):
    """Give ``config`` a timing cache: ``cache`` (an earlier attempt's) or the one saved at ``path``.

    A file that cannot be read, that TensorRT cannot deserialize (truncated, corrupt) or that was
    made for another GPU or TensorRT version is replaced by a fresh cache, with a warning: a timing
    cache only saves build time, it never decides whether a build works.
    """
    if cache is None:
        data = b""
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning("%s: cannot read the timing cache (%s); starting a new one", path, exc.strerror or exc)
        if data:
            try:
                cache = config.create_timing_cache(data)
            except Exception as exc:  # TensorRT raises on a cache it cannot deserialize
                log.warning("%s: the timing cache is corrupt (%s); starting a new one", path, str(exc).splitlines()[0])
            else:
                if cache is None:
                    log.warning("%s: the timing cache is corrupt; starting a new one", path)
        if cache is None:
            cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("%s: timing cache not usable with this GPU/TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config, path: Path) -> None:
    """Save the build's timing cache atomically (under a name unique to this process and thread); a
    cache that cannot be saved only costs time in the next build, so it is a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, memoryview(config.get_timing_cache().serialize()), fsync=False)
    except OSError as exc:
        log.warning("%s: cannot save the timing cache (%s)", path, exc.strerror or exc)


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, meta: dict, precision: str = "fp16",
                 max_batch: int = 256, opt_batch: int | None = None, timing_cache: str | os.PathLike | None = None,
                 workspace_gib: float | None = None, device: str | torch.device = "auto") -> dict:
    """Build ``out`` from the ONNX export on ``device``; returns the engine metadata (``meta`` plus what TensorRT built).

    If TensorRT cannot parse the uint8 input, or cannot build an engine with it, the engine is
    built from a copy of the model with a float input (0-255), which the runtime then feeds.
    """
    trt = check_available()
    dev = gpu_device(device)
    onnx_path = Path(onnx_path)
    out = Path(out)
    if precision == "int8" and not has_qdq(onnx_path):
        raise SelfeeError(f"{onnx_path}: an INT8 engine is built from the quantized (QDQ) ONNX export, and this model "
                          "has no QuantizeLinear nodes: selfee-fast export CKPT --precision int8 --calibrate VIDEO --trt")
    h, w = meta["input_size"]
    opt_batch = opt_batch or max_batch
    shapes = {"min": (1, 3, h, w), "opt": (opt_batch, 3, h, w), "max": (max_batch, 3, h, w)}
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(trt, dev)
    logger = trt.Logger(trt.Logger.WARNING)
    cache = None

    def build(network):
        nonlocal cache
        config = _builder_config(trt, builder, network, precision, shapes, workspace_gib)
        cache = _timing_cache(config, cache_path, cache)
        log.info("building the TensorRT %s engine (batch 1-%d, opt %d, %dx%d); this takes minutes the first time",
                 precision, max_batch, opt_batch, h, w)
        return builder.build_serialized_network(network, config), config

    with CUDA.device(dev):  # the builder times its tactics on the GPU the engine is for
        builder = trt.Builder(logger)
        network, parser, errors = _parse(trt, builder, logger, onnx_path)
        float_copy = False
        if network is None:
            log.warning("TensorRT could not parse %s (%s); building from a float-input copy", onnx_path.name, errors)
            network, parser, errors = _parse_float_copy(trt, builder, logger, onnx_path)
            if network is None:
                raise SelfeeError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
            float_copy = True
        plan, config = build(network)
        if plan is None and not float_copy and network.get_input(0).dtype == trt.DataType.UINT8:
            log.warning("TensorRT could not build an engine with the uint8 input; retrying from a float-input copy")
            alt, alt_parser, errors = _parse_float_copy(trt, builder, logger, onnx_path)
            if alt is not None:
                network, parser = alt, alt_parser
                plan, config = build(network)
        if plan is None:
            raise SelfeeError(f"TensorRT could not build an engine from {onnx_path} (see TensorRT's messages above)")
        out.write_bytes(memoryview(plan))
        _save_timing_cache(config, cache_path)
        input_dtype = str(network.get_input(0).dtype).split(".")[-1].lower()
        del parser

    name, major, minor = CUDA.properties(dev)
    return {
        **meta,
        "precision": precision,
        "tensorrt": str(trt.__version__),
        "gpu": name,
        "compute_capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "shapes": {k: list(v) for k, v in shapes.items()},
        "input_dtype": input_dtype,
        "onnx": onnx_path.name,
        "timing_cache": str(cache_path),
    }


def has_qdq(onnx_path: str | os.PathLike) -> bool:
    """Whether an ONNX model is explicitly quantized (has QuantizeLinear nodes)."""
    onnx = require("onnx", "reading ONNX models")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def read_engine_metadata(path: str | os.PathLike) -> dict:
    """The sidecar ``<engine>.json`` written with the engine."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        raise SelfeeError(f"{path}: no {side.name} beside the engine (export it with selfee-fast export --trt)")
    return parse_metadata(side.read_text(), str(side))


_DTYPES = {"UINT8": torch.uint8, "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16}


class TensorRTEmbedder:
    """A TensorRT engine on its GPU: frames copied on a side stream, inference with execute_async_v3 on the
    embedder's own stream, the embeddings copied back on that stream behind it.

    TensorRT warns about (and adds synchronisation for) enqueueing on the legacy default stream,
    which would serialise the copies with the inference; the embedder therefore owns a stream
    (made on its GPU), and every call enters its GPU as the current device, so ``cuda:1`` works
    from a process (or thread) where device 0 is current.
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto"):
        trt = check_available()
        self.device = gpu_device(device)
        self.meta = read_engine_metadata(path)
        logger = trt.Logger(trt.Logger.WARNING)
        with CUDA.device(self.device):  # the engine, its context and its streams belong to this GPU
            self.runtime = trt.Runtime(logger)
            self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                raise SelfeeError(
                    f"{path}: TensorRT {trt.__version__} on {CUDA.properties(self.device)[0]} cannot load this "
                    f"engine (built with TensorRT {self.meta.get('tensorrt')} for {self.meta.get('gpu')}); rebuild it here"
                )
            self.context = self.engine.create_execution_context()
            self.stream = CUDA.new_stream(self.device)
            self.h2d = CUDA.host_to_device(self.device, self.stream)  # the copy stream; self.stream waits for it
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

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor):
        # Everything below is queued on self.stream: tensors allocated here belong to it (the caching
        # allocator reuses their memory only for later work on the same stream, i.e. after TensorRT
        # has read them), the input copied on the side stream is recorded as used on it, and the
        # event the pending result waits for is recorded on it after the read-back copy.
        with CUDA.device(self.device):
            # On the caller's stream: frames a GPU decoder wrote there are waited for by self.stream
            # (HostToDevice compares its compute stream with the current one).
            x = self.h2d(frames)
        with CUDA.device(self.device), CUDA.use_stream(self.stream):
            if x.dtype != self.in_dtype:
                x = x.to(self.in_dtype)
            x = x.contiguous()
            handle = CUDA.handle(self.stream)
            out = []
            for i in range(0, x.shape[0], self.max_batch):
                xi = x[i : i + self.max_batch]
                yi = torch.empty((xi.shape[0], self.dim), dtype=self.out_dtype, device=x.device)
                self.context.set_input_shape(self.input, tuple(xi.shape))
                self.context.set_tensor_address(self.input, xi.data_ptr())
                self.context.set_tensor_address(self.output, yi.data_ptr())
                if not self.context.execute_async_v3(handle):
                    raise SelfeeError("TensorRT inference failed (see TensorRT's messages above)")
                out.append(yi)
            return device_to_host(out[0] if len(out) == 1 else torch.cat(out))

    def __call__(self, frames: torch.Tensor):
        return self.submit(frames).result()
