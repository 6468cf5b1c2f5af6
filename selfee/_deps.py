"""Optional dependencies, probed once and imported only by the feature that needs them."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

from selfee.errors import MissingDependency

# import name -> (pip requirement, project extra that provides it)
_HINTS = {
    "nvidia.dali": ("nvidia-dali-cuda120", "dali"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime (or onnxruntime-gpu)", "onnx"),
    "tensorrt": ("tensorrt>=10 (ships in the project's CUDA container)", None),
    "sklearn": ("scikit-learn", "analysis"),
    "scipy": ("scipy", "analysis"),
    "matplotlib": ("matplotlib", "analysis"),
    "h5py": ("h5py", "analysis"),
    "cv2": ("opencv-python-headless", "track"),
    "umap": ("umap-learn", "umap"),
    "av": ("av", None),
    "torch.utils.tensorboard": ("tensorboard", "tensorboard"),
}


@cache
def available(name: str) -> bool:
    """True when ``name`` can be imported (probed once per process)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_hint(name: str) -> str:
    req, extra = _HINTS.get(name, (name, None))
    hint = f"pip install {req}"
    if extra:
        hint += f"  (or: pip install 'selfee-fast[{extra}]')"
    return hint


def require(name: str, feature: str) -> ModuleType:
    """Import ``name`` or raise a MissingDependency that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependency(
            f"{feature} needs the Python package '{name.split('.')[0]}', which is not installed: {install_hint(name)}"
        ) from exc
