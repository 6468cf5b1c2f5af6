"""The CPU presets: the paper's fly and mouse semantics with a budget for 2 CPU cores, the backbone embedding."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from selfee.config import PRESETS, SelfeeConfig
from selfee.data import Sampler, VideoSource

SEMANTICS = ("frame_interval", "inner_shuffle")  # what makes a preset fly or mouse (besides the input size)


@pytest.mark.parametrize("name, paper", [("fly-cpu", "fly"), ("mouse-cpu", "mouse")])
def test_cpu_presets_keep_the_papers_semantics_with_a_cpu_budget(name, paper):
    cpu, ref = SelfeeConfig.load(preset=name), SelfeeConfig.load(preset=paper)
    for field in SEMANTICS:
        assert getattr(cpu.data, field) == getattr(ref.data, field), field
    assert cpu.data.live_frames and cpu.data.chunk_frames == ref.data.chunk_frames
    # the input keeps the setting's aspect ratio at a CPU size
    (h, w), (rh, rw) = cpu.data.input_size, ref.data.input_size
    assert h * w <= 128 * 96 and h * rw == w * rh
    # the budget: ResNet-18 without ImageNet, bf16, 400 steps of 32 (docs/quality.md: 7-9 min on 2 shared cores)
    assert (cpu.model.arch, cpu.model.init, cpu.train.amp) == ("resnet18", "none", "bf16")
    assert cpu.optim.steps * cpu.optim.batch_size <= 400 * 32
    assert cpu.embed.features == "backbone" and ref.embed.features == "projector"
    assert cpu.train.embed_bn_frames > 0 and cpu.augment.turbo_p == 0 and cpu.augment.hue == 0


def test_the_paper_presets_keep_the_papers_recipe():
    for name in ("fly", "mouse"):
        assert set(PRESETS[name]) == {"data"}  # semantics only: model, loss, optimiser and embedding as the paper
        cfg = SelfeeConfig.load(preset=name)
        assert cfg.embed.features == "projector" and cfg.model.arch == "resnet50" and cfg.augment.turbo_p > 0


def _fake_source(n: int, gop: int) -> VideoSource:
    info = SimpleNamespace(keyframes=np.arange(0, n, gop), path=Path("v.mp4"))
    return VideoSource(info, SimpleNamespace(frames=n, start=0))


def test_fly_cpu_batches_mix_chunks_of_a_short_video():
    """On a video like the fly study's (3000 frames, keyframes every 250) a batch holds a few samples of each of
    many chunks. The tiny preset's pool of 4 batches does not: one chunk gives 125 samples (chunk_fraction 0.5),
    so a batch of 32 was 10 s of video, nearly one behaviour."""
    def most_of_one_chunk(preset):
        sampler = Sampler([_fake_source(3000, 250)], SelfeeConfig.load(preset=preset))
        return np.mean([int(torch.bincount(bp.chunk).max()) for b in range(4) for bp in sampler.block(b).batches])

    assert most_of_one_chunk("fly-cpu") <= 8  # of 32
    assert most_of_one_chunk("tiny") > 20
