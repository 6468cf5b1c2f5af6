"""NVIDIA DALI pipelines (GPU decode and augmentation, with a CPU lane): the only place that imports DALI."""
