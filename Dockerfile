# selfee-fast in NVIDIA's PyTorch container.
#
# nvcr.io/nvidia/pytorch:25.06-py3: Ubuntu 24.04, Python 3.12, CUDA 12.9.1, cuDNN 9, PyTorch 2.8 (NVIDIA
# build) and TensorRT 10.11 with its Python bindings. CUDA 12.x is what nvidia-dali-cuda120 needs; the
# 25.08+ images moved to CUDA 13. Host requirement: an NVIDIA driver for CUDA 12.9 (R575+, or a data
# centre driver with CUDA forward compatibility) and the NVIDIA Container Toolkit.
#
#   docker build -t selfee-fast .
#   docker run --gpus all --ipc=host -v "$PWD/experiment:/data" selfee-fast \
#       selfee-fast train /data/videos --out /data/runs/mouse --preset mouse
FROM nvcr.io/nvidia/pytorch:25.06-py3

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SELFEE_CACHE=/data/.selfee-cache
# SELFEE_CACHE: exports, TensorRT timing caches and mean backgrounds (<cache>/exports, /tensorrt, /backgrounds)

WORKDIR /opt/selfee-fast
COPY pyproject.toml README.md ./
COPY selfee ./selfee
COPY pipelines ./pipelines
COPY export ./export
COPY bench ./bench

# The project and its DALI, analysis and tracking extras. ONNX Runtime comes as onnxruntime-gpu (the CUDA
# provider; 1.20-1.22 are built for CUDA 12 and cuDNN 9) instead of the [onnx] extra's CPU-only wheel.
# PyTorch, TensorRT, DALI and the other packages the image ships stay as they are: the image's
# /etc/pip/constraint.txt pins them, so exact pins here could only conflict with it (hence DL3013 off).
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir ".[dali,analysis,track]" "onnx>=1.16" "onnxruntime-gpu>=1.20,<1.23" \
    && python -c "import tensorrt, nvidia.dali, onnxruntime, selfee.export.tensorrt; print('TensorRT', tensorrt.__version__)"

WORKDIR /data
CMD ["selfee-fast", "--help"]
