"""The arena warp inside the DALI graph: ``fn.experimental.warp_perspective`` (+ the plus-maze mask).

Videos with an arena are perspective-warped onto the arena square (and plus mazes masked) inside
the DALI graph, on the GPU for NVDEC, with the matrix of ``selfee.video.arena``; the torch
``ArenaWarp`` is then skipped for those frames (frames PyAV decodes keep it).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from nvidia.dali import fn, types

from selfee.data import VideoSource
from selfee.video.arena import MASK_FILL, ArenaWarp, dali_warp_args


def warped_source(src: VideoSource) -> VideoSource:
    """``src`` with a preprocessor that skips the arena warp: for frames the DALI graph has warped.

    Every other step (ROI, resize, background, illumination, inversion) is the same object's; the
    background is computed from the configuration (with its warp) and shares the disk cache.
    """
    pre = copy.copy(src.pre)
    pre.arena = None
    return dataclasses.replace(src, pre=pre)


def arena_inputs(warp: ArenaWarp) -> dict:
    """What :func:`warp_graph` needs for one video, from ``selfee.video.arena.dali_warp_args``: per-sample
    matrix (3 x 3 float32, destination -> source), size (S, S), keep (S x S x 1 uint8, 1 where kept)
    and fill (S x S x 1, ``MASK_FILL`` where masked), and the operator's constant arguments."""
    args = dali_warp_args(warp.arena)
    keep = warp.arena.keep_mask()
    s = warp.arena.size
    keep = np.ones((s, s, 1), np.uint8) if keep is None else keep[..., None].astype(np.uint8)
    return {"matrix": np.asarray(args.pop("matrix"), np.float32).reshape(3, 3),
            "size": np.asarray(args.pop("size"), np.float32), "keep": keep, "fill": (1 - keep) * np.uint8(MASK_FILL),
            "consts": args}


def warp_graph(frames, on_gpu: bool, consts: dict, inputs: dict | None = None):
    """F x H x W x 3 sequences -> F x S x S x 3, warped and masked as ``selfee.video.arena.ArenaWarp`` does
    (bilinear, pixel centres on integers, 0 outside the frame, ``MASK_FILL`` between plus-maze arms).

    ``consts``: the operator's constant arguments (``arena_inputs(...)["consts"]``); ``inputs``: one
    video's ``arena_inputs`` as constants, else per-sample external sources named ``matrix``,
    ``size``, ``keep`` and ``fill``.
    """
    if inputs is None:
        matrix = fn.external_source(name="matrix", dtype=types.FLOAT)
        size = fn.external_source(name="size", dtype=types.FLOAT)
        keep = fn.external_source(name="keep", dtype=types.UINT8, layout="HWC")
        fill = fn.external_source(name="fill", dtype=types.UINT8, layout="HWC")
    else:
        matrix = [float(v) for v in inputs["matrix"].ravel()]
        size = [float(v) for v in inputs["size"]]
        keep = types.Constant(inputs["keep"], device="gpu" if on_gpu else "cpu")
        fill = types.Constant(inputs["fill"], device="gpu" if on_gpu else "cpu")
    out = fn.experimental.warp_perspective(frames, matrix=matrix, size=size, interp_type=types.INTERP_LINEAR,
                                           **consts)
    if inputs is not None and not inputs["fill"].any():
        return out  # an open field: nothing masked
    if on_gpu and inputs is None:
        keep, fill = keep.gpu(), fill.gpu()
    return out * keep + fill  # uint8: keep is 0/1 and fill is 0 where kept


def torch_warp(warp: ArenaWarp, frames: torch.Tensor) -> torch.Tensor:
    """The torch warp on decoded frames as the decoders give them (T x H x W grey or T x H x W x 3)."""
    if frames.ndim == 3:
        return warp(frames.unsqueeze(1))[:, 0]
    return warp(frames.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
