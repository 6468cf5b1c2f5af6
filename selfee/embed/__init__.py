"""Embedding every frame of videos: ordered live-frame batches, an Embedder, streaming atomic outputs.

- :mod:`~selfee.embed.source`: the frames, in order, with their indices and times (:class:`EmbedBatch`).
- :mod:`~selfee.embed.embedder`: the :class:`Embedder` interface, its host/device plumbing, :class:`TorchEmbedder`.
- :mod:`~selfee.embed.outputs`: a video's ``.npy``/``.csv``/record files and when a rerun may skip them.
- :mod:`~selfee.embed.run`: one video (:func:`embed_video`), many over ``torchrun`` ranks (:func:`embed_videos`).

Opening weights (a checkpoint or an export) as an Embedder is ``selfee.export.open_embedder``'s
job; this package runs whatever Embedder it is given and imports no export code.
"""

from selfee.embed.embedder import (
    Embedder,
    HostEmbedder,
    HostToDevice,
    Pending,
    Ready,
    Result,
    TorchEmbedder,
    device_to_host,
)
from selfee.embed.outputs import NpyStreamWriter, VideoOutputs, WindowPool, completed, format_index, video_key
from selfee.embed.run import DIST_TIMEOUT, Opener, embed_video, embed_videos, shard
from selfee.embed.source import EmbedBatch, embed_batches, iter_embed_batches

__all__ = [
    "DIST_TIMEOUT", "EmbedBatch", "Embedder", "HostEmbedder", "HostToDevice", "NpyStreamWriter", "Opener", "Pending",
    "Ready", "Result", "TorchEmbedder", "VideoOutputs", "WindowPool", "completed", "device_to_host", "embed_batches",
    "embed_video", "embed_videos", "format_index", "iter_embed_batches", "shard", "video_key",
]
