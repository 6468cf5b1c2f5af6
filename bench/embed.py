"""Embedding throughput per backend: model-only (frames already where the model wants them) and
end-to-end (video file -> ``.npy`` on disk), side by side.

    python -m selfee.bench.embed --device cpu --arch resnet50 --size 256 192 --batch-size 16
    python -m selfee.bench.embed --device cuda --arch resnet50 --size 256 192 --batch-size 256 \\
        --backends torch tensorrt --precision fp16 --video long.mp4
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import torch

from selfee.bench.timing import environment, measure, save_results, table
from selfee.checkpoint import checkpoint_dict
from selfee.config import SelfeeConfig
from selfee.embed import Embedder, embed_videos
from selfee.errors import SelfeeError
from selfee.export.graph import random_frames
from selfee.export.open import open_embedder
from selfee.fileio import atomic_save

log = logging.getLogger("selfee")

BACKENDS = ("torch", "torchscript", "onnx", "tensorrt")
COLUMNS = ["backend", "precision", "model_fps", "end_to_end_fps", "frames", "pipeline", "error"]


def bench_config(arch: str, size, proj_dim: int, pipeline: str = "auto") -> SelfeeConfig:
    return SelfeeConfig.load(overrides=[
        f"model.arch={arch}", "model.init=none", f"model.proj_dim={proj_dim}",
        f"model.pred_hidden={max(2, proj_dim // 4)}", f"model.cld_dim={max(2, proj_dim // 2)}",
        f"data.input_size=[{size[0]},{size[1]}]", f"embed.pipeline={pipeline}",
    ])


def random_checkpoint(cfg: SelfeeConfig, path: Path, seed: int = 0) -> Path:
    """A checkpoint of randomly initialised weights: throughput does not depend on training."""
    from selfee.model import Selfee

    torch.manual_seed(seed)
    model = Selfee(cfg.model).eval()
    return atomic_save(checkpoint_dict(model, cfg), path)


def synthetic_video(path: Path, frames: int, width: int = 640, height: int = 480, fps: int = 30) -> Path:
    """An H.264 (yuv420p) video of a blob moving over a textured floor: decodes like a real recording."""
    from selfee.video import VideoWriter

    yy, xx = np.mgrid[0:height, 0:width]
    floor = ((np.sin(xx / 17.0) + np.cos(yy / 23.0)) * 20 + 60).astype(np.float32)
    with VideoWriter(path, fps, crf=23, gop=30, options={"bf": 2, "preset": "veryfast"}) as out:
        for i in range(frames):
            cy = height / 2 + height / 3 * np.sin(i / 40)
            cx = width / 2 + width / 3 * np.cos(i / 55)
            img = floor + 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (min(width, height) / 12) ** 2))
            out.write(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return path


def model_only(embedder: Embedder, size, batch: int, iters: int = 4, repeats: int = 3) -> dict:
    """Frames/s of the embedder alone: a fixed uint8 batch, already on the embedder's device."""
    device = torch.device(embedder.device)
    frames = random_frames(batch, tuple(size))
    if device.type == "cuda":
        frames = frames.to(device)

    def run():
        inflight: deque = deque()
        for _ in range(iters):
            inflight.append(embedder.submit(frames))
            if len(inflight) > 1:
                inflight.popleft().result()
        while inflight:
            inflight.popleft().result()

    t = measure(run, warmup=1, repeats=repeats, device=device)
    return {"model_fps": iters * batch / t["median_s"]}


def end_to_end(embedder: Embedder, cfg: SelfeeConfig, weights: Path, video: Path, batch: int, repeats: int = 1) -> dict:
    """Frames/s from the video file to ``.npy`` + ``.csv`` on disk (best of ``repeats`` runs)."""
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            m = embed_videos([video], weights, tmp, cfg=cfg, embedder=embedder, batch_size=batch, overwrite=True,
                             show_progress=False)
            if m["failed"]:
                raise SelfeeError(m["failed"][0]["error"])
            if best is None or m["fps"] > best["end_to_end_fps"]:
                best = {"end_to_end_fps": m["fps"], "frames": m["frames_embedded"]}
    return best


def export_for(backend: str, weights: Path, out: Path, precision: str, batch: int) -> Path:
    """The file a backend loads: the checkpoint itself, or its (verified) export."""
    from selfee.export.exporter import export_checkpoint

    if backend == "torch":
        return weights
    fmt = "torchscript" if backend == "torchscript" else "onnx"
    trt = backend == "tensorrt"
    prec = precision if backend in ("torchscript", "tensorrt") else "fp32"
    report = export_checkpoint(weights, out, fmt=fmt, trt=trt, precision=prec, max_batch=batch, frames=4,
                               name=f"bench-{backend}", quiet=True)
    return Path(report["files"][-1])


