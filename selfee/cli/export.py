"""``selfee-fast export`` (TorchScript / ONNX / TensorRT, each verified) and ``selfee-fast bench``."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint to export (selfee-fast .pt or original Selfee .pkl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="torchscript or onnx."),
    trt: bool = typer.Option(False, "--trt", help="Also build a TensorRT engine from the ONNX file (needs TensorRT 10.x "
                             "and an NVIDIA GPU)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16 (TorchScript and TensorRT; ONNX files are fp32), "
                                  "or int8 (ONNX Runtime static quantization, and with --trt an INT8 engine; needs "
                                  "--calibrate)."),
    max_batch: int = typer.Option(256, "--max-batch", help="TensorRT profile: largest batch."),
    opt_batch: int = typer.Option(None, "--opt-batch", help="TensorRT profile: batch tuned for (default: --max-batch)."),
    device: str = typer.Option("auto", help="Device to trace TorchScript on and to run TensorRT on: auto, cpu, cuda[:N]."),
    video: list[Path] = typer.Option([], "--video", help="Video(s) whose frames verify the export, besides random "
                                      "frames (repeatable; without one, synthetic video-like frames are used)."),
    frames: int = typer.Option(16, help="Frames per verification set."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="TensorRT timing cache to reuse and update "
                                      "(default: one per GPU model in the selfee-fast cache folder)."),
    name: str = typer.Option(None, help="Base name of the files (default: the checkpoint's)."),
    calibrate: list[Path] = typer.Option([], "--calibrate", help="--precision int8: videos whose live frames "
                                         "calibrate the quantization and check it (repeatable)."),
    knn_video: Path = typer.Option(None, "--knn-video", help="--precision int8: labelled video for the k-NN check "
                                   "(default: the demo's generated behaviour video)."),
    knn_labels: Path = typer.Option(None, "--knn-labels", help="Labels of --knn-video (frame,label CSV or "
                                    "'start end label' ranges)."),
    knn_frames: int = typer.Option(None, "--knn-frames", help="Frames of the k-NN video to use (default 300)."),
):
    """Export the encoder (frames -> embedding) for fast bulk embedding.

    Writes OUT/NAME.ts (TorchScript) or OUT/NAME.onnx (opset 17, dynamic batch axis), and with
    --trt OUT/NAME.engine; each file has OUT/<file>.json beside it (metadata and verification).
    Inputs are uint8 frames B x 3 x H x W (0-255; the scaling is inside), outputs float32
    B x dim. Every file is checked against the eager model on random and real frames and is
    kept only if the cosine similarity is >= 0.9999 (fp32) or >= 0.999 (fp16/bf16). --precision
    int8 also writes OUT/NAME.int8.onnx (QDQ, per-channel int8 weights, calibrated on frames of
    --calibrate videos), kept only if on held-back frames the median cosine to fp32 is >= 0.99 and
    a k-NN on a labelled video loses <= 0.02 macro F1 (both stored in its metadata).
    """
    import tempfile

    from selfee.export.exporter import export_checkpoint
    from selfee.export.verify import describe

    tmp = tempfile.TemporaryDirectory(prefix="selfee-knn-")
    if precision == "int8" and knn_video is None:
        knn_video, knn_labels = demo_labelled_video(Path(tmp.name), knn_frames or 300)
    with tmp:
        report = export_checkpoint(checkpoint, out, fmt=fmt, trt=trt, precision=precision, max_batch=max_batch,
                                   opt_batch=opt_batch, device=device, videos=[str(v) for v in video],
                                   frames=frames, timing_cache=timing_cache, name=name, quiet=True,
                                   calibrate=calibrate, knn_video=knn_video, knn_labels=knn_labels, knn_frames=knn_frames)
    typer.echo(f"verified on {report['verification_frames']}")
    if not report["real_frames"]:
        typer.echo("note: the frames standing in for real ones were synthetic" + (
            "; pass --video with one of your videos to verify on its frames" if not video else ""))
    for result in report["verification"]:
        typer.echo(describe(result))
    if report.get("int8_checks"):
        from selfee.export.quantize import describe_checks

        typer.echo(f"INT8 calibrated on {report['int8_calibration']}")
        for checks in report["int8_checks"]:
            typer.echo(describe_checks(checks, checks["export"]))
    for f in report["files"]:
        typer.echo(f"wrote {f}")


def demo_labelled_video(folder: Path, frames: int) -> tuple[Path, Path]:
    """The demo's generated behaviour video (``frames`` frames) and its ``frame,label`` CSV, in ``folder``:
    the default labelled video of the INT8 k-NN check."""
    from selfee.demo import STATES, write_demo_video

    video = folder / "demo_behaviour.mp4"
    labels = write_demo_video(video, n_frames=frames)
    csv = folder / "demo_behaviour.labels.csv"
    csv.write_text("frame,label\n" + "".join(f"{i},{STATES[c]}\n" for i, c in enumerate(labels.tolist())))
    return video, csv


def bench(
    profile: str = typer.Option(None, help="quick (ResNet-18, 64x64; the default without a GPU) or full "
                                "(ResNet-50, 2048-d, 256x192; the default with one)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    backends: list[str] = typer.Option(["torch", "torchscript", "onnx", "tensorrt"], "--backend",
                                       help="Embedding backends to measure (repeatable)."),
    precision: str = typer.Option(None, help="TorchScript/TensorRT precision (default: fp16 on GPU, fp32 on CPU)."),
    video: Path = typer.Option(None, help="Video for decode, pipeline and end-to-end figures "
                               "(default: a generated H.264 clip)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Embedding batch (default: the profile's)."),
    part: list[str] = typer.Option(["decode", "pipeline", "train", "embed"], "--part",
                                   help="What to measure: decode, pipeline, train, embed (repeatable)."),
    out: Path = typer.Option(None, help="JSON results file (default: bench-results/bench-<date>.json)."),
):
    """Measure decode frames/s, training-pipeline samples/s, training-step samples/s and embedding
    frames/s per backend (model-only and end-to-end, video file -> .npy), print a table and save
    it as JSON with the environment (CPU/GPU, driver, torch, DALI, ONNX Runtime, TensorRT).
    """
    from selfee.bench.run import run_bench, summary

    rows, path = run_bench(profile, device, backends, precision, str(video) if video else None,
                           str(out) if out else None, parts=tuple(part), batch_size=batch_size)
    typer.echo(summary(rows, path))
