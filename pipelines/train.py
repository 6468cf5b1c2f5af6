"""The DALI training pipeline: batches of two augmented live-frame views, NVDEC + GPU (or DALI CPU).

It shares everything but execution with the reference (``selfee.data``): the one block loader
(``selfee.data.loader.BlockLoader``: chunk plans, innerShuffle or shuffled blocks, rank shards,
resumable block seeds, decode failures, live-frame assembly) runs over the DALI chunk source
(``selfee.pipelines.decode.DaliChunkDecoder``, a ``selfee.data.decode.ChunkSource``), with the same
per-frame preprocessing and grey rule and the same augmentation parameter draws per step; DALI runs
the augmentation graph (``selfee.pipelines.augment``). Views come out channels-last on the training
device. Whether DALI runs at all is decided before, by ``selfee.data.build_pipeline``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from selfee.augment import sample_params
from selfee.config import SelfeeConfig
from selfee.data import BlockLoader, ViewBatch, augment_seed, sample_size
from selfee.pipelines.augment import DaliAugmenter
from selfee.pipelines.decode import DaliChunkDecoder
from selfee.runtime import background, indexed


class DaliTrainPipeline:
    """Iterable of :class:`selfee.data.ViewBatch` for steps ``start_step, start_step + 1, ...``.

    It assumes DALI runs on ``device``: ``selfee.data.build_pipeline`` (through
    ``selfee.backend.choose_backend``) checks that first, and takes the torch pipeline where it does not.
    """

    name = "dali"
    choice: dict | None = None  # how build_pipeline chose it

    def __init__(self, sources, cfg: SelfeeConfig, device, split="train", start_step=0, rank=0, world=1,
                 cpu_decoder: str = "auto", prefetch: int = 2):
        self.cfg = cfg
        self.device = indexed(device)
        self.rank = rank
        self.prefetch = prefetch
        decoder = DaliChunkDecoder(sources, cfg.data.live_frames, sample_size(cfg), self.device,
                                   cpu_decoder=cpu_decoder, threads=cfg.data.decode_threads)
        self.loader = BlockLoader(sources, cfg, split, start_step, rank, world, decoder=decoder)
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
