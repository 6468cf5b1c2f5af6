"""The export tests: the embedding tests' tiny checkpoint (tests/embed/conftest.py) and its exports."""

from __future__ import annotations

import pytest
from embed.conftest import CFG, clip, cosine_min, decoded_count, reference, tiny  # noqa: F401


@pytest.fixture(scope="session")
def exports(tiny, tmp_path_factory):  # noqa: F811
    """{"torchscript": .ts, "onnx": .onnx} exported (and verified) once for the session."""
    from selfee.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("exports")
    return {fmt: export_checkpoint(tiny[0], out, fmt=fmt, frames=4, quiet=True)["files"][0]
            for fmt in ("torchscript", "onnx")}
