"""What every export contains: the uint8-in graph around the Encoder, its metadata, its precisions."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from selfee import __version__
from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError

FORMAT = "selfee-fast-export"
VERSION = 1
INPUT = "frames"  # B x 3 x H x W uint8
OUTPUT = "embedding"  # B x dim float32
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Verification: smallest cosine similarity to the fp32 eager encoder that an export may have.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.999}


class FrameEncoder(nn.Module):
    """uint8 frames (B x 3 x H x W, 0-255) -> float32 embeddings (B x dim).

    The scaling by 1/255 is inside the graph, exactly as :class:`selfee.embed.TorchEmbedder`
    does it, so an export consumes the decoder's bytes directly and the host-to-device copy
    moves one byte per pixel instead of four. ``dtype`` is the precision the encoder runs in.
    """

    def __init__(self, encoder: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.encoder = encoder
        self.dtype = dtype

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().div(255)
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        return self.encoder(x).float()


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise SelfeeError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    return PRECISIONS[precision]


def embed_dim(encoder: nn.Module) -> int:
    """Width of the encoder's embedding (the representation of its ``features``)."""
    return int(encoder.embed_dim)


def build_metadata(cfg: SelfeeConfig, dim: int, precision: str, checkpoint: str, checkpoint_sha256: str,
                   **extra: Any) -> dict:
    """The record stored in (ONNX, TorchScript) or beside (TensorRT) every export."""
    d = cfg.data
    h, w = (int(v) for v in d.input_size)
    return {
        "format": FORMAT,
        "version": VERSION,
        "selfee_fast": __version__,
        "input": {"name": INPUT, "dtype": "uint8", "shape": ["batch", 3, h, w], "range": "0-255, scaled by 1/255 inside"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", dim]},
        "input_size": [h, w],
        "live_frames": bool(d.live_frames),
        "frame_interval": int(d.frame_interval),
        "embed_dim": dim,
        "features": cfg.embed.features,  # what the graph outputs: projector | backbone | both
        "precision": precision,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "config": cfg.to_dict(),
        **extra,
    }


def parse_metadata(text: str | bytes, source: str) -> dict:
    """Check and return the metadata JSON of an export."""
    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SelfeeError(f"{source}: unreadable selfee-fast metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SelfeeError(f"{source}: not a selfee-fast export (no '{FORMAT}' metadata)")
    if int(meta.get("version", 1)) > VERSION:
        raise SelfeeError(f"{source}: export format version {meta['version']} is newer than this selfee-fast")
    return meta


def metadata_config(meta: dict, source: str) -> SelfeeConfig:
    """The SelfeeConfig an export was made with: input size, live frames and frame interval included."""
    try:
        cfg = SelfeeConfig.from_dict(meta["config"])
    except (KeyError, SelfeeError) as exc:
        raise SelfeeError(f"{source}: the export's config cannot be read ({exc})") from None
    if list(cfg.data.input_size) != list(meta["input_size"]) or cfg.data.live_frames != meta["live_frames"]:
        raise SelfeeError(f"{source}: inconsistent export metadata (input size or live-frame mode)")
    # exports made before embed.features output the projector (the config's default)
    if meta.get("features", "projector") != cfg.embed.features:
        raise SelfeeError(f"{source}: inconsistent export metadata (features {meta.get('features')!r}, "
                          f"config {cfg.embed.features!r})")
    return cfg


def random_frames(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Uniform noise frames, n x 3 x H x W uint8."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)


def structured_frames(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Video-like frames: a bright blob moving over a dark, slightly noisy floor (live-frame stacks).

    Stands in for real frames when no video is given: smooth images with an object and motion,
    which exercise the network the way behaviour videos do, unlike uniform noise.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * torch.tensor([h * 0.6, w * 0.6]) + torch.tensor([h * 0.2, w * 0.2])
    step = (torch.rand(n, 2, generator=g) - 0.5) * 0.1 * torch.tensor([h, w])
    radius = (0.08 + 0.1 * torch.rand(n, generator=g)) * min(h, w)
    out = torch.empty(n, 3, h, w)
    for c, t in enumerate((-1, 0, 1)):  # past, present, future positions of the blob
        cy = (centre[:, 0] + t * step[:, 0]).view(n, 1, 1)
        cx = (centre[:, 1] + t * step[:, 1]).view(n, 1, 1)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out[:, c] = 30 + 200 * torch.exp(-d2 / (2 * radius.view(n, 1, 1) ** 2))
    out += torch.randn(out.shape, generator=g) * 4
    return out.round_().clamp_(0, 255).to(torch.uint8)
