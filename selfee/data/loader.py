"""The one block loader: batches of live frames for steps ``start_step, start_step + 1, ...`` over any
:class:`selfee.data.decode.ChunkSource` (PyAV here, DALI in ``selfee.pipelines.train``).

The loader draws block plans (``selfee.data.sampling.Sampler``), has the chunk source decode their
chunks, learns which chunks do not decode (so that the block is drawn again without their videos),
and gathers each batch from the decoded chunks when it is read. The next block is decoded in the
background while the current one is consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from selfee.augment import working_size
from selfee.config import SelfeeConfig
from selfee.data.decode import BlockDecodeError, ChunkDecodeError, ChunkDecoder, ChunkSource
from selfee.data.sampling import BlockPlan, Sampler
from selfee.data.sources import VideoSource
from selfee.live_frames import neighbor_indices

log = logging.getLogger("selfee")


class TrainBatch(NamedTuple):
    frames: torch.Tensor  # B x 3 x h x w uint8 (live frames or RGB) at the working size
    video: torch.Tensor  # B video indices
    frame: torch.Tensor  # B window frame indices of the centres


def sample_size(cfg: SelfeeConfig) -> tuple[int, int]:
    """The size chunks are decoded to: the working size when augmenting (crops are cut from it), else the input size."""
    d = cfg.data
    return working_size(d.input_size, cfg.augment.crop_scale[0]) if cfg.augment.enabled else tuple(d.input_size)


class BlockBatches(Sequence):
    """The batches of a block, each gathered from the decoded chunks when it is read.

    A block thus holds its decoded frames only (about ``1 / chunk_fraction`` grey frames per
    sample), not also every assembled batch (3 frames per sample).
    """

    def __init__(self, plan: BlockPlan, decoded: list[torch.Tensor], nframes: torch.Tensor, k: int, live: bool):
        self.plan = plan
        self.decoded = decoded  # per chunk: T x C x h x w uint8, frame i = window frame decode_start + i
        self.nframes = nframes
        self.k = k
        self.live = live
        self._first = torch.tensor([c.decode_start for c in plan.chunks])
        # the unit copied: one grey plane (h x w, three per live frame) or one RGB frame (3 x h x w)
        units = [d.select(1, 0) for d in decoded] if live else decoded
        # NumPy copies on the CPU: one thread (a torch copy of a frame would fork a thread team)
        self._units = [u.numpy() for u in units] if all(u.device.type == "cpu" for u in units) else units

    def __len__(self) -> int:
        return len(self.plan.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        """B x 3 x h x w uint8: live frames (or RGB frames) of batch ``i``."""
        bp = self.plan.batches[i]
        first = self._first[bp.chunk]
        if self.live:
            local = neighbor_indices(bp.frame, self.k, self.nframes[bp.video]) - first.unsqueeze(1)  # B x 3
        else:
            local = (bp.frame - first).unsqueeze(1)  # B x 1
        ref = self._units[int(bp.chunk[0])]
        shape = (local.numel(), *ref.shape[1:])
        out = np.empty(shape, np.uint8) if isinstance(ref, np.ndarray) else ref.new_empty(shape)
        # One copy per unit: faster on the CPU than advanced indexing of uint8 frames, and no
        # concatenation of the block's chunks is needed.
        r = 0
        for c, units in zip(bp.chunk.tolist(), local.tolist()):
            src = self._units[c]
            for u in units:
                out[r] = src[u]
                r += 1
        out = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
        return out.view(len(bp.frame), 3, *ref.shape[-2:])


def assemble(plan: BlockPlan, decoded: list[torch.Tensor], sources: list[VideoSource], k: int, live: bool) -> BlockBatches:
    """Live frames (or RGB frames) of every batch of a block: a sequence of B x 3 x h x w uint8,
    gathered from ``decoded`` (one tensor per chunk of ``plan``) when each batch is read."""
    if len(decoded) != len(plan.chunks):
        raise ValueError(f"{len(decoded)} decoded chunks for a plan of {len(plan.chunks)}")
    return BlockBatches(plan, decoded, torch.tensor([s.frames for s in sources]), k, live)



class BlockLoader:
    """Infinite iterator of :class:`TrainBatch` for steps ``start_step, start_step + 1, ...``.

    ``decoder`` is the chunk source (it must decode to :func:`sample_size`; the loader closes it);
    by default PyAV on ``data.decode_threads`` threads. A source that stops at the first chunk that
    does not decode gets the block's other chunks tried with PyAV, so that which videos a block
    leaves out never depends on the source (see :meth:`_learn`).
    """

    def __init__(
        self,
        sources: list[VideoSource],
        cfg: SelfeeConfig,
        split: str = "train",
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        decoder: ChunkSource | None = None,
    ):
        self.sources = sources
        self.cfg = cfg
        try:
            self.sampler = Sampler(sources, cfg, split, rank, world)
        except Exception:
            if decoder is not None:  # the loader owns it
                decoder.close()
            raise
        d = cfg.data
        self.size = sample_size(cfg)
        if decoder is None:
            decoder = ChunkDecoder(sources, d.live_frames, self.size, threads=d.decode_threads)
        self.decoder = decoder
        self.step = start_step
        self._block_decoded = 0
        self._block_samples = 0
        self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfee-block")
        self._next = None  # (block index, future) of the block being prepared
        self._checker: ChunkDecoder | None = None  # PyAV, to try the other chunks of a failed block

    @property
    def frames_decoded(self) -> int:
        return self.decoder.frames_decoded

    @property
    def decoded_per_sample(self) -> float:
        """Frames the decoder produced per sample drawn, over the blocks handed out so far."""
        return self._block_decoded / max(1, self._block_samples)

    def _build_counted(self, b: int):
        # Blocks are built one at a time on the planner thread, so the counter difference is this block's.
        before = self.frames_decoded
        while True:
            try:
                plan, batches = self._build(b)
                break
            except BlockDecodeError as exc:  # every chunk was tried
                self._learn(b, exc.errors, tried_all=True)
            except ChunkDecodeError as exc:  # a source that stops at the first failure (the DALI lanes)
                self._learn(b, [exc], tried_all=False)
        return plan, batches, self.frames_decoded - before

    def _build(self, b: int):
        plan = self.sampler.block(b)
        decoded = self.decoder.decode_many(plan.chunks)
        return plan, assemble(plan, decoded, self.sources, self.cfg.data.frame_interval, self.cfg.data.live_frames)

    def _learn(self, b: int, errors: list[ChunkDecodeError], tried_all: bool) -> None:
        """Record which chunks of block ``b``'s failed draw decode, so that ``Sampler.block`` draws again.

        Every chunk of the draw must be known: which videos a block leaves out may not depend on
        which failure surfaced first. One line per video names the file, the first time.
        """
        s = self.sampler
        plan = s.block(b)  # the draw that failed: nothing was recorded since it was made
        failed = {e.chunk for e in errors}
        if not failed <= set(plan.chunks):
            raise errors[0]  # not a chunk of this draw: nothing to learn from it
        tried = set(plan.chunks)
        if not tried_all:
            rest = [c for c in plan.chunks if c not in failed and c not in s.good_chunks and c not in s.bad_chunks]
            if self._checker is None:
                self._checker = ChunkDecoder(self.sources, self.cfg.data.live_frames, self.size,
                                             threads=self.cfg.data.decode_threads)
            try:
                self._checker.decode_many(rest)
            except BlockDecodeError as exc:
                errors = errors + exc.errors
            failed = {e.chunk for e in errors}
            tried = failed | set(rest)
        s.bad_chunks = (s.bad_chunks - tried) | failed
        s.good_chunks = (s.good_chunks - failed) | (tried - failed)
        for e in errors:
            said = self.sources[e.chunk.video].said
            if "decode failure" not in said:
                said.add("decode failure")
                what = "the held-out loss" if s.split == "eval" else "training"
                log.warning("%s; %s goes on without this video where it does not decode", e, what)
            else:
                log.debug("%s", e)

    def _block(self, b: int):
        if self._next is None or self._next[0] != b:
            self._next = (b, self._planner.submit(self._build_counted, b))
        plan, batches, decoded = self._next[1].result()
        self._next = (b + 1, self._planner.submit(self._build_counted, b + 1))
        self._block_decoded += decoded
        self._block_samples += sum(len(bp.frame) for bp in plan.batches)
        return plan, batches

    def __iter__(self) -> Iterator[TrainBatch]:
        pb = self.cfg.data.pool_batches
        while True:
            b, off = divmod(self.step, pb)
            plan, batches = self._block(b)
            for i in range(off, pb):
                bp = plan.batches[i]
                self.step += 1
                yield TrainBatch(batches[i], bp.video, bp.frame)
            del plan, batches, bp  # free this block before the next is fetched: one block in use, one prepared

    def close(self):
        if self._next is not None:
            self._next[1].cancel()
        self._planner.shutdown(wait=True, cancel_futures=True)
        self.decoder.close()
        if self._checker is not None:
            self._checker.close()
