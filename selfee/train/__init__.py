"""Training: the :class:`Trainer` (``trainer``: step, fit loop, checkpoints), its logs (``logs``:
metrics.csv, TensorBoard, progress) and the ``selfee-fast train`` entry point (``run``: inputs,
pipelines, run.json)."""

from selfee.train.run import run_training
from selfee.train.trainer import Trainer, TrainingDiverged, check_batch

__all__ = ["Trainer", "TrainingDiverged", "check_batch", "run_training"]
