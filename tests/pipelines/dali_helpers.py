"""Helpers shared by the DALI pipeline tests: small configs and videos of known content."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import torch

from selfee.augment import resize_uint8
from selfee.config import SelfeeConfig
from selfee.video import frame_to_grey


def cfg_for(**over) -> SelfeeConfig:
    base = {
        "data.input_size": [32, 48],
        "data.frame_interval": 2,
        "data.pool_batches": 4,
        "data.chunk_frames": 16,
        "data.holdout_fraction": 0.1,
        "data.decode_threads": 1,
        "optim.batch_size": 8,
        "loss.clusters": 4,  # a valid run needs batch >= clusters
        "augment.enabled": False,
        "train.pipeline": "dali",
        "embed.pipeline": "dali",
    }
    base.update(over)
    return SelfeeConfig.load(overrides=[f"{k}={v}" for k, v in base.items()])


def textured_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Moving bar over a fixed smooth texture: every frame differs and edges are not flat."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    tex = np.kron(base, np.ones((8, 8, 1)))[:h, :w]
    frames = np.repeat(tex[None], n, 0)
    for i in range(n):
        x = (i * 3) % (w - 8)
        frames[i, 4:-4, x : x + 8] = 250
        frames[i] += (i * 5) % 30
    return np.clip(frames, 0, 255).astype(np.uint8)


def decode_rgb(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def reference_grey(path, size) -> torch.Tensor:
    """T x h x w: every frame of ``path`` through the reference grey rule and resize."""
    with av.open(str(path)) as c:
        g = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    return resize_uint8(torch.from_numpy(g).unsqueeze(1), size)[:, 0]


def as_uint8(view: torch.Tensor) -> torch.Tensor:
    return (view * 255).round().to(torch.uint8)


def grey_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """:func:`textured_frames` with R = G = B (their luma): neutral chroma, as in grey / IR behaviour videos."""
    from selfee.live_frames import rgb_to_gray_np

    return np.repeat(rgb_to_gray_np(textured_frames(n, h, w, seed))[..., None], 3, axis=-1)


def dali_cpu_rgb(path_or_bytes) -> np.ndarray:
    """T x H x W x 3: every frame of a video file (or its encoded bytes) through DALI's CPU video decoder,
    fed whole (its own YUV -> RGB)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_async=False, exec_pipelined=False,
                  prefetch_queue_depth=1)
    def decode():
        return fn.decoders.video(fn.external_source(name="encoded", dtype=types.UINT8), device="cpu")

    pipe = decode()
    pipe.build()
    data = path_or_bytes if isinstance(path_or_bytes, np.ndarray) else np.fromfile(str(path_or_bytes), np.uint8)
    pipe.feed_input("encoded", [data])
    (out,) = pipe.run()
    return np.array(out[0])


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.cpu().int() - b.cpu().int()).abs().max())


def transcode(src, dst, frames: int, codec: str = "libvpx-vp9"):
    """The first ``frames`` decoded frames of ``src`` re-encoded with ``codec`` (YUV passed as decoded, no RGB)."""
    from selfee.video import VideoWriter

    with av.open(str(src)) as inp:
        s_in = inp.streams.video[0]
        rate = round(float(s_in.average_rate or 25))
        opts = {"deadline": "realtime", "cpu-used": 8, "g": 30} if "vp9" in codec else {}
        with VideoWriter(dst, rate, codec, options=opts, time_base=Fraction(1, rate)) as out:
            for i, f in enumerate(inp.decode(s_in)):
                if i >= frames:
                    break
                f = f if f.format.name == "yuv420p" else f.reformat(format="yuv420p")
                out.write(f, pts=i)  # constant frame rate from 0
    return dst


def take(loader, n: int) -> list:
    """The first ``n`` batches of a loader or pipeline, which is then closed."""
    out = [b for _, b in zip(range(n), loader)]
    loader.close()
    return out
