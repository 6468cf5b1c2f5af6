"""Do ONNX Runtime's CUDA provider and TensorRT really work here? A one-node ONNX model through each
(for ``selfee-fast doctor`` and bench/gpu_check.sh)."""

from __future__ import annotations

import numpy as np

CUDA = "CUDAExecutionProvider"


def tiny_onnx() -> bytes:
    """A one-Relu ONNX model (x: 1 x 4 float -> y), serialized."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "selfee-probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for every supported ONNX Runtime and TensorRT parser
    return model.SerializeToString()


def _line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:200]


def ort_cuda_loads(device_index: int = 0) -> tuple[bool, str]:
    """(ok, what happened): a session asked for the CUDA provider has it (``get_providers``) and runs."""
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(tiny_onnx(), opts, providers=[(CUDA, {"device_id": device_index}),
                                                                     "CPUExecutionProvider"])
        providers = session.get_providers()
        if CUDA not in providers:
            return False, (f"the session was built with {', '.join(providers)} only: the CUDA provider did not "
                           "load (cuDNN / CUDA libraries of onnxruntime-gpu's CUDA major missing?)")
        y = session.run(["y"], {"x": np.array([[-1, 0, 2, 3]], np.float32)})[0]
    except Exception as exc:
        return False, _line(exc)
    if not np.array_equal(y, [[0, 0, 2, 3]]):
        return False, f"the CUDA session computed {y.tolist()} for Relu([-1, 0, 2, 3])"
    return True, "a session with the CUDA provider ran a test graph"


def tensorrt_builds() -> tuple[bool, str]:
    """(ok, what happened): TensorRT parses the probe model and builds an engine on the current GPU."""
    try:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(tiny_onnx()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            return False, f"the ONNX parser rejected the test model: {errors}"[:200]
        engine = builder.build_serialized_network(network, builder.create_builder_config())
    except Exception as exc:
        return False, _line(exc)
    if engine is None:
        return False, "build_serialized_network returned nothing (see TensorRT's log)"
    return True, f"built a test engine ({engine.nbytes} bytes)"
