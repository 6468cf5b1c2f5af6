"""The trainer on a CUDA GPU (gpu marker: skipped without one; strict like every GPU test): bf16 autocast,
fp16 with the GradScaler, torch.compile and channels-last, each training a tiny model on fixed views
until the loss drops, as the CPU test does (tests/core/test_train.py)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import make_tiny_cfg
from selfee.data import ViewBatch
from selfee.train import Trainer

pytestmark = pytest.mark.gpu


def losses(path) -> list[float]:
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("amp, compile_, channels_last", [
    ("bf16", False, True),
    ("fp16", False, True),  # GradScaler on
    ("bf16", True, True),  # torch.compile
    ("off", False, False),  # fp32, contiguous
])
def test_the_trainer_learns_on_the_gpu(tmp_path, amp, compile_, channels_last):
    cfg = make_tiny_cfg("optim.steps=25", f"train.amp={amp}", f"train.compile={str(compile_).lower()}",
                        f"train.channels_last={str(channels_last).lower()}", "train.device=cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, 32, 32, generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch = ViewBatch(v1.to(dev).contiguous(memory_format=fmt),
                      (v2 * 0.5 + v1 * 0.5).to(dev).contiguous(memory_format=fmt), None, None)
    trainer = Trainer(cfg, tmp_path, device=dev)
    assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=fmt)
    trainer.fit([batch] * 25, show_progress=False)
    got = losses(tmp_path / "metrics.csv")
    assert len(got) == 25 and all(math.isfinite(x) for x in got)
    assert sum(got[-5:]) / 5 < sum(got[:5]) / 5 - 0.1
    if amp == "fp16":
        assert trainer.scaler.get_scale() > 0  # the scaler stepped (and did not collapse to zero)
