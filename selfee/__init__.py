"""selfee-fast: GPU-fast Selfee (self-supervised features of animal behavior, bioRxiv 2021.12.24.474120).

The core package imports only torch, torchvision and numpy. DALI lives in ``selfee.pipelines``,
ONNX/TensorRT in ``selfee.export``; both are imported lazily by the commands that need them.
"""

__version__ = "0.1.0"

from selfee.errors import SelfeeError

__all__ = ["SelfeeError", "__version__"]