def run_backends(cfg: SelfeeConfig, weights: Path, video: Path | None, backends, device: str, batch: int,
                 precision: str = "fp16", iters: int = 4, repeats: int = 3, work: Path | None = None,
                 rounds: int = 1) -> list[dict]:
    """One row per backend: model-only and end-to-end frames/s (or the error that stopped it).

    The backends are measured in turn, ``rounds`` times over, and each figure is the median of
    its rounds: on a shared machine, load that comes and goes then weighs on every backend alike.
    """
    rows, embedders = [], {}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for backend in backends:
            row = {"backend": backend, "device": device, "batch_size": batch,
                   "precision": _precision(backend, device, precision)}
            try:
                path = export_for(backend, weights, Path(tmp), precision, batch)
                embedders[backend] = open_embedder(path, backend, device)[0]
            except Exception as exc:  # a backend that cannot run here (missing package, no GPU, ...)
                row["error"] = f"{type(exc).__name__}: {exc}"[:160]
            rows.append(row)
        samples: dict[str, dict[str, list]] = {b: {} for b in embedders}
        for _ in range(rounds):
            for backend, embedder in embedders.items():
                try:
                    got = model_only(embedder, cfg.data.input_size, batch, iters, repeats)
                    if video is not None:
                        got.update(end_to_end(embedder, cfg, weights, video, batch))
                except Exception as exc:
                    got = {"error": f"{type(exc).__name__}: {exc}"[:160]}
                for k, v in got.items():
                    samples[backend].setdefault(k, []).append(v)
        for row in rows:
            for k, values in samples.get(row["backend"], {}).items():
                row[k] = values[-1] if isinstance(values[0], str) else float(np.median(values))
            if "frames" in row:
                row["frames"] = int(row["frames"])
                row["pipeline"] = {"torch": "pyav"}.get(cfg.embed.pipeline, cfg.embed.pipeline)
            if rounds > 1 and "model_fps" in row:
                row["rounds"] = rounds
            log.info("%s", table([row], COLUMNS))
    return rows


def _precision(backend: str, device: str, precision: str) -> str:
    if backend in ("torchscript", "tensorrt"):
        return precision
    return "bf16 autocast" if backend == "torch" and device.startswith("cuda") else "fp32"


def main(argv=None):
    from selfee.console import setup_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 16 on CPU")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--precision", default=None, help="TorchScript/TensorRT precision: fp32, fp16, bf16 "
                   "(default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--iters", type=int, default=4, help="batches per timed model-only repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="measure all backends in turn this many times (medians)")
    p.add_argument("--video", default=None, help="video for end-to-end (default: a generated 640x480 H.264 clip)")
    p.add_argument("--video-frames", type=int, default=None, help="frames of the generated clip (default 3000 GPU, 64 CPU)")
    p.add_argument("--no-end-to-end", action="store_true")
    p.add_argument("--pipeline", default="auto", help="frame source for end-to-end: auto, dali or torch (PyAV)")
    p.add_argument("--out", default=None, help="JSON results file")
    args = p.parse_args(argv)
    setup_logging()
    gpu = args.device.startswith("cuda")
    batch = args.batch_size or (256 if gpu else 16)
    cfg = bench_config(args.arch, args.size, args.proj_dim, args.pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_checkpoint(cfg, Path(tmp) / "bench.pt")
        video = None
        if not args.no_end_to_end:
            video = Path(args.video) if args.video else synthetic_video(Path(tmp) / "bench.mp4",
                                                                        args.video_frames or (3000 if gpu else 64))
        precision = args.precision or ("fp16" if gpu else "fp32")
        rows = run_backends(cfg, weights, video, args.backends, args.device, batch, precision, args.iters,
                            args.repeats, rounds=args.rounds)
    env = environment()
    path = save_results("embed", [{**r, "arch": args.arch, "size": list(args.size)} for r in rows], args.out)
    print(f"\n{args.arch} ({args.proj_dim}-d), {args.size[0]}x{args.size[1]}, batch {batch}, on "
          f"{env.get('gpu') or env['cpu']} ({args.device}, {env['torch_threads']} threads)")
    print(table(rows, COLUMNS))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
