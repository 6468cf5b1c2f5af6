"""The DALI training pipeline: batches of two augmented live-frame views, NVDEC + GPU (or DALI CPU).

It shares everything but execution with the reference (``selfee.data``): the same ``Sampler`` (chunk
plans, innerShuffle or shuffled blocks, rank shards, resumable block seeds), the same per-frame
preprocessing and grey rule, the same live-frame assembly and the same augmentation parameter
draws per step. DALI decodes the chunks (``selfee.pipelines.decode``) and runs the augmentation
graph (``selfee.pipelines.augment``); views come out channels-last on the training device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from selfee.augment import sample_params
from selfee.config import SelfeeConfig
from selfee.data import ReferenceLoader, TorchPipeline, ViewBatch, assemble, augment_seed
from selfee.errors import SelfeeError
from selfee.pipelines.augment import DaliAugmenter
from selfee.pipelines.backend import backend_error
from selfee.pipelines.decode import DaliChunkDecoder
from selfee.runtime import background, indexed

log = logging.getLogger("selfee")


class DaliLoader(ReferenceLoader):
    """The reference loader (plans, prefetch of the next block, step counting) with DALI decoding."""

    def __init__(self, sources, cfg: SelfeeConfig, device: torch.device, split="train", start_step=0, rank=0,
                 world=1, cpu_decoder: str = "auto"):
        super().__init__(sources, cfg, split, start_step, rank, world)
        self.decoder = DaliChunkDecoder(sources, cfg.data.live_frames, self.size, device, cpu_decoder=cpu_decoder,
                                        threads=cfg.data.decode_threads)

    def _build(self, b: int):
        plan = self.sampler.block(b)
        decoded = self.decoder.decode_many(plan.chunks)
        return plan, assemble(plan, decoded, self.sources, self.cfg.data.frame_interval, self.cfg.data.live_frames)

    def close(self):
        super().close()
        self.decoder.close()


class DaliTrainPipeline:
    """Iterable of :class:`selfee.data.ViewBatch` for steps ``start_step, start_step + 1, ...``.

    With ``train.pipeline=auto``, a machine where DALI cannot run (on the requested device) gets the
    torch reference pipeline instead, with a log line saying why.
    """

    name = "dali"

    def __new__(cls, sources, cfg: SelfeeConfig, device, *args, **kwargs):
        dev = indexed(device)  # a bare "cuda" gets its index: DALI needs the GPU's number
        err = backend_error(dev.type, dev.index if dev.type == "cuda" else None)
        if err is None:
            return super().__new__(cls)
        if cfg.train.pipeline == "auto":
            log.warning("DALI cannot run on %s (%s); using the torch pipeline", dev, err)
            return TorchPipeline(sources, cfg, device, *args, **kwargs)
        raise SelfeeError(f"train.pipeline=dali: DALI cannot run on {dev} ({err})")

    def __init__(self, sources, cfg: SelfeeConfig, device, split="train", start_step=0, rank=0, world=1,
                 cpu_decoder: str = "auto", prefetch: int = 2):
        self.cfg = cfg
        self.device = indexed(device)
        self.rank = rank
        self.prefetch = prefetch
        self.loader = DaliLoader(sources, cfg, self.device, split, start_step, rank, world, cpu_decoder)
        self.augmenter = DaliAugmenter(cfg.augment, cfg.optim.batch_size, cfg.data.input_size, self.device,
                                       num_threads=max(1, cfg.data.decode_threads))
        self._iter = None

    @property
    def lanes(self) -> dict[str, str]:
        return {self.loader.sources[v].name: lane for v, lane in self.loader.decoder.lanes.items()}

    @property
    def stats(self) -> dict:
        return {
            "frames_decoded": self.loader.frames_decoded,
            "decoded_per_sample": self.loader.decoded_per_sample,
            "decode_lanes": self.lanes,
        }

    def _batches(self) -> Iterator[ViewBatch]:
        cfg = self.cfg
        for batch in self.loader:
            step = self.loader.step - 1
            g = torch.Generator().manual_seed(augment_seed(cfg.train.seed, self.rank, step))
            p1 = p2 = None
            if cfg.augment.enabled:  # the reference's draws, in its order (view 1, then view 2)
                hw = tuple(batch.frames.shape[-2:])
                p1 = sample_params(len(batch.frame), hw, cfg.augment, g)
                p2 = sample_params(len(batch.frame), hw, cfg.augment, g)
            v1, v2 = self.augmenter(batch.frames, p1, p2, channels_last=cfg.train.channels_last)
            yield ViewBatch(v1.to(self.device), v2.to(self.device), batch.video, batch.frame)

    def __iter__(self) -> Iterator[ViewBatch]:
        self._iter = background(self._batches(), depth=self.prefetch) if self.prefetch else self._batches()
        return self._iter

    def close(self):
        if self._iter is not None:
            self._iter.close()
        self.loader.close()
