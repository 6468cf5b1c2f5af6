"""The reference video loader: live-frame batches straight from videos, with cheap random access.

Sampling semantics (the DALI pipelines reproduce them, sharing :func:`plan_block`):

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
  resumed run draws is the same.

Frames are decoded with PyAV, preprocessed, turned to grey (live frames) or kept RGB, and shrunk
once to the *working size* (``selfee.augment.working_size``); augmentation then runs batched on the
training device.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from selfee.augment import PendingViews, resize_uint8, two_views_async, working_size
from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError, VideoError
from selfee.live_frames import neighbor_indices, rgb_to_gray
from selfee.threads import cpu_count, worker_pool
from selfee.video import Preprocessor, VideoInfo, VideoReader, preprocessor_for

log = logging.getLogger("selfee")

# ---------------------------------------------------------------------------------------------
# Sources and chunks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSource:
    """A probed video and its preprocessing; sample indices are relative to its time window."""

    info: VideoInfo
    pre: Preprocessor
    # what the run has already said about this video (shared by every loader of the run: train, held-out,
    # the embedding's BatchNorm frames), so that each problem is reported once
    said: set = field(default_factory=set, compare=False, repr=False)

    @property
    def frames(self) -> int:
        return self.pre.frames

    @property
    def name(self) -> str:
        return self.info.path.name


def make_sources(infos: list[VideoInfo], cfg: SelfeeConfig, cache_dir=None) -> list[VideoSource]:
    """Sources with their preprocessing; ``cache_dir`` keeps per-video backgrounds beside a run's outputs.

    Raises :class:`VideoError` for a video whose time window or ROI cannot be used (the videos
    :func:`selfee.video.open_inputs` returns have been checked).
    """
    return [VideoSource(info, preprocessor_for(info, cfg, cfg.data.min_frames, cache_dir=cache_dir,
                                               grey=cfg.data.live_frames)) for info in infos]


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


# ---------------------------------------------------------------------------------------------
# Block planning (shared with the DALI pipelines)
# ---------------------------------------------------------------------------------------------


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

    @property
    def frames(self) -> int:
        return sum(c.size for cs in self.chunks for c in cs)

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


# ---------------------------------------------------------------------------------------------
# Decoding chunks (PyAV) into working-size frames
# ---------------------------------------------------------------------------------------------


def frames_to_samples(frames: torch.Tensor, pre: Preprocessor, live: bool, size: tuple[int, int]) -> torch.Tensor:
    """Decoded frames -> preprocessed T x C x h x w uint8 samples (C = 1 grey for live frames, else 3).

    ``frames``: T x H x W grey (what the decoders give in live-frame mode) or T x H x W x 3 RGB
    (turned grey here when ``live``).
    """
    if frames.ndim == 3:
        x = frames.unsqueeze(1)
    elif live:
        x = rgb_to_gray(frames, channels_last=True).unsqueeze(1)
    else:
        x = frames.permute(0, 3, 1, 2)
    return resize_uint8(pre(x), size)


class ChunkDecoder:
    """Decodes chunks with one PyAV reader per thread and video; counts decoded frames."""

    def __init__(self, sources: list[VideoSource], live: bool, size: tuple[int, int]):
        self.sources = sources
        self.live = live
        self.size = size
        self._local = threading.local()
        self._lock = threading.Lock()
        self.frames_decoded = 0

    def _reader(self, v: int) -> VideoReader:
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
        if v not in readers:
            readers[v] = VideoReader(self.sources[v].info, threads=1)
        return readers[v]

    def _drop_reader(self, v: int) -> None:
        reader = getattr(self._local, "readers", {}).pop(v, None)
        if reader is not None:  # a decoder that failed may be left in a bad state
            reader.close()

    def decode(self, chunk: Chunk) -> torch.Tensor:
        """T x C x h x w uint8 working-size frames of the chunk; :class:`ChunkDecodeError` if it does not decode."""
        src = self.sources[chunk.video]
        reader = self._reader(chunk.video)
        before = reader.frames_decoded
        start, stop = src.pre.start + chunk.decode_start, src.pre.start + chunk.decode_stop
        try:
            buffer = self._buffer(stop - start, src.info)
            frames = reader.read(start, stop, grey=self.live, buffer=buffer)
        except VideoError as exc:
            self._drop_reader(chunk.video)
            raise ChunkDecodeError(src.info.path, f"{exc.problem} in frames {start}-{stop - 1}", chunk) from None
        finally:
            with self._lock:
                self.frames_decoded += reader.frames_decoded - before
        want = stop - start
        if frames.shape[0] == 0:
            raise ChunkDecodeError(src.info.path, f"no frames could be decoded in frames {start}-{stop - 1}", chunk)
        if frames.shape[0] < want:  # a broken tail: repeat the last good frame
            log.warning("%s: only %d of frames %d-%d decoded", src.info.path, frames.shape[0], start, stop)
            frames = np.concatenate([frames, np.repeat(frames[-1:], want - frames.shape[0], axis=0)])
        try:
            samples = frames_to_samples(torch.from_numpy(frames), src.pre, self.live, self.size)
        except VideoError as exc:  # e.g. no frame of the background could be decoded
            raise ChunkDecodeError(src.info.path, exc.problem, chunk) from None
        if np.may_share_memory(samples.numpy(), buffer):  # no step copied the frames: they outlive the buffer
            samples = samples.clone()
        return samples

    def _buffer(self, frames: int, info: VideoInfo) -> np.ndarray:
        """This thread's full-size frame buffer for ``info``'s frame shape (reused from chunk to chunk:
        fresh arrays of this size cost as much in page faults as the conversion that fills them)."""
        shape = (info.height, info.width) if self.live else (info.height, info.width, 3)
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        buf = buffers.get(shape)
        if buf is None or len(buf) < frames:
            buf = buffers[shape] = np.empty((frames, *shape), np.uint8)
        return buf


class ChunkDecodeError(VideoError):
    """A chunk that cannot be decoded (the loader draws its block again without that video)."""

    def __init__(self, path, problem: str, chunk: Chunk):
        super().__init__(path, problem)
        self.chunk = chunk


class BlockDecodeError(SelfeeError):
    """Every chunk of a block was tried and these did not decode."""

    def __init__(self, errors: list[ChunkDecodeError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


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


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


class TrainBatch(NamedTuple):
    frames: torch.Tensor  # B x 3 x h x w uint8 (live frames or RGB) at the working size
    video: torch.Tensor  # B video indices
    frame: torch.Tensor  # B window frame indices of the centres


class ViewBatch(NamedTuple):
    view1: torch.Tensor  # B x 3 x H x W float in [0, 1] on the training device
    view2: torch.Tensor
    video: torch.Tensor
    frame: torch.Tensor


class ReferenceLoader:
    """Infinite iterator of :class:`TrainBatch` for steps ``start_step, start_step + 1, ...``.

    The next block is decoded in the background while the current one is consumed.
    """

    def __init__(
        self,
        sources: list[VideoSource],
        cfg: SelfeeConfig,
        split: str = "train",
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.sources = sources
        self.cfg = cfg
        self.sampler = Sampler(sources, cfg, split, rank, world)
        d = cfg.data
        self.size = working_size(d.input_size, cfg.augment.crop_scale[0]) if cfg.augment.enabled else tuple(d.input_size)
        self.decoder = ChunkDecoder(sources, d.live_frames, self.size)
        self.step = start_step
        self.samples = 0
        self._block_decoded = 0
        self._block_samples = 0
        self._pool = worker_pool(d.decode_threads, "selfee-decode")
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
            except ChunkDecodeError as exc:  # a decoder that stops at the first failure (the DALI lanes)
                self._learn(b, [exc], tried_all=False)
        return plan, batches, self.frames_decoded - before

    def _try_decode(self, chunk: Chunk):
        try:
            return self.decoder.decode(chunk)
        except ChunkDecodeError as exc:
            return exc

    def _check(self, chunk: Chunk) -> ChunkDecodeError | None:
        try:
            self._checker.decode(chunk)
        except ChunkDecodeError as exc:
            return exc
        return None

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
                self._checker = ChunkDecoder(self.sources, self.cfg.data.live_frames, self.size)
            errors = errors + [e for e in self._pool.map(self._check, rest) if e is not None]
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

    def _build(self, b: int):
        plan = self.sampler.block(b)
        decoded = list(self._pool.map(self._try_decode, plan.chunks))
        errors = [d for d in decoded if isinstance(d, ChunkDecodeError)]
        if errors:
            raise BlockDecodeError(errors)
        return plan, assemble(plan, decoded, self.sources, self.cfg.data.frame_interval, self.cfg.data.live_frames)

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
                self.samples += len(bp.frame)
                yield TrainBatch(batches[i], bp.video, bp.frame)
            del plan, batches, bp  # free this block before the next is fetched: one block in use, one prepared

    def close(self):
        if self._next is not None:
            self._next[1].cancel()
        self._planner.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)


class TorchPipeline:
    """Reference pipeline: ReferenceLoader + batched augmentation on the training device."""

    name = "torch"

    def __init__(self, sources, cfg: SelfeeConfig, device, split="train", start_step=0, rank=0, world=1):
        self.cfg = cfg
        self.device = torch.device(device)
        self.loader = ReferenceLoader(sources, cfg, split, start_step, rank, world)
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


def augment_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, 7, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SyntheticPipeline:
    """Random views already on the device: measures compute without decode or augmentation."""

    name = "synthetic"

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


def build_pipeline(cfg: SelfeeConfig, sources, device, split="train", start_step=0, rank=0, world=1):
    """The training data pipeline chosen by ``train.pipeline``; all yield :class:`ViewBatch`.

    ``auto`` takes DALI for a GPU where DALI is installed (NVDEC decode, GPU augmentation) and the
    reference torch pipeline on the CPU, where it measured faster than DALI's CPU lane
    (bench/RESULTS.md); ``dali`` forces DALI (its CPU lane on the CPU).
    """
    from selfee._deps import dali_component

    if cfg.train.pipeline == "synthetic":
        return SyntheticPipeline(cfg, device)
    dali = dali_component(cfg.train.pipeline, "selfee.pipelines.train", "DaliTrainPipeline", "the DALI training pipeline",
                          device)
    if dali is not None:
        return dali(sources, cfg, device, split, start_step, rank, world)
    return TorchPipeline(sources, cfg, device, split, start_step, rank, world)
