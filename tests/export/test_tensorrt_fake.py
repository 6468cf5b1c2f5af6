"""The TensorRT code paths on the CPU, against a fake ``tensorrt`` module and a fake CUDA runtime: version
gating, the float-input fallback on parse and on build failure, corrupt timing caches, the GPU the engine is
built and run on, and the stream inference is enqueued on. (The real engines are tested in test_tensorrt.py,
on a GPU.)"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from selfee.errors import SelfeeError
from selfee.export import tensorrt as trt_mod
from selfee.export.graph import build_metadata, random_frames

from .conftest import CFG

DIM = 16


# --------------------------------------------------------------------------------------------- fake CUDA


class FakeStream:
    def __init__(self, handle: int, device: int):
        self.cuda_stream = handle
        self.device = device


class FakeCuda:
    """Records the current device and stream as the code under test switches them."""

    def __init__(self, gpus: int = 2):
        self.gpus = gpus
        self.current_device = 0
        self.current_stream = FakeStream(0, 0)  # the legacy default stream
        self.streams: list[FakeStream] = []
        self.copies: list[dict] = []

    def available(self):
        return True

    def count(self):
        return self.gpus

    def current(self):
        return self.current_device

    @contextmanager
    def device(self, device):
        prev, self.current_device = self.current_device, torch.device(device).index
        try:
            yield
        finally:
            self.current_device = prev

    def new_stream(self, device):
        stream = FakeStream(0x7000 + len(self.streams), self.current_device)
        self.streams.append(stream)
        return stream

    @contextmanager
    def use_stream(self, stream):
        prev, self.current_stream = self.current_stream, stream
        try:
            yield
        finally:
            self.current_stream = prev

    def handle(self, stream):
        return stream.cuda_stream

    def host_to_device(self, device, stream):
        def copy(frames):
            self.copies.append({"compute": stream, "device": self.current_device, "current": self.current_stream})
            return frames.cpu()

        return copy

    def properties(self, device):
        return f"Fake GPU {torch.device(device).index}", 9, 0


# --------------------------------------------------------------------------------------------- fake TensorRT


DataType = enum.Enum("DataType", "UINT8 FLOAT HALF BF16", start=0)
TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT", start=0)
BuilderFlag = enum.Enum("BuilderFlag", "FP16 BF16 TF32 INT8", start=0)


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class Logger:
    WARNING = 2

    def __init__(self, level=None):
        self.level = level


class FakeTensor:
    def __init__(self, name, dtype):
        self.name = name
        self.dtype = dtype


class Network:
    def __init__(self):
        self.inputs: list[FakeTensor] = []

    def get_input(self, i):
        return self.inputs[i]


def make_trt(cuda: FakeCuda, version: str = "10.11.0", parse_uint8: bool = True, build_uint8: bool = True):
    """A ``tensorrt`` module: the parser reads the real ONNX file's input type; builds are recorded in ``.builds``."""
    state = types.SimpleNamespace(builds=[], parses=[])

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return b"FAKECACHE" + self.data[len(b"FAKECACHE"):] + b"+"

    class Config:
        def __init__(self):
            self.flags = set()
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def add_optimization_profile(self, profile):
            self.profile = profile

        def create_timing_cache(self, data):
            data = bytes(data)
            if data and not data.startswith(b"FAKECACHE"):
                raise RuntimeError("Failed to deserialize the timing cache: bad magic")
            return TimingCache(data or b"FAKECACHE")

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors: list[str] = []

        def parse_from_file(self, path):
            elem = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.elem_type
            dtype = DataType.UINT8 if elem == onnx.TensorProto.UINT8 else DataType.FLOAT
            state.parses.append(dtype)
            if dtype == DataType.UINT8 and not parse_uint8:
                self.errors = ["frames: UINT8 network inputs are not supported"]
                return False
            self.network.inputs = [FakeTensor("frames", dtype)]
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            dtype = network.get_input(0).dtype
            state.builds.append({"dtype": dtype, "device": cuda.current_device, "flags": set(config.flags)})
            if dtype == DataType.UINT8 and not build_uint8:
                return None
            _, lo, opt, hi = config.profile.shapes
            return b"FAKEENGINE" + json.dumps({"dtype": dtype.name, "max_batch": hi[0], "shape": list(hi)}).encode()

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses = {}
            self.shape = None
            self.calls = []

        def set_input_shape(self, name, shape):
            assert name == "frames"
            self.shape = tuple(shape)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            self.calls.append({"stream": stream_handle, "device": cuda.current_device, "rows": self.shape[0]})
            n, count = self.shape[0], int(np.prod(self.shape))
            ctype = ctypes.c_uint8 if self.engine.dtype == "UINT8" else ctypes.c_float
            x = np.ctypeslib.as_array((ctype * count).from_address(self.addresses["frames"])).reshape(n, -1)
            y = np.ctypeslib.as_array((ctypes.c_float * (n * DIM)).from_address(self.addresses["embedding"]))
            y.reshape(n, DIM)[:] = x.astype(np.float32).mean(1, keepdims=True) / 255 + np.arange(DIM)
            return True

    class Engine:
        def __init__(self, spec):
            self.dtype = spec["dtype"]
            self.shape = spec["shape"]
            self.num_io_tensors = 2
            self.contexts = []

        def get_tensor_name(self, i):
            return ("frames", "embedding")[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "frames" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType[self.dtype] if name == "frames" else DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile):
            return [[1, *self.shape[1:]], self.shape, self.shape]

        def create_execution_context(self):
            state.context_device = cuda.current_device
            self.contexts.append(Context(self))
            return self.contexts[-1]

    class Runtime:
        def __init__(self, logger):
            state.runtime_device = cuda.current_device

        def deserialize_cuda_engine(self, data):
            if not data.startswith(b"FAKEENGINE"):
                return None
            state.engine = Engine(json.loads(data[len(b"FAKEENGINE"):]))
            return state.engine

    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.state = state
    for obj in (DataType, TensorIOMode, BuilderFlag, MemoryPoolType, Logger, OnnxParser, Builder, Runtime):
        setattr(mod, obj.__name__, obj)
    return mod


