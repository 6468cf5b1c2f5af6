"""Training data: live-frame batches straight from videos, with cheap random access.

One concept per module, in the order a batch is made:

* ``sources``: a probed video with its preprocessing (:class:`VideoSource`, :func:`make_sources`);
* ``sampling``: keyframe-aligned chunks, block plans, the :class:`Sampler`, the per-block and
  per-step seeds (the sampling semantics are described there);
* ``decode``: the :class:`ChunkSource` protocol (chunks -> working-size frames) and its PyAV
  implementation :class:`ChunkDecoder` (DALI's is ``selfee.pipelines.decode.DaliChunkDecoder``);
* ``loader``: the one :class:`BlockLoader` (any chunk source, decode failures, prefetch of the next block);
* ``pipelines``: the torch and synthetic pipelines and :func:`build_pipeline`, the only switch
  (DALI's pipeline is ``selfee.pipelines.train.DaliTrainPipeline``).
"""

from selfee.data.decode import (
    BlockDecodeError,
    ChunkDecodeError,
    ChunkDecoder,
    ChunkSource,
    frames_to_samples,
)
from selfee.data.loader import BlockBatches, BlockLoader, TrainBatch, assemble, sample_size
from selfee.data.pipelines import SyntheticPipeline, TorchPipeline, ViewBatch, build_pipeline, choose_pipeline
from selfee.data.sampling import (
    BatchPlan,
    BlockPlan,
    Chunk,
    Sampler,
    augment_seed,
    block_seed,
    plan_block,
    plan_chunks,
    split_range,
)
from selfee.data.sources import VideoSource, make_sources

__all__ = [
    "BatchPlan", "BlockBatches", "BlockDecodeError", "BlockLoader", "BlockPlan", "Chunk", "ChunkDecodeError",
    "ChunkDecoder", "ChunkSource", "Sampler", "SyntheticPipeline", "TorchPipeline", "TrainBatch", "VideoSource",
    "ViewBatch", "assemble", "augment_seed", "block_seed", "build_pipeline", "choose_pipeline", "frames_to_samples",
    "make_sources", "plan_block", "plan_chunks", "sample_size", "split_range",
]
