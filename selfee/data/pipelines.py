"""Training data pipelines, all iterables of :class:`ViewBatch` (two augmented views per sample on the
training device): the torch reference, the synthetic one (compute only), and :func:`build_pipeline`,
the only switch between them and DALI's (``selfee.pipelines.train.DaliTrainPipeline``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from selfee.augment import PendingViews, two_views_async
from selfee.backend import Backend, choose_backend
from selfee.config import SelfeeConfig
from selfee.data.loader import BlockLoader, TrainBatch
from selfee.data.sampling import augment_seed
from selfee.threads import cpu_count, worker_pool


class ViewBatch(NamedTuple):
    """Two augmented views of a batch, with the video and window frame of every sample."""

    view1: torch.Tensor  # B x 3 x H x W float in [0, 1] on the training device
    view2: torch.Tensor
    video: torch.Tensor
    frame: torch.Tensor


class TorchPipeline:
    """Reference pipeline: the block loader over PyAV + batched augmentation on the training device."""

    name = "torch"
    choice: dict | None = None  # how build_pipeline chose it

    def __init__(self, sources, cfg: SelfeeConfig, device, split="train", start_step=0, rank=0, world=1):
        self.cfg = cfg
        self.device = torch.device(device)
        self.loader = BlockLoader(sources, cfg, split, start_step, rank, world)
        self.rank = rank
        # On the CPU, groups of samples are augmented on worker threads (one core each) while the
        # next batch is gathered; on a GPU the batch is augmented there, from the calling thread.
        self._threads = cfg.data.augment_threads or cpu_count()
        self._augmenters = worker_pool(self._threads, "selfee-augment") if self.device.type == "cpu" else None

    @property
    def stats(self) -> dict:
        return {"frames_decoded": self.loader.frames_decoded, "decoded_per_sample": self.loader.decoded_per_sample}

    def _start(self, batch: TrainBatch):
        step = self.loader.step - 1
        pin = self.device.type == "cuda"
        frames = batch.frames.pin_memory() if pin else batch.frames
        frames = frames.to(self.device, non_blocking=True)
        g = torch.Generator(device=self.device).manual_seed(augment_seed(self.cfg.train.seed, self.rank, step))
        views = two_views_async(frames, self.cfg.augment, self.cfg.data.input_size, g,
                                channels_last=self.cfg.train.channels_last, executor=self._augmenters,
                                groups=self._threads)
        return views, batch

    def __iter__(self) -> Iterator[ViewBatch]:
        pending = None  # with worker threads, one batch is augmented while the next is gathered
        for batch in self.loader:
            started = self._start(batch)
            if self._augmenters is None:
                yield self._finish(*started)
                continue
            if pending is not None:
                yield self._finish(*pending)
            pending = started

    @staticmethod
    def _finish(views: PendingViews, batch: TrainBatch) -> ViewBatch:
        v1, v2 = views.result()
        return ViewBatch(v1, v2, batch.video, batch.frame)

    def close(self):
        self.loader.close()
        if self._augmenters is not None:
            self._augmenters.shutdown(wait=True, cancel_futures=True)



class SyntheticPipeline:
    """Random views already on the device: measures compute without decode or augmentation."""

    name = "synthetic"
    choice: dict | None = None

    def __init__(self, cfg: SelfeeConfig, device, n_distinct: int = 4):
        self.cfg = cfg
        self.device = torch.device(device)
        b = cfg.optim.batch_size
        h, w = cfg.data.input_size
        g = torch.Generator(device="cpu").manual_seed(cfg.train.seed)
        self._views = [torch.rand(b, 3, h, w, generator=g).to(self.device) for _ in range(n_distinct + 1)]
        if cfg.train.channels_last:
            self._views = [v.contiguous(memory_format=torch.channels_last) for v in self._views]
        self._ids = torch.zeros(b, dtype=torch.long)
        self.stats = {}

    def __iter__(self) -> Iterator[ViewBatch]:
        i = 0
        n = len(self._views)
        while True:
            yield ViewBatch(self._views[i % n], self._views[(i + 1) % n], self._ids, self._ids)
            i += 1

    def close(self):
        pass



def choose_pipeline(cfg: SelfeeConfig, device) -> Backend:
    """Which pipeline ``train.pipeline`` gets on ``device`` (see :func:`selfee.backend.choose_backend`):
    ``auto`` takes DALI for a GPU where DALI is installed and runs there (NVDEC decode, GPU
    augmentation) and the torch reference on the CPU, where it measured faster than DALI's CPU lane
    (bench/RESULTS.md); ``dali`` forces DALI (its CPU lane on the CPU)."""
    if cfg.train.pipeline == "synthetic":
        return Backend("synthetic", "train.pipeline=synthetic")
    return choose_backend(cfg.train.pipeline, device, "the DALI training pipeline", "the torch pipeline",
                          "selfee.pipelines.train:DaliTrainPipeline", option="train.pipeline")


def build_pipeline(cfg: SelfeeConfig, sources, device, split="train", start_step=0, rank=0, world=1,
                   backend: Backend | None = None):
    """The training data pipeline chosen by ``train.pipeline`` (:func:`choose_pipeline`, or ``backend``
    when the caller chose already); all yield :class:`ViewBatch`, and each records the choice in
    ``choice`` (for run.json)."""
    backend = backend or choose_pipeline(cfg, device)
    if backend.name == "synthetic":
        pipe = SyntheticPipeline(cfg, device)
    elif backend.name == "dali":
        pipe = backend.impl(sources, cfg, device, split, start_step, rank, world)
    else:
        pipe = TorchPipeline(sources, cfg, device, split, start_step, rank, world)
    pipe.choice = backend.record(cfg.train.pipeline)
    return pipe
