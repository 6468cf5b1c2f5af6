"""What a training loader draws: chunks of the videos, block plans, the sampler and the seeds.

Sampling semantics (the DALI pipelines reproduce them, sharing :func:`plan_block` through the one
loader, ``selfee.data.loader``):

* Each video (its preprocessing time window) is cut into *chunks* at keyframes: a chunk's centre
  frames run from ``keyframe + k`` to the next chunk's start, so decoding it means seeking to its
  keyframe and reading forward ``len + 2k`` frames. Chunks are merged/split to about
  ``data.chunk_frames`` frames.
* A *block* of ``data.pool_batches`` batches is drawn from a pool: chunks are picked at random
  (weighted by size), ``data.chunk_fraction`` of each chunk's centres are taken at random, the pool
  is shuffled and cut into batches. The last chunk picked gives only the samples still needed,
  from a prefix of its centres, and only that prefix (+ k) is decoded. The decoder therefore
  produces about ``1 / chunk_fraction`` frames per sample, and the pool trades memory (the decoded
  frames of a block) for mixing: a batch holds about ``chunk_frames * chunk_fraction / pool_batches``
  samples of one chunk (near-duplicate frames).
* Shuffled mode: the pool's chunks come from all videos. ``inner_shuffle`` (the original's
  innerShuffle: every batch from a single video): up to ``data.inner_shuffle_videos`` videos are
  drawn per block, each batch is given one of them at random, and each video's batches are cut
  from a pool of that video's chunks. Consecutive batches, and BatchNorm's running statistics
  (what the embedding uses), thus span several videos, while a batch still holds samples of many
  chunks of its video.
* Block ``b`` depends only on (seed, split, rank, b), and step ``s`` uses block
  ``s // pool_batches``, so a resumed run sees exactly the batches of an uninterrupted one.
* A chunk that fails to decode is reported (once per video) and the block is drawn again from the
  same seed without that video. Whether a chunk decodes is a property of the file, so the block a
  resumed run draws is the same (``selfee.data.loader`` learns which chunks decode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from selfee.config import SelfeeConfig
from selfee.data.sources import VideoSource
from selfee.errors import SelfeeError

MAX_CHUNK = 1024  # frames; longer GOPs are split to bound the memory of one chunk


@dataclass(frozen=True)
class Chunk:
    video: int
    center_start: int  # window indices of the centre frames [start, stop)
    center_stop: int
    decode_start: int  # window indices of the frames to decode [start, stop)
    decode_stop: int

    @property
    def size(self) -> int:
        return self.center_stop - self.center_start


def split_range(n: int, holdout_fraction: float, split: str) -> tuple[int, int]:
    """Centre frames of a split: 'train' is the head of the window, 'eval' its last fraction."""
    n_eval = int(math.floor(n * holdout_fraction))
    if holdout_fraction > 0 and n_eval == 0 and n > 2:
        n_eval = 1
    if split == "train":
        return 0, n - n_eval
    if split == "eval":
        return n - n_eval, n
    if split == "all":
        return 0, n
    raise ValueError(f"unknown split {split!r}")


def plan_chunks(video: int, src: VideoSource, k: int, chunk_frames: int, lo: int, hi: int) -> list[Chunk]:
    """Keyframe-aligned chunks covering centre frames [lo, hi) of one video's window."""
    n = src.frames
    if hi <= lo:
        return []
    kf = src.info.keyframes - src.pre.start
    cuts = sorted({int(c) + k for c in kf if c > lo and lo < c + k < hi})
    bounds = [lo, *cuts, hi]
    merged: list[list[int]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):  # merge short GOPs (e.g. all-intra codecs)
        if merged and (b - merged[-1][0]) <= chunk_frames:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    chunks = []
    for a, b in merged:
        # A GOP is split only when it is very long: each part must be decoded from the keyframe.
        parts = math.ceil((b - a) / MAX_CHUNK) if (b - a) > MAX_CHUNK else 1
        edges = np.linspace(a, b, parts + 1).round().astype(int)
        for s, e in zip(edges[:-1], edges[1:]):
            if e > s:
                chunks.append(Chunk(video, int(s), int(e), max(0, int(s) - k), min(n, int(e) + k)))
    return chunks




