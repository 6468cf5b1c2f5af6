"""Tracking throughput: decode only, detection only, end to end (decode + background + tracking), warp.

    python -m selfee.bench.track VIDEO [--reference CSV] [--corners "x1,y1 ... x4,y4"] [--repeats 3]
    python -m selfee.bench.track VIDEO --warp-device cuda     # the torch warp + background subtraction on a GPU

Frames per second, the median of the repeats after a warm-up. ``decode``: the luma planes through
the project's decoding path; ``detect``: background subtraction, threshold, opening and largest
blob on frames decoded beforehand; ``track``: ``selfee.tracking.track_video`` end to end (background
sampling, decode, detection, measures), with its CPU time per frame (all threads: a figure that
holds when other work shares the machine); ``warp+bgsub``: the torch arena warp (the on-the-fly
Preprocessor step) of luma frames to 500 x 500, then background subtraction and threshold, in
batches of 64 on ``--warp-device`` (compute only). ``--reference`` (a Tracktor CSV: (index),
frame (1-based), pos_x, pos_y) adds the median and 95th-percentile centroid distance.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from selfee.bench.timing import environment, measure, save_results, table


def bench_video(path: str, repeats: int, reference: str | None, warp_device: str, corners: str | None) -> dict:
    from selfee.config import PreprocessConfig
    from selfee.tracking import (
        BlobDetector,
        TrackOptions,
        decoded_frames,
        make_background,
        sample_frames,
        track_video,
    )
    from selfee.video import VideoReader, luma, probe
    from selfee.video.arena import Arena, ArenaWarp
    from selfee.video.corners import parse_corners_text

    info = probe(path)
    n = info.frames
    opts = TrackOptions()
    pcfg = PreprocessConfig()
    if corners:
        pcfg = PreprocessConfig(arena="open_field", arena_corners=parse_corners_text(corners))
    row: dict = {"video": Path(path).name, "size": f"{info.width}x{info.height}", "pix_fmt": info.pix_fmt,
                 "frames": n, "arena": pcfg.arena}

    def decode():
        with VideoReader(info) as r:
            for _, f in decoded_frames(r, 0, n):
                luma(f)

    row["decode_fps"] = n / measure(decode, warmup=1, repeats=repeats)["median_s"]

    result = {"cpu_s": []}

    def end_to_end():
        c = time.process_time()
        result["track"] = track_video(info, pcfg, opts)
        result["cpu_s"].append(time.process_time() - c)

    row["track_fps"] = n / measure(end_to_end, warmup=1, repeats=repeats)["median_s"]
    # CPU time of all the process's threads: what the run costs, whatever else shares the machine
    row["track_cpu_ms_per_frame"] = 1e3 * statistics.median(result["cpu_s"][1:]) / n
    tr = result["track"]

    k = min(n, 2000)  # detection alone, on frames decoded beforehand (bounded memory)
    with VideoReader(info) as r:
        ys = [luma(f).copy() for _, f in decoded_frames(r, 0, k)]
    _, samples, limited = sample_frames(info, 0, n, opts.background_frames)
    bg = make_background(samples)
    mask = None if tr.arena is None else tr.arena.source_mask(info.height, info.width)
    det = BlobDetector(bg, opts.threshold * (219 / 255 if limited else 1), tr.polarity, opts.min_area, mask,
                       tr.arena, opts.ellipse, opts.open_px)
    row["detect_fps"] = k / measure(lambda: [det(y) for y in ys], warmup=1, repeats=repeats)["median_s"]

    dev = torch.device(warp_device)
    w, h = info.width, info.height
    quad = tr.arena.corners if tr.arena is not None else ((0.1 * w, 0.1 * h), (0.9 * w, 0.1 * h),
                                                            (0.9 * w, 0.9 * h), (0.1 * w, 0.9 * h))
    warp = ArenaWarp(Arena("open_field", quad, 500), h, w, chunk=64)
    batch = torch.from_numpy(np.stack(ys[:64]))[:, None].to(dev)  # 64 x 1 x H x W
    wbg = warp(torch.from_numpy(bg)[None, None].to(dev)).short()

    def warp_sub():
        fg = (wbg - warp(batch).short()) > opts.threshold
        return fg.sum()

    row["warp_bgsub_device"] = str(dev)
    row["warp_bgsub_fps"] = len(batch) / measure(warp_sub, warmup=1, repeats=repeats, device=dev)["median_s"]

    if reference:
        ref = np.loadtxt(reference, delimiter=",", skiprows=1)
        m = min(len(ref), len(tr.frames))
        d = np.hypot(*(tr.xy[:m] - ref[:m, 2:4]).T)
        row.update(ref_frames=int(m), ref_median_px=float(np.nanmedian(d)), ref_p95_px=float(np.nanpercentile(d, 95)))
    row["found"] = int(tr.found.sum())
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference", help="Tracktor CSV to compare the first video's centroids with")
    ap.add_argument("--corners", help="open-field corners 'x1,y1 x2,y2 x3,y3 x4,y4': track with an arena")
    ap.add_argument("--warp-device", default="cpu", help="device for the torch warp + background subtraction")
    ap.add_argument("--json", help="results file (default: bench-results/track-<date>.json)")
    args = ap.parse_args(argv)
    rows = [bench_video(v, args.repeats, args.reference if i == 0 else None, args.warp_device, args.corners)
            for i, v in enumerate(args.videos)]
    cols = ["video", "size", "pix_fmt", "frames", "arena", "decode_fps", "detect_fps", "track_fps", "track_cpu_ms_per_frame",
            "warp_bgsub_device", "warp_bgsub_fps", "found", "ref_median_px", "ref_p95_px"]
    print(table(rows, cols))
    env = environment()
    print(f"{env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, av {env['av']}, opencv {env['cv2']}, "
          f"numpy {env['numpy']}, {env['date']}")
    print(f"results: {save_results('track', rows, args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
