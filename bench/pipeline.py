"""Two-view live-frame samples/s of the data pipelines, against the original way (JPEG folder + PIL).

Makes an H.264 (and a VP9) video of ``--video-size`` frames in a temporary folder, extracts the
JPEGs for the original-way loader (not timed), then times whole batches (decode, preprocessing,
live frames, two augmented views at ``--size``) after one warm-up batch, each loader once per
round, ``--repeats`` rounds (``x_original``: each round's ratio to the original way, median):

    python -m selfee.bench.pipeline                       # CPU: original vs reference vs DALI CPU lane
    python -m selfee.bench.pipeline --device cuda --batch-size 256 --batches 20 --embed
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from selfee.bench.timing import environment, save_results, sync, table
from selfee.config import SelfeeConfig
from selfee.runtime import indexed


def make_video(path: Path, n: int, hw, codec: str = "libx264") -> Path:
    from selfee.video import VideoWriter

    h, w = hw
    rng = np.random.default_rng(0)
    floor = np.kron(rng.integers(60, 140, (h // 16 + 1, w // 16 + 1, 3)), np.ones((16, 16, 1)))[:h, :w]
    with VideoWriter(path, 30, codec, gop=60 if codec == "libx264" else None,
                     options={"bf": 2} if codec == "libx264" else None) as out:
        for i in range(n):
            f = floor.copy()
            y, x = (i * 3) % (h - 40), (i * 7) % (w - 60)
            f[y : y + 40, x : x + 60] = 230
            out.write(f.astype(np.uint8))
    return path


def time_batches(it, n: int, batch: int, device) -> float:
    """samples/s over ``n`` batches after one warm-up batch."""
    next(it)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        b = next(it)
        _ = b[0].sum() if isinstance(b, (list, tuple)) else None  # the views exist
    sync(device)
    return n * batch / (time.perf_counter() - t0)


def measure_once(make, args, device) -> tuple[float, dict]:
    """samples/s of one fresh loader, and its decoded-frames-per-sample figure where it has one."""
    pipe = make()
    try:
        rate = time_batches(iter(pipe), args.batches, args.batch_size, device)
        extra = {k: v for k, v in getattr(pipe, "stats", {}).items() if k == "decoded_per_sample"}
    finally:
        if hasattr(pipe, "close"):
            pipe.close()
    return rate, extra


def run_interleaved(loaders: list[tuple[str, object]], args, device) -> list[dict]:
    """Every loader once per round, ``--repeats`` rounds: a slow spell of the machine then hits each
    loader alike, and each round's ratio to the original way compares figures taken minutes apart."""
    rates: dict[str, list[float]] = {name: [] for name, _ in loaders}
    extras: dict[str, dict] = {name: {} for name, _ in loaders}
    for r in range(args.repeats):
        for name, make in loaders:
            rate, extras[name] = measure_once(make, args, device)
            rates[name].append(rate)
            print(f"round {r + 1}/{args.repeats}: {name}: {rate:.1f} samples/s", flush=True)
    base = rates.get(ORIGINAL)
    rows = []
    for name, _ in loaders:
        v = rates[name]
        row = {"loader": name, "samples_per_s": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
        if base is not None:
            ratios = [a / b for a, b in zip(v, base)]
            row.update(x_original=statistics.median(ratios), x_original_min=min(ratios), x_original_max=max(ratios))
        rows.append({**row, **extras[name]})
    return rows


ORIGINAL = "original way (JPEG folder, PIL, 3 reads, colormap loop)"


def dali_unavailable(device) -> str | None:
    """Why the DALI rows cannot run here (DALI not installed, or no usable backend on ``device``), else None."""
    try:
        from selfee.pipelines.backend import backend_error
    except ImportError as exc:  # DALI (nvidia-dali-cuda120) is an optional dependency
        return f"DALI unavailable ({exc})"
    dev = indexed(device)
    err = backend_error(dev.type, dev.index if dev.type == "cuda" else None)
    return None if err is None else f"DALI unavailable on {dev} ({err})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"), help="network input size")
    p.add_argument("--video-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=4, help="timed batches per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the original-way loader")
    p.add_argument("--skip-original", action="store_true")
    p.add_argument("--embed", action="store_true", help="also time the DALI embedding decode (frames/s)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    from selfee.data import TorchPipeline, make_sources
    from selfee.video import probe

    no_dali = dali_unavailable(device)
    if no_dali is None:
        from selfee.pipelines.train import DaliTrainPipeline
    else:
        print(no_dali, flush=True)

    cfg = SelfeeConfig.load(overrides=[
        f"data.input_size=[{args.size[0]},{args.size[1]}]", f"optim.batch_size={args.batch_size}",
        "data.holdout_fraction=0", f"train.device={args.device}", "train.pipeline=dali"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        h264 = make_video(tmp / "bench.mp4", args.frames, args.video_size)
        sources = make_sources([probe(h264)], cfg)
        loaders = []
        if not args.skip_original:
            from selfee.bench.original_loader import extract_jpegs, original_loader

            n = extract_jpegs(h264, tmp / "jpg")
            loaders.append((ORIGINAL, lambda: original_loader(tmp / "jpg", n, cfg.data.frame_interval, args.size,
                                                              args.batch_size, args.workers)))
        loaders.append(("reference (PyAV + torch)", lambda: TorchPipeline(sources, cfg, device)))
        if no_dali is not None:  # the DALI rows say why they are empty instead of stopping the benchmark
            names = (["DALI, H.264"] + (["DALI, VP9 (DALI's CPU decoder)"] if device.type == "cpu" else [])
                     + (["DALI embedding decode (frames/s)"] if args.embed else []))
            missing = [{"loader": name, "samples_per_s": None, "note": no_dali} for name in names]
        else:
            missing = []
            loaders.append(("DALI, H.264", lambda: DaliTrainPipeline(sources, cfg, device)))
            if device.type == "cpu":
                vp9 = make_video(tmp / "bench.webm", args.frames, args.video_size, codec="libvpx-vp9")
                vsrc = make_sources([probe(vp9)], cfg)
                loaders.append(("DALI, VP9 (DALI's CPU decoder)", lambda: DaliTrainPipeline(vsrc, cfg, device)))
        rows += run_interleaved(loaders, args, device) + missing
        if args.embed and no_dali is None:
            from selfee.pipelines.embed import dali_embed_batches

            t0 = time.perf_counter()
            nf = sum(len(b.frame) for b in dali_embed_batches(sources[0], cfg, 256, device))
            sync(device)
            rows.append({"loader": "DALI embedding decode (frames/s)", "samples_per_s": nf / (time.perf_counter() - t0)})
    env = environment()
    for r in rows:
        r.update(size=list(args.size), batch_size=args.batch_size, device=args.device, video=list(args.video_size))
    path = save_results("pipeline", rows, args.out)
    print(f"\nTwo views at {args.size[0]}x{args.size[1]} from {args.video_size[0]}x{args.video_size[1]} video, "
          f"batch {args.batch_size}, on {env.get('gpu') or env['cpu']} ({args.device}, {env['cpu_count']} CPUs)")
    cols = ["loader", "samples_per_s", "min", "max"] + (["x_original", "x_original_min", "x_original_max"]
                                                         if not args.skip_original else [])
    print(table(rows, cols + ["decoded_per_sample"] + (["note"] if no_dali else [])))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