@pytest.fixture
def fake(monkeypatch):
    """Install a fake CUDA runtime and a fake tensorrt; ``fake(**kw)`` replaces the latter."""
    cuda = FakeCuda()
    monkeypatch.setattr(trt_mod, "CUDA", cuda)

    def install(**kw):
        mod = make_trt(cuda, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", mod)
        return mod

    install()
    return types.SimpleNamespace(cuda=cuda, install=install)


def meta():
    return build_metadata(CFG, DIM, "fp16", "tiny.pt", "0" * 64)


def build(exports, tmp_path, **kw):
    out = tmp_path / "tiny.engine"
    kw.setdefault("timing_cache", tmp_path / "timing.cache")
    engine_meta = trt_mod.build_engine(exports["onnx"], out, meta(), "fp16", 8, 4, **kw)
    (tmp_path / "tiny.engine.json").write_text(json.dumps(engine_meta))
    return out, engine_meta


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("version, ok", [("9.3.0", False), ("10.0.1", True), ("10.13.2", True), ("11.0.0", False)])
def test_only_tensorrt_10_is_accepted(fake, version, ok):
    fake.install(version=version)
    if ok:
        assert trt_mod.check_available().__version__ == version
    else:
        with pytest.raises(SelfeeError, match=r"supports TensorRT 10 \(10\.0 to 10\.x\)") as err:
            trt_mod.check_available()
        assert version in str(err.value) and len(str(err.value).splitlines()) == 1


def test_engine_is_built_on_the_gpu_asked_for(fake, exports, tmp_path):
    out, m = build(exports, tmp_path, device="cuda:1")
    builds = sys.modules["tensorrt"].state.builds
    assert [b["device"] for b in builds] == [1] and fake.cuda.current_device == 0  # restored afterwards
    assert BuilderFlag.FP16 in builds[0]["flags"]
    assert m["gpu"] == "Fake GPU 1" and m["compute_capability"] == "9.0" and m["input_dtype"] == "uint8"
    assert m["shapes"] == {"min": [1, 3, 32, 48], "opt": [4, 3, 32, 48], "max": [8, 3, 32, 48]}
    assert out.read_bytes().startswith(b"FAKEENGINE")
    with pytest.raises(SelfeeError, match="cuda:5 requested but PyTorch sees 2 GPU"):
        build(exports, tmp_path, device="cuda:5")


@pytest.mark.parametrize("failing", ["parse", "build"])
def test_uint8_input_refused_at_parse_or_build_falls_back_to_a_float_copy(fake, exports, tmp_path, caplog, failing):
    trt = fake.install(parse_uint8=failing != "parse", build_uint8=failing != "build")
    with caplog.at_level(logging.WARNING, logger="selfee"):
        _, m = build(exports, tmp_path)
    assert m["input_dtype"] == "float"
    builds = [b["dtype"] for b in trt.state.builds]
    assert builds == ([DataType.FLOAT] if failing == "parse" else [DataType.UINT8, DataType.FLOAT])
    assert "float-input copy" in caplog.text
    assert not list(Path(exports["onnx"]).parent.glob("*float*"))  # the copy is removed once parsed


def test_build_failure_with_float_input_too_is_an_error(fake, exports, tmp_path, monkeypatch):
    trt = fake.install()
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(SelfeeError, match="TensorRT could not build an engine"):
        build(exports, tmp_path)
    assert not (tmp_path / "tiny.engine").exists()


@pytest.mark.parametrize("content", [b"garbage, not a timing cache", b"\x00" * 7])
def test_corrupt_timing_cache_is_replaced_not_fatal(fake, exports, tmp_path, caplog, content):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        out, _ = build(exports, tmp_path, timing_cache=cache)
    assert out.is_file()
    assert "timing cache is corrupt" in caplog.text and "starting a new one" in caplog.text
    assert cache.read_bytes().startswith(b"FAKECACHE")  # a fresh cache was saved over the corrupt one
    assert not list(tmp_path.glob("*.partial"))
    first = cache.read_bytes()
    build(exports, tmp_path, timing_cache=cache)  # the saved cache is read back and extended
    assert cache.read_bytes().startswith(first)


@pytest.mark.parametrize("parse_uint8", [True, False])
def test_inference_runs_on_the_embedders_stream_and_gpu(fake, exports, tmp_path, parse_uint8):
    trt = fake.install(parse_uint8=parse_uint8)
    out, _ = build(exports, tmp_path, device="cuda:1")
    emb = trt_mod.TensorRTEmbedder(out, "cuda:1")
    assert trt.state.runtime_device == 1 and trt.state.context_device == 1  # engine and context made on cuda:1
    (stream,) = fake.cuda.streams
    assert emb.stream is stream and stream.device == 1 and stream.cuda_stream != 0
    assert emb.max_batch == 8 and emb.in_dtype == (torch.uint8 if parse_uint8 else torch.float32)

    frames = random_frames(19, (32, 48), seed=1)  # more than max_batch: three runs of the engine
    got = emb(frames)
    want = frames.reshape(19, -1).float().mean(1, keepdim=True).numpy() / 255 + np.arange(DIM)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    calls = trt.state.engine.contexts[0].calls
    assert [c["rows"] for c in calls] == [8, 8, 3]
    assert {c["stream"] for c in calls} == {stream.cuda_stream}  # never the legacy default stream (0)
    assert {c["device"] for c in calls} == {1}  # enqueued while cuda:1 is current, though device 0 was before
    (copy,) = fake.cuda.copies
    # made on the caller's stream (which self.stream then waits for, for GPU frames), on cuda:1
    assert copy["compute"] is stream and copy["current"].cuda_stream == 0 and copy["device"] == 1
    assert fake.cuda.current_device == 0 and fake.cuda.current_stream.cuda_stream == 0  # both restored


def test_an_engine_that_does_not_load_names_versions_and_gpus(fake, exports, tmp_path):
    out, _ = build(exports, tmp_path)
    out.write_bytes(b"an engine from another TensorRT")
    with pytest.raises(SelfeeError, match=r"cannot load this engine \(built with TensorRT 10.11.0 for Fake GPU 0\)"):
        trt_mod.TensorRTEmbedder(out, "cuda")
    with pytest.raises(SelfeeError, match="runs on a GPU"):
        trt_mod.TensorRTEmbedder(out, "cpu")


# --------------------------------------------------------------------------------------------- INT8


@pytest.fixture(scope="module")
def qdq(exports, tmp_path_factory):
    """The tiny export statically quantized (QDQ) on a few frames."""
    from selfee.export.quantize import quantize_onnx

    out = tmp_path_factory.mktemp("qdq") / "tiny.int8.onnx"
    return quantize_onnx(exports["onnx"], out, random_frames(8, tuple(CFG.data.input_size), 1))


def test_int8_engine_uses_explicit_quantization_from_the_qdq_model(fake, qdq, tmp_path):
    out = tmp_path / "tiny.engine"
    meta_int8 = trt_mod.build_engine(qdq, out, meta(), "int8", 8, 4, timing_cache=tmp_path / "t.cache")
    (build_rec,) = sys.modules["tensorrt"].state.builds
    # INT8 takes its scales from the Q/DQ nodes; FP16 covers the layers left unquantized
    assert build_rec["flags"] == {BuilderFlag.INT8, BuilderFlag.FP16} and meta_int8["precision"] == "int8"
    assert out.read_bytes().startswith(b"FAKEENGINE")


def test_int8_engine_from_an_unquantized_model_is_refused(fake, exports, tmp_path):
    with pytest.raises(SelfeeError, match="no QuantizeLinear nodes.*--precision int8 --calibrate"):
        trt_mod.build_engine(exports["onnx"], tmp_path / "x.engine", meta(), "int8", 8, 4)
    assert sys.modules["tensorrt"].state.builds == []


def test_int8_engine_export_is_held_to_the_int8_checks(fake, tiny, tmp_path, monkeypatch):
    """Through export_checkpoint with --trt: the fake engine's outputs are not the model's, so the INT8
    acceptance check (run on the engine, after the ONNX INT8 passed) refuses it and keeps no engine."""
    from conftest import numbered_frames, write_video
    from selfee.export import quantize as Q
    from selfee.export.exporter import export_checkpoint

    monkeypatch.setattr(Q, "MIN_MEDIAN_COSINE", 0.9)  # the tiny model's ONNX INT8 passes these
    monkeypatch.setattr(Q, "MAX_F1_LOSS", 1.0)
    monkeypatch.setattr(Q, "KNN_FRAMES", 90)
    from selfee.cli.export import demo_labelled_video

    video = write_video(tmp_path / "calib.mp4", numbered_frames(60), g=8)
    knn_video, knn_labels = demo_labelled_video(tmp_path, 90)
    with pytest.raises(SelfeeError, match="tensorrt int8 export fails its acceptance check .median cosine"):
        export_checkpoint(tiny[0], tmp_path / "out", trt=True, precision="int8", calibrate=[video], frames=4,
                          max_batch=8, quiet=True, timing_cache=tmp_path / "t.cache", knn_frames=90,
                          knn_video=knn_video, knn_labels=knn_labels)
    assert (tmp_path / "out" / "tiny.int8.onnx").is_file() and not (tmp_path / "out" / "tiny.engine").exists()
    (build_rec,) = sys.modules["tensorrt"].state.builds
    assert build_rec["flags"] == {BuilderFlag.INT8, BuilderFlag.FP16}
