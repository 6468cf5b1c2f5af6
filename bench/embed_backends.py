"""Every CPU backend x precision for bulk embedding, model-only and end to end, with accuracy; and what auto picks.

ResNet-50 + 2048-d projector at 256 x 192, batch 16 (the issue's setting), random weights with
BatchNorm statistics re-estimated on the clip's frames (as training leaves them), on a real clip
(the first ``--frames`` frames of the 1024 x 1024 SLEAP fly video when ../shared/data is there,
else a generated one). Rows: torch fp32, torch bf16 (autocast, channels-last), TorchScript fp32,
ONNX Runtime fp32 (the export ``embed`` used by default before), ONNX Runtime INT8 (QDQ, calibrated
on the clip; its acceptance figures alongside, and measured even when refused), and ``auto``
(``open_embedder``'s measured choice, which sees the INT8 export only if it was accepted). Each row:
model-only frames/s, end-to-end frames/s (video file -> .npy), median/min cosine to fp32 eager on
real frames, and the speed-up over ONNX Runtime fp32 end to end.

Accuracy needs a trained model (``--checkpoint``): a *random* deep network with fresh BatchNorm
statistics amplifies rounding (bf16, int8) from layer to layer far more than a trained one, so its
cosines are pessimistic; with its initial statistics (``--no-bn-refresh``) its embeddings are nearly
parallel and the cosines optimistic. Speed does not depend on the weights.

    python -m selfee.bench.embed_backends                     # the full measurement (idle machine)
    python -m selfee.bench.embed_backends --frames 64 --seconds 1 --knn-frames 120   # a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from selfee.bench.embed import bench_config, end_to_end, model_only, random_checkpoint, synthetic_video
from selfee.bench.timing import environment, save_results, table

log = logging.getLogger("selfee")

COLUMNS = ["backend", "precision", "model_fps", "end_to_end_fps", "speedup_vs_onnx_fp32", "median_cosine",
           "min_cosine", "note"]
REAL = "videos/20190128_113421.120s.mp4"


def real_clip(out: Path, frames: int, source: str | None) -> Path:
    """The first ``frames`` frames of ``source`` (default: the SLEAP fly video) re-encoded as H.264, else a
    generated 640 x 480 clip."""
    import av

    from selfee.video import VideoWriter

    data = Path(os.environ.get("SELFEE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    src = Path(source) if source else data / REAL
    if not src.is_file():
        log.info("%s not found: a generated clip", src)
        return synthetic_video(out / "clip.mp4", frames)
    path = out / f"{src.stem}.first{frames}.mp4"
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        fps = int(round(float(stream.average_rate or 25)))
        with VideoWriter(path, fps, crf=18, gop=50) as w:
            for i, frame in enumerate(c.decode(stream)):
                if i >= frames:
                    break
                w.write(frame.to_ndarray(format="rgb24"))
    return path


def with_embedding_bn(ckpt: Path, cfg, clip: Path) -> Path:
    """The checkpoint with BatchNorm statistics re-estimated on the clip's live frames (``embed_bn``, as training
    writes it): random weights with fresh statistics give nearly parallel embeddings, unlike a trained model."""
    from selfee.checkpoint import load_checkpoint, load_model
    from selfee.export.verify import real_frames
    from selfee.fileio import atomic_save
    from selfee.model import embedding_bn_stats

    model, _ = load_model(ckpt)
    frames, _ = real_frames(cfg, [clip], 64, stride=2)
    bn, n = embedding_bn_stats(model.encoder, [frames[i : i + 16].float() / 255 for i in range(0, len(frames), 16)],
                               len(frames))
    state = load_checkpoint(ckpt)
    state["embed_bn"] = {"encoder": bn, "frames": n}
    return atomic_save(state, ckpt)


def accuracy(embedder, encoder, frames: torch.Tensor) -> dict:
    from selfee.export.verify import cosine_rows, eager_reference

    ref = eager_reference(encoder, frames)
    got = np.concatenate([np.asarray(embedder(frames[i : i + 16]), np.float32) for i in range(0, len(frames), 16)])
    cos = cosine_rows(ref, got)
    return {"median_cosine": float(np.median(cos)), "min_cosine": float(cos.min())}


def int8_export(ckpt: Path, model, cfg, clip: Path, knn_frames: int) -> tuple[Path | None, dict]:
    """``<ckpt stem>.int8.onnx`` beside the checkpoint when accepted (``auto`` then finds it), and the figures;
    a refused one is still written elsewhere so that its speed is measured."""
    from selfee.cli.export import demo_labelled_video
    from selfee.export.exporter import export_checkpoint
    from selfee.export.quantize import calibration_sets, int8_checks, quantize_onnx
    from selfee.export.runtime import OnnxEmbedder

    knn = demo_labelled_video(ckpt.parent, knn_frames)
    try:
        report = export_checkpoint(ckpt, ckpt.parent, precision="int8", calibrate=[clip], frames=4, quiet=True,
                                   knn_frames=knn_frames, knn_video=knn[0], knn_labels=knn[1])
        return ckpt.with_name(ckpt.stem + ".int8.onnx"), {**report["int8_checks"][0], "accepted": True}
    except Exception as exc:
        log.warning("the INT8 export was refused: %s", exc)
    refused = ckpt.parent / "refused.int8.onnx"
    calib, held, _ = calibration_sets(cfg, [clip])
    quantize_onnx(ckpt.with_name(ckpt.stem + ".onnx"), refused, calib)
    checks = int8_checks(model.encoder, OnnxEmbedder(refused, "cpu"), held, cfg, *knn, knn_frames=knn_frames)
    return refused, {**checks, "accepted": False}


def run(args) -> tuple[list[dict], dict]:
    from selfee.checkpoint import load_model
    from selfee.export import choose
    from selfee.export.exporter import export_checkpoint
    from selfee.export.open import _load, _torch, open_embedder
    from selfee.export.verify import real_frames

    choose.SECONDS = args.seconds
    cfg = bench_config("resnet50", args.size, 2048, "torch")
    rows, extra = [], {}
    with tempfile.TemporaryDirectory(prefix="selfee-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["SELFEE_CACHE"] = str(tmp / "cache")  # a fresh cache: auto measures here
        clip = real_clip(tmp, args.frames, args.video)
        if args.checkpoint:  # a trained model: the accuracy figures that matter
            ckpt = Path(shutil.copy(args.checkpoint, tmp / "r50.pt"))
        else:
            ckpt = random_checkpoint(cfg, tmp / "r50.pt")
            if args.bn_refresh:
                ckpt = with_embedding_bn(ckpt, cfg, clip)
        model, cfg = load_model(ckpt)
        export_checkpoint(ckpt, tmp, fmt="onnx", frames=4, quiet=True)
        export_checkpoint(ckpt, tmp, fmt="torchscript", frames=4, quiet=True)
        int8_path, extra["int8_checks"] = int8_export(ckpt, model, cfg, clip, args.knn_frames)
        frames, _ = real_frames(cfg, [clip], 32, stride=2)
        dev = torch.device("cpu")
        openers = {
            ("torch", "fp32"): lambda: _torch(model, dev, "fp32"),
            ("torch", "bf16"): lambda: _torch(model, dev, "bf16"),
            ("torchscript", "fp32"): lambda: _load(tmp / "r50.ts", "torchscript", dev),
            ("onnx", "fp32"): lambda: _load(tmp / "r50.onnx", "onnx", dev),
            ("onnx", "int8"): lambda: _load(int8_path, "onnx", dev),
            ("auto", "-"): lambda: open_embedder(ckpt, "auto", "cpu", videos=[clip])[0],
        }
        for (backend, precision), opener in openers.items():
            row = {"backend": backend, "precision": precision, "note": ""}
            try:
                t0 = time.perf_counter()
                emb = opener()
                if backend == "auto":
                    row["note"] = f"chose {emb.selection['chosen']} (timing {time.perf_counter() - t0:.0f} s)"
                    extra["auto_table"] = emb.selection["table"]
                if backend == "onnx" and precision == "int8" and not extra["int8_checks"]["accepted"]:
                    row["note"] = "refused by its checks"
                row.update(accuracy(emb, model.encoder, frames))
                row.update(model_only(emb, args.size, args.batch_size, iters=args.iters, repeats=args.repeats))
                row["end_to_end_fps"] = end_to_end(emb, cfg, ckpt, clip, args.batch_size)["end_to_end_fps"]
            except Exception as exc:
                row["note"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            log.info("%s", row)
    base = next((r.get("end_to_end_fps") for r in rows if r["backend"] == "onnx" and r["precision"] == "fp32"), None)
    for r in rows:
        if base and r.get("end_to_end_fps"):
            r["speedup_vs_onnx_fp32"] = r["end_to_end_fps"] / base
    return rows, {**extra, "clip": f"{clip.name} ({args.frames} frames)"}


def main(argv=None):
    from selfee.console import setup_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1500, help="frames of the clip (default 1500)")
    p.add_argument("--video", default=None, help="source video (default: the SLEAP fly video in ../shared/data)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=4, help="batches per timed model-only repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="auto: seconds timed per candidate")
    p.add_argument("--knn-frames", type=int, default=300, help="INT8 check: frames of the demo video in the k-NN")
    p.add_argument("--checkpoint", default=None, help="a trained checkpoint to measure (default: random ResNet-50 "
                   "weights; their accuracy figures are pessimistic, see the module doc)")
    p.add_argument("--no-bn-refresh", dest="bn_refresh", action="store_false",
                   help="random weights: keep the initial BatchNorm statistics (nearly parallel embeddings)")
    p.add_argument("--out", default=None, help="JSON results file (default: bench-results/embed_backends-<date>.json)")
    args = p.parse_args(argv)
    setup_logging()
    rows, extra = run(args)
    env = environment()
    path = save_results("embed_backends", [{**r, **({"extra": extra} if i == 0 else {})} for i, r in enumerate(rows)],
                        args.out)
    print(f"\nResNet-50 + 2048-d projector, {args.size[0]}x{args.size[1]}, batch {args.batch_size}, end to end on "
          f"{extra['clip']}; {env['cpu']}, {env['torch_threads']} threads")
    print(table(rows, COLUMNS))
    c = extra["int8_checks"]
    print(f"INT8 checks: median cosine {c['median_cosine']:.4f} on {c['held_back_frames']} held-back frames, k-NN "
          f"macro F1 {c['knn']['macro_f1']:.3f} vs fp32 {c['knn']['macro_f1_fp32']:.3f} "
          f"({'accepted' if c['accepted'] else 'refused'})")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