class BatchPlan(NamedTuple):
    chunk: torch.Tensor  # index into BlockPlan.chunks, per sample
    video: torch.Tensor  # video index per sample
    frame: torch.Tensor  # window frame index of the centre, per sample


class BlockPlan(NamedTuple):
    chunks: list[Chunk]
    batches: list[BatchPlan]


def block_seed(seed: int, split: str, rank: int, block: int) -> int:
    split_id = {"train": 0, "eval": 1, "all": 2}[split]
    return int(np.random.SeedSequence([seed, split_id, rank, block]).generate_state(1, dtype=np.uint64)[0] >> 1)


def augment_seed(seed: int, rank: int, step: int) -> int:
    """The seed of step ``step``'s augmentation draws on ``rank`` (every pipeline draws the same parameters)."""
    return int(np.random.SeedSequence([seed, 7, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _pick_chunks(pool: list[Chunk], needed: int, fraction: float, k: int, g: torch.Generator):
    """Chunks of ``pool`` in a random order (weighted by size) until they give ``needed`` samples:
    (chunks, samples per chunk). The last chunk gives only the samples still needed, from a prefix
    of its centres just long enough for them at this fraction, and only that prefix (+ k) is
    decoded. A pool smaller than ``needed`` gives every centre of every chunk."""
    weights = torch.tensor([c.size for c in pool], dtype=torch.float64)
    order = torch.multinomial(weights, len(pool), replacement=False, generator=g).tolist()
    picked, counts, total = [], [], 0
    for i in order:
        c = pool[i]
        m = min(max(1, math.ceil(fraction * c.size)), needed - total)
        if m < math.ceil(fraction * c.size):
            p = min(c.size, math.ceil(m / fraction))
            c = replace(c, center_stop=c.center_start + p, decode_stop=min(c.decode_stop, c.center_start + p + k))
        picked.append(c)
        counts.append(m)
        total += m
        if total >= needed:
            break
    if total < needed:
        counts = [c.size for c in picked]
    return picked, counts


def _draw(picked: list[Chunk], counts: list[int], needed: int, g: torch.Generator):
    """``needed`` samples (chunk index, centre frame) from the picked chunks, in a random order."""
    cidx, frames = [], []
    for ci, (c, m) in enumerate(zip(picked, counts)):
        frames.append(torch.randperm(c.size, generator=g)[:m] + c.center_start)
        cidx.append(torch.full((m,), ci, dtype=torch.long))
    cidx_t, frame_t = torch.cat(cidx), torch.cat(frames)
    if cidx_t.numel() < needed:  # a short video: draw again from what there is
        extra = torch.randint(cidx_t.numel(), (needed - cidx_t.numel(),), generator=g)
        cidx_t, frame_t = torch.cat([cidx_t, cidx_t[extra]]), torch.cat([frame_t, frame_t[extra]])
    perm = torch.randperm(cidx_t.numel(), generator=g)[:needed]
    return cidx_t[perm], frame_t[perm]


def plan_block(
    chunks: list[list[Chunk]],
    batch_size: int,
    pool_batches: int,
    fraction: float,
    inner_shuffle: bool,
    generator: torch.Generator,
    k: int,
    inner_videos: int = 2,
) -> BlockPlan:
    """Choose chunks and centre frames for ``pool_batches`` batches (see the module docstring).

    ``k`` is the live-frame interval: a chunk shortened to the samples it gives still decodes
    ``k`` frames past its last centre. With ``inner_shuffle`` up to ``inner_videos`` videos are
    drawn (weighted by frames), each batch is given one of them at random, and each video's
    batches share a pool of its own chunks.
    """
    g = generator
    if not inner_shuffle:
        needed = batch_size * pool_batches
        picked, counts = _pick_chunks([c for cs in chunks for c in cs], needed, fraction, k, g)
        cidx, frame = _draw(picked, counts, needed, g)
        parts = [(cidx[i : i + batch_size], frame[i : i + batch_size]) for i in range(0, needed, batch_size)]
    else:
        w = torch.tensor([sum(c.size for c in cs) for cs in chunks], dtype=torch.float64)
        videos = torch.multinomial(w, min(inner_videos, len(chunks), pool_batches), replacement=False, generator=g)
        of_batch = videos[torch.randint(len(videos), (pool_batches,), generator=g)]  # the video of every batch
        picked, slots = [], {}
        for v in sorted(set(of_batch.tolist())):
            n = int((of_batch == v).sum())
            vp, vc = _pick_chunks(chunks[v], n * batch_size, fraction, k, g)
            cidx, frame = _draw(vp, vc, n * batch_size, g)
            cidx += len(picked)
            picked += vp
            slots[v] = [(cidx[i : i + batch_size], frame[i : i + batch_size]) for i in range(0, n * batch_size, batch_size)]
        parts = [slots[v].pop() for v in of_batch.tolist()]
    video_of = torch.tensor([c.video for c in picked], dtype=torch.long)
    return BlockPlan(picked, [BatchPlan(ci, video_of[ci], fr) for ci, fr in parts])


class Sampler:
    """Chunks of every video for one split and rank, and the block plans drawn from them."""

    def __init__(self, sources: list[VideoSource], cfg: SelfeeConfig, split: str = "train", rank: int = 0, world: int = 1):
        d = cfg.data
        self.cfg = cfg
        self.split = split
        self.rank = rank
        self.batch_size = cfg.optim.batch_size
        per_video = []
        for v, src in enumerate(sources):
            lo, hi = split_range(src.frames, d.holdout_fraction, split)
            per_video.append(plan_chunks(v, src, d.frame_interval, d.chunk_frames, lo, hi))
        if world > 1:  # each rank reads its own shard of the chunks
            flat = [c for cs in per_video for c in cs]
            mine = set(flat[rank::world])
            per_video = [[c for c in cs if c in mine] for cs in per_video]
        self.chunks = [cs for cs in per_video if cs]
        if not self.chunks:
            raise SelfeeError(f"no frames to sample in the '{split}' split (videos too short or holdout_fraction=0?)")
        # What decoding has shown about the chunks of the plans drawn so far (a property of the
        # files, so a resumed run learns the same): see ``block``.
        self.bad_chunks: set[Chunk] = set()
        self.good_chunks: set[Chunk] = set()

    def block(self, b: int) -> BlockPlan:
        """The plan of block ``b``, drawn from (seed, split, rank, b).

        A draw holding a chunk that does not decode is drawn again, from the same seed, without the
        videos of all its chunks that do not decode. A draw is returned while it holds chunks not
        yet decoded (the loader decodes them, records the outcome in ``bad_chunks`` /
        ``good_chunks`` and asks again), so the result depends on the files only, not on what
        earlier blocks happened to learn: a resumed run draws the same blocks.
        """
        d = self.cfg.data
        left_out: set[int] = set()
        while True:
            chunks = [cs for cs in self.chunks if cs[0].video not in left_out]
            if not chunks:
                raise SelfeeError(
                    f"every video of the '{self.split}' split failed to decode (block {b}; see the messages above)"
                )
            g = torch.Generator().manual_seed(block_seed(self.cfg.train.seed, self.split, self.rank, b))
            plan = plan_block(chunks, self.batch_size, d.pool_batches, d.chunk_fraction, d.inner_shuffle, g,
                              k=d.frame_interval, inner_videos=d.inner_shuffle_videos)
            bad = {c.video for c in plan.chunks if c in self.bad_chunks}
            if not bad or any(c not in self.bad_chunks and c not in self.good_chunks for c in plan.chunks):
                return plan
            left_out |= bad

