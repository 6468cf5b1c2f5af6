"""A training run's logs: metrics.csv (and TensorBoard), config.yaml, and the progress bar."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from selfee.config import SelfeeConfig
from selfee.monitor import FIELDS as KNN_FIELDS

log = logging.getLogger("selfee")

METRIC_FIELDS = (
    "step",
    "loss",
    "loss_ss",
    "loss_cld",
    "collapse_z",
    "collapse_cld",
    "lambda",
    "lr",
    "momentum",
    "samples_per_s",
    "steps_per_s",
    "val_loss",
    "val_loss_ss",
    "val_loss_cld",
    "elapsed_s",
    *KNN_FIELDS,
)


class MetricsLog:
    """Appends a row per logged step to ``metrics.csv`` in ``out_dir`` (and TensorBoard scalars when
    ``train.tensorboard``), and writes ``config.yaml``. A run resumed at ``step`` first drops the rows
    written after its checkpoint."""

    def __init__(self, out_dir: Path, cfg: SelfeeConfig, step: int):
        path = out_dir / "metrics.csv"
        new = not path.exists() or path.stat().st_size == 0
        if not new and step > 0:
            _truncate_metrics(path, step)  # a resumed run rewrites what came after its checkpoint
        self._file = open(path, "a", newline="")
        self._rows = csv.DictWriter(self._file, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        if new:
            self._rows.writeheader()
        (out_dir / "config.yaml").write_text(cfg.to_yaml())
        self._tb = None
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def write(self, m: dict) -> None:
        self._rows.writerow({k: m.get(k, "") for k in METRIC_FIELDS})
        self._file.flush()
        if self._tb is not None:
            for k, v in m.items():
                if k != "step":
                    self._tb.add_scalar(k, v, m["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _truncate_metrics(path: Path, step: int) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r.get("step") and int(float(r["step"])) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)


class Progress:
    """A rich progress bar with steps/s, samples/s and the latest losses (rank 0, terminals only)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if not enabled:
            return
        from selfee.console import progress

        self.bar = progress()
        self.task = self.bar.add_task("train", total=total, completed=start, rate="")
        self.bar.start()

    def advance(self, step: int):
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, m: dict):
        msg = (
            f"loss {m.get('loss', math.nan):.4f} (ss {m.get('loss_ss', math.nan):.3f} cld {m.get('loss_cld', math.nan):.3f})"
            f" {m.get('steps_per_s', 0):.2f} steps/s {m.get('samples_per_s', 0):.0f} samples/s"
        )
        if "knn_f1" in m:
            msg += f" | k-NN F1 {m['knn_f1']:.3f} (untrained {m.get('knn_f1_untrained', math.nan):.3f})"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, rate=msg)
        if self.bar is None or not self.bar.live.is_started:
            log.info("step %d: %s", step, msg)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
