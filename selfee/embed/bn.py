"""The embedding's BatchNorm statistics: plain frames spread over whole videos, and an encoder fitted to them.

Training leaves BatchNorm statistics of augmented views; the embedding runs on plain frames
(live frames resized to the input size), so the trainer re-estimates the statistics on
``train.embed_bn_frames`` of them at each checkpoint (``embed_bn``, see
:func:`selfee.model.embedding_bn_stats`). :func:`plain_frames` is where those frames come from,
for the trainer and for the untrained baseline of ``evaluate`` alike, so that both encoders embed
with statistics of the same kind of frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from selfee.config import SelfeeConfig

PLAIN_CHUNKS = 64  # chunks the embedding's BatchNorm frames are spread over, at most


def plain_frames(cfg: SelfeeConfig, sources, device, rank: int = 0, world: int = 1,
                 backend=None) -> Iterator[torch.Tensor]:
    """Batches of un-augmented training frames (live frames resized to the input size): what the
    embedding's BatchNorm statistics are re-estimated on (``train.embed_bn_frames`` of them).

    One pool holds them all, shuffled into batches, and they are spread over many chunks: each chunk
    gives only ``n / min(frames, PLAIN_CHUNKS * chunk_frames)`` of its centres, so the ``n`` frames
    come from up to :data:`PLAIN_CHUNKS` chunks (all of a short video's) instead of the
    ``n / (chunk_fraction * chunk_frames)`` that training's fraction would give (3 chunks, 20 s of a
    2-minute video, for 256 frames): statistics of a few seconds of video are not those of the
    videos, and per-batch variances of one chunk miss the variance between chunks. ``backend`` is
    the pipeline choice already made for the run (:func:`selfee.data.choose_pipeline`), if any.
    """
    from selfee.data import build_pipeline

    n, b = cfg.train.embed_bn_frames, cfg.optim.batch_size
    total = max(1, sum(s.frames for s in sources))
    fraction = min(1.0, n / min(total, PLAIN_CHUNKS * cfg.data.chunk_frames))
    pcfg = cfg.replace(**{"augment.enabled": False, "data.pool_batches": max(1, math.ceil(n / b)),
                          "data.chunk_fraction": fraction})
    pipe = build_pipeline(pcfg, sources, device, "train", 0, rank, world, backend)
    try:
        for batch in pipe:
            yield batch.view1
    finally:
        pipe.close()


def fit_embedding_bn(encoder: torch.nn.Module, cfg: SelfeeConfig, sources) -> int:
    """Give ``encoder`` (in place) BatchNorm statistics of ``train.embed_bn_frames`` plain frames of
    ``sources`` (on the CPU), as training gives a checkpoint's; returns the frames used (0: unchanged)."""
    from selfee.model import embedding_bn_stats

    if not cfg.train.embed_bn_frames or not sources:
        return 0
    stats, seen = embedding_bn_stats(encoder, plain_frames(cfg, sources, torch.device("cpu")),
                                     cfg.train.embed_bn_frames)
    if seen < 2:
        return 0
    own = encoder.state_dict()
    own.update(stats)
    encoder.load_state_dict(own)
    return seen
