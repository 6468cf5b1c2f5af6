"""The DALI embedding source: every frame of a video in order, decoded by NVDEC (or DALI's CPU decoder).

DALI streams the encoded file in sequences of consecutive frames (``fn.experimental.inputs.video``),
so memory stays flat however long the video; the sequences go through the reference's rolling
live-frame buffer (``selfee.embed.source.iter_embed_batches``), so frame indices, timestamps, edges and
counts are the reference's. Decode overlaps inference through ``selfee.runtime.background``, which
``selfee.embed.source.prefetched`` wraps around this source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from selfee.config import SelfeeConfig
from selfee.embed.source import EmbedBatch, iter_embed_batches
from selfee.errors import SelfeeError
from selfee.fallback import fallback
from selfee.pipelines.backend import backend_error
from selfee.pipelines.decode import stream_source
from selfee.runtime import indexed, resolve_device

log = logging.getLogger("selfee")


def dali_embed_batches(src, cfg: SelfeeConfig, batch_size: int, device="cpu", sequence: int = 32,
                       cpu_decoder: str = "auto", record: dict | None = None) -> Iterator[EmbedBatch]:
    """:class:`selfee.embed.source.EmbedBatch` es of ``src``'s window: frames on ``device`` for NVDEC, else CPU.

    Where DALI cannot run on ``device`` (``embed.pipeline=auto``), the PyAV reference is used, through
    ``selfee.fallback`` (an error in strict mode). ``record`` (a dict) receives the video's decode path
    as the frames are decoded (see ``selfee.pipelines.decode.stream_blocks``).
    """
    dev = indexed(resolve_device() if str(device) == "auto" else device)  # DALI needs the GPU's number
    err = backend_error(dev.type, dev.index if dev.type == "cuda" else None)
    if err is not None:
        if cfg.embed.pipeline != "auto":
            raise SelfeeError(f"embed.pipeline=dali: DALI cannot run on {dev} ({err})")
        fell = fallback("the DALI embedding pipeline", "PyAV", f"DALI cannot run on {dev}: {err}",
                        subject=str(src.info.path))
        if record is not None:
            record.update(lane="pyav", why=fell["why"], fallback=fell)
        return iter_embed_batches(src, cfg, batch_size)
    # with an arena the blocks come warped (in the DALI graph) and `pre_src` skips the torch warp
    pre_src, blocks = stream_source(src, dev, sequence=sequence, cpu_decoder=cpu_decoder, record=record)
    return iter_embed_batches(pre_src, cfg, batch_size, blocks=blocks)
