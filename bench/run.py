"""``selfee-fast bench``: decode, training pipeline, training step and embedding throughput in one table.

Every figure comes with the environment (CPU/GPU, driver, torch, DALI, ONNX Runtime, TensorRT
versions) in a JSON file. Embedding is measured per backend, model-only and end-to-end (video
file -> ``.npy`` on disk) side by side. The ``quick`` profile (the default without a GPU) runs in
about two minutes on 2 CPU cores; ``full`` (the default with one) is the paper's setting: ResNet-50,
2048-d, 256 x 192 inputs.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from selfee.bench.embed import BACKENDS, bench_config, random_checkpoint, run_backends, synthetic_video
from selfee.bench.timing import environment, save_results, table

log = logging.getLogger("selfee")


@dataclass(frozen=True)
class Profile:
    arch: str
    proj_dim: int
    size: tuple[int, int]
    batch: int  # embedding batch
    train_batch: int
    video_frames: int
    video_wh: tuple[int, int]
    iters: int  # batches per timed model-only repeat
    repeats: int
    train_steps: int
    pipeline_batches: int


PROFILES = {
    "quick": Profile("resnet18", 128, (64, 64), 32, 16, 96, (320, 240), 2, 2, 1, 4),
    "full": Profile("resnet50", 2048, (256, 192), 256, 256, 3000, (640, 480), 8, 3, 10, 20),
}

COLUMNS = ["measure", "what", "value", "unit", "detail", "error"]


def decode_rows(video: Path, device: torch.device) -> list[dict]:
    """Decoded frames/s of the full-resolution video: PyAV, and DALI where its lanes run here."""
    from selfee.config import SelfeeConfig
    from selfee.data import make_sources
    from selfee.video import VideoReader, probe

    info = probe(video)
    rows = []

    def pyav():
        reader = VideoReader(info)
        try:
            return sum(1 for _ in reader.iter_frames())
        finally:
            reader.close()

    rows.append(_rate("decode", "PyAV (CPU, RGB)", pyav, "frames/s", f"{info.width}x{info.height} {info.codec}"))
    try:
        from selfee.pipelines.decode import stream_blocks

        (src,) = make_sources([info], SelfeeConfig())
        rows.append(_rate("decode", f"DALI ({device.type})", lambda: sum(len(b) for b in stream_blocks(src, device)),
                          "frames/s", f"{info.width}x{info.height} {info.codec}"))
    except ImportError as exc:
        rows.append({"measure": "decode", "what": "DALI", "error": f"unavailable: {exc}"})
    return rows


def _rate(measure_name: str, what: str, fn, unit: str, detail: str = "") -> dict:
    try:
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        return {"measure": measure_name, "what": what, "value": n / dt, "unit": unit, "detail": detail}
    except Exception as exc:  # a lane that cannot run here
        return {"measure": measure_name, "what": what, "error": f"{type(exc).__name__}: {exc}"[:160]}


def pipeline_rows(cfg, video: Path, device: torch.device, batches: int) -> list[dict]:
    """Training-pipeline samples/s (decode, live frames, two augmented views on the device): the PyTorch
    reference and the DALI pipeline, timed as bench/pipeline.py times them."""
    from selfee.bench.pipeline import time_batches
    from selfee.data import TorchPipeline, make_sources
    from selfee.video import probe

    sources = make_sources([probe(video)], cfg)
    makers = [("reference (PyAV + torch)", lambda: TorchPipeline(sources, cfg, device))]
    try:
        from selfee.pipelines.train import DaliTrainPipeline

        dali_cfg = cfg.replace(**{"train.pipeline": "dali"})
        makers.append((f"DALI ({device.type})", lambda: DaliTrainPipeline(sources, dali_cfg, device)))
    except ImportError as exc:
        makers.append((f"DALI: unavailable ({exc})", None))
    rows = []
    detail = f"batch {cfg.optim.batch_size}, two views"
    for name, make in makers:
        if make is None:
            rows.append({"measure": "pipeline", "what": "DALI", "error": name})
            continue

        def run(make=make):
            pipe = make()
            try:
                return time_batches(iter(pipe), batches, cfg.optim.batch_size, device)
            finally:
                pipe.close()

        try:
            rows.append({"measure": "pipeline", "what": name, "value": run(), "unit": "samples/s", "detail": detail})
        except Exception as exc:  # a lane that cannot run here
            rows.append({"measure": "pipeline", "what": name, "error": f"{type(exc).__name__}: {exc}"[:160]})
    return rows


def train_rows(p: Profile, device: torch.device) -> list[dict]:
    """Training-step samples/s (compute only, synthetic inputs) from bench/train_step.py."""
    from selfee.bench.train_step import run_one

    args = argparse.Namespace(device=str(device), arch=p.arch, batch_size=p.train_batch, size=p.size,
                              steps=p.train_steps, repeats=p.repeats)
    amp = "bf16" if device.type == "cuda" else "off"
    try:
        r = run_one(args, amp, True, False)
        return [{"measure": "train step", "what": f"{p.arch} {amp} channels-last", "value": r["samples_per_s"],
                 "unit": "samples/s", "detail": f"batch {p.train_batch}"}]
    except Exception as exc:
        return [{"measure": "train step", "what": p.arch, "error": f"{type(exc).__name__}: {exc}"[:160]}]


def run_bench(profile: str | None = None, device: str = "auto", backends=BACKENDS, precision: str | None = None,
              video: str | None = None, out: str | None = None, parts=("decode", "pipeline", "train", "embed"),
              batch_size: int | None = None) -> tuple[list[dict], Path]:
    """Run the chosen parts; returns the rows and the JSON file they were saved in."""
    from selfee.runtime import resolve_device

    dev = resolve_device(device)
    p = PROFILES[profile or ("full" if dev.type == "cuda" else "quick")]
    if batch_size:
        p = replace(p, batch=batch_size)
    precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
    cfg = bench_config(p.arch, p.size, p.proj_dim).replace(**{
        "optim.batch_size": p.train_batch, "train.device": str(dev), "model.init": "none"})
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(video) if video else synthetic_video(Path(tmp) / "bench.mp4", p.video_frames, *p.video_wh)
        if "decode" in parts:
            rows += decode_rows(clip, dev)
        if "pipeline" in parts:
            rows += pipeline_rows(cfg, clip, dev, p.pipeline_batches)
        if "train" in parts:
            rows += train_rows(p, dev)
        if "embed" in parts:
            weights = random_checkpoint(cfg, Path(tmp) / "bench.pt")
            for r in run_backends(cfg, weights, clip, backends, str(dev), p.batch, precision, p.iters, p.repeats,
                                  work=Path(tmp)):
                what = f"{r['backend']} ({r['precision']})"
                if "error" in r:
                    rows.append({"measure": "embed", "what": what, "error": r["error"]})
                    continue
                rows.append({"measure": "embed model-only", "what": what, "value": r["model_fps"],
                             "unit": "frames/s", "detail": f"batch {p.batch}"})
                if "end_to_end_fps" in r:
                    rows.append({"measure": "embed end-to-end", "what": what, "value": r["end_to_end_fps"],
                                 "unit": "frames/s", "detail": f"{r['frames']} frames, {r['pipeline']} decode"})
    setting = {"profile": profile or ("full" if dev.type == "cuda" else "quick"), **p.__dict__, "device": str(dev),
               "precision": precision, "video": video or f"generated {p.video_wh[0]}x{p.video_wh[1]} H.264"}
    path = save_results("bench", [{**r, **{"setting": setting}} for r in rows], out)
    return rows, path


def summary(rows: list[dict], path: Path) -> str:
    env = environment()
    where = env.get("gpu") or env["cpu"]
    head = (f"{where}; torch {env['torch']}, DALI {env['dali']}, ONNX Runtime {env['onnxruntime']}, "
            f"TensorRT {env['tensorrt']}" + (f", driver {env.get('driver')}" if env.get("driver") else ""))
    shown = [{**r, "error": r["error"][:90] + "..." if len(r["error"]) > 90 else r["error"]} if "error" in r else r
             for r in rows]
    return f"{head}\n{table(shown, COLUMNS)}\nsaved {path}"


def main(argv=None):
    from selfee.console import setup_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--precision", default=None)
    p.add_argument("--video", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup_logging()
    rows, path = run_bench(args.profile, args.device, args.backends, args.precision, args.video, args.out)
    print(summary(rows, path))


if __name__ == "__main__":
    main()
