"""Embedding videos into files: one video with an Embedder (:func:`embed_video`), many with the ranks of a
``torchrun`` sharing them (:func:`embed_videos`), and the run's ``manifest.json``.

Per video the output folder gets the files of :mod:`selfee.embed.outputs`: ``<stem>.npy``
(frames x dim), ``<stem>.csv`` (``frame,time_s``: 0-based frame index in the video and seconds
since its first frame), optionally ``<stem>.window<N>.npy`` (the original Selfee's windowed
average pooling) and ``<stem>.embed.json`` (the record that marks the video complete). A rerun
skips the videos whose record matches (same weights, data settings, dtype, window and video file)
and redoes the rest. Under ``torchrun`` the videos are sharded across ranks and rank 0 writes the
manifest.

Decode, host-to-device copies and inference overlap: the frame source runs in a prefetch thread
(into pinned memory for a GPU), the Embedder returns a pending result (``submit``) so the next
batch is queued before the previous one is read back, and GPU Embedders copy inputs on their own
CUDA stream.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import torch

from selfee.config import SelfeeConfig
from selfee.embed import shards
from selfee.embed.embedder import Embedder
from selfee.embed.outputs import VideoOutputs, completed, nearly_constant, video_key, warn_if_constant
from selfee.embed.shards import shard
from selfee.embed.source import prefetched
from selfee.errors import SelfeeError, VideoError
from selfee.fileio import atomic_write_json, check_writable, file_sha256
from selfee.runtime import init_distributed, versions

log = logging.getLogger("selfee")

INFLIGHT = 2  # batches queued on the embedder before the oldest is read back


class Opener(Protocol):
    """Opens weights as an Embedder on ``device`` (``selfee.export.open.open_embedder``); ``videos`` are the
    first ones to be embedded (a new cached export is verified on their frames)."""

    def __call__(self, weights: str | os.PathLike, backend: str, device: str,
                 videos: list[Path]) -> tuple[Embedder, SelfeeConfig]: ...


def embed_video(src, cfg: SelfeeConfig, embedder: Embedder, out_dir: Path, batch_size: int, dtype: str = "float32",
                on_batch=None, window: int | None = None, record: dict | None = None) -> dict:
    """Embed one video into ``out_dir/<stem>.npy`` + ``.csv`` (+ window file, + record); returns frames and throughput.

    The hot loop has no per-frame Python work: each batch is submitted to the embedder, and
    the previous one is read back and appended to the files while the next is computed.
    """
    window = cfg.embed.window if window is None else window
    out_dir = Path(out_dir)
    stem = src.info.path.stem
    t0 = time.perf_counter()
    outputs = VideoOutputs(out_dir, stem, dtype, window)
    inflight: deque = deque()
    decode: dict = {}  # the decode path this video took (lane, why, fallback): stored in its record

    def drain(keep: int) -> None:
        while len(inflight) > keep:
            frame, time_s, result = inflight.popleft()
            n = outputs.write(frame.numpy(), time_s.numpy(), result.result())
            if on_batch is not None:
                on_batch(n)

    try:
        for batch in prefetched(src, cfg, batch_size, torch.device(embedder.device), record=decode):
            inflight.append((batch.frame, batch.time_s, embedder.submit(batch.frames)))
            drain(INFLIGHT - 1)
        drain(0)
        if outputs.rows == 0:
            raise VideoError(src.info.path, "no frames to embed")
        dt = time.perf_counter() - t0
        info = {"video": str(src.info.path), "stem": stem, "seconds": dt, "fps": outputs.rows / dt if dt else 0.0,
                "npy": outputs.paths["npy"].name, "csv": outputs.paths["csv"].name, "decode": decode}
        if window > 1:
            info.update(window=window, window_npy=outputs.paths["window"].name)
        record = outputs.commit({**(record or {}), **info})
        warn_if_constant(src.info.path.name, record["spread"])
        return record
    except BaseException:
        outputs.abort()
        raise


# How long the ranks of a torchrun embedding wait for each other. A rank that finishes its videos
# early waits for the slowest one at the end, which can be hours: far beyond NCCL's 10 minutes.
DIST_TIMEOUT = timedelta(days=7)


def embed_videos(
    videos: list[str | os.PathLike],
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: SelfeeConfig | None = None,
    overrides: Iterable[str] = (),
    batch_size: int | None = None,
    device: str | None = None,
    backend: str | None = None,
    show_progress: bool = True,
    window: int | None = None,
    overwrite: bool = False,
    embedder: Embedder | None = None,
    corners=None,
    arena: str | None = None,
    open_embedder: Opener | None = None,
    shard_of: tuple[int, int] | None = None,
    shard_by: str = "name",
) -> dict:
    """``selfee-fast embed``: every frame of every video; bad videos are reported and skipped.

    The Embedder is ``embedder`` (with its ``cfg``; ``weights`` then only names it), or what
    ``open_embedder(weights, backend, device, videos)`` opens (``selfee.export.open_embedder``:
    the backend from the weights file) on each rank's device, in the rank's guarded part, so that a
    rank that cannot open it stops the others; ``backend`` defaults to ``cfg.embed.backend``
    where ``cfg`` is given, else ``auto``. ``cfg`` replaces the weights' config (``overrides``
    apply on top of the weights' config otherwise). ``corners`` (a corner file, a folder of
    ``<stem>.json``/``.csv`` or the corners as text) adds per-video arena correction of kind
    ``arena``, as in training (see ``selfee.video.arena.apply_corners``). Finished videos are
    skipped unless ``overwrite``. Under ``torchrun`` each rank embeds its share of the videos on
    its own GPU; the ranks meet once at the end (over gloo, with :data:`DIST_TIMEOUT`), and a rank
    that fails before then reports it there, so that the others stop with its error instead of
    waiting; rank 0 writes ``manifest.json``. ``shard_of=(I, N)`` embeds only share I of N of the sorted
    videos (``shard_by`` ``name`` or ``size``; see :mod:`selfee.embed.shards`) and writes a shard
    manifest; the last shard to finish writes ``manifest.json``.
    """
    from selfee.video import check_stems, expand_inputs

    if embedder is None and open_embedder is None:
        raise SelfeeError("embed_videos needs an embedder (with its cfg) or open_embedder to open the weights")
    if embedder is not None and cfg is None:
        raise SelfeeError("embed_videos: an embedder given directly needs its cfg")
    out_dir = check_writable(out_dir)
    paths = expand_inputs(videos)
    if not paths:
        raise SelfeeError("no videos given")
    check_stems(paths, "{stem}.npy")
    all_paths = paths
    if shard_of is not None:
        paths = shards.select(all_paths, *shard_of, by=shard_by)
        log.info("shard %d/%d: %d of %d video(s)", *shard_of, len(paths), len(all_paths))
        if not paths:  # more shards than videos: nothing to do but take part in the merge
            sha = file_sha256(weights) if Path(weights).is_file() else str(weights)
            return shards.finish(out_dir, shard_of, all_paths, {"weights": str(weights), "weights_sha256": sha,
                                                                "videos": [], "failed": [], "frames_embedded": 0,
                                                                "seconds": 0.0})

    was_distributed = _dist_initialized()
    dist, dev = init_distributed(device or (cfg.embed.device if cfg else "auto"), timeout=DIST_TIMEOUT)
    group = _gather_group(dist)
    try:
        try:
            if embedder is None:
                # A checkpoint exported into the cache now is verified on frames of the first video.
                embedder, wcfg = open_embedder(weights, backend or (cfg.embed.backend if cfg else "auto"), str(dev),
                                               videos=paths[:1])
                cfg = cfg if cfg is not None else _overridden(wcfg, overrides)
                _check_features(cfg, wcfg, embedder, weights)
            if window is not None:
                cfg = cfg.replace(**{"embed.window": window})
            mine = _embed_share(dist, paths, weights, out_dir, cfg, embedder, batch_size, show_progress, overwrite,
                                corners, arena)
        except Exception as exc:
            if not dist.enabled:
                raise
            _gather(dist, group, {"error": f"{type(exc).__name__}: {exc}"})  # the others stop instead of waiting
            raise
        parts = _gather(dist, group, mine)
        stopped = [(r, p["error"]) for r, p in enumerate(parts) if "error" in p]
        if stopped:
            raise SelfeeError("embedding stopped on " + "; ".join(f"rank {r}: {e}" for r, e in stopped)
                              + " (the videos the other ranks finished are kept; rerun to do the rest)")
        if not any(p["usable"] for p in parts):
            raise SelfeeError(f"none of the {len(paths)} videos can be used (see the messages above)")
        order = {str(p): i for i, p in enumerate(paths)}
        results = [r for p in parts for r in p["results"]]
        new_frames = sum(p["new_frames"] for p in parts)
        elapsed = max(p["elapsed"] for p in parts)
        manifest = {
            **mine["manifest"],
            "world_size": dist.world,
            "videos": sorted(results, key=lambda r: order.get(r["video"], len(order))),
            "failed": [f for p in parts for f in p["failures"]],
            "frames_embedded": new_frames,
            "seconds": elapsed,
            "fps": new_frames / elapsed if elapsed else 0.0,
            "nearly_constant": [r["video"] for r in results if nearly_constant(r.get("spread"))],
            "versions": versions(),
        }
        if dist.is_main and shard_of is not None:
            return shards.finish(out_dir, shard_of, all_paths, manifest)
        if dist.is_main:
            atomic_write_json(out_dir / "manifest.json", manifest)
        return manifest
    finally:
        if dist.enabled:
            import torch.distributed as tdist

            if not was_distributed:
                tdist.destroy_process_group()
            elif group is not None:
                tdist.destroy_process_group(group)


def _check_features(cfg: SelfeeConfig, wcfg: SelfeeConfig, embedder: Embedder, weights) -> None:
    """The embedding is the representation ``cfg.embed.features`` names: a checkpoint run eagerly switches to it
    (``--backend torch``); an export outputs the features it was made with, and asking for others is an error."""
    want, have = cfg.embed.features, wcfg.embed.features
    if want == have:
        return
    encoder = getattr(embedder, "encoder", None)
    if hasattr(encoder, "features") and hasattr(encoder, "embed_dim"):  # selfee.model.Encoder in a TorchEmbedder
        encoder.features = want
        embedder.dim = encoder.embed_dim
        log.info("%s: embedding the %s output (the checkpoint's embed.features is %s)", weights, want, have)
        return
    raise SelfeeError(f"{weights}: the {embedder.name} model outputs the {have} features, not the {want} that "
                      f"embed.features asks for (fixed when the model is exported); embed a checkpoint with "
                      f"--backend torch --set embed.features={want}, or export one trained with that setting")


def _overridden(cfg: SelfeeConfig, overrides: Iterable[str]) -> SelfeeConfig:
    """``cfg`` (the weights' config) with ``section.field=value`` overrides on top."""
    if not overrides:
        return cfg
    from selfee.config import _deep_merge, parse_overrides

    raw = cfg.to_dict()
    _deep_merge(raw, parse_overrides(overrides))
    return SelfeeConfig.from_dict(raw)


def _embed_share(dist, paths, weights, out_dir, cfg, embedder, batch_size, show_progress, overwrite, corners,
                 arena) -> dict:
    """This rank's part of :func:`embed_videos`: its videos embedded, its results and the run's settings."""
    from selfee.data import make_sources
    from selfee.video import open_inputs

    fixed = embedder.fixed_size  # a TensorRT engine's profile fixes the input size
    if fixed is not None and tuple(fixed) != tuple(cfg.data.input_size):
        raise SelfeeError(f"{weights}: the engine takes {fixed[0]}x{fixed[1]} frames but data.input_size is "
                          f"{cfg.data.input_size[0]}x{cfg.data.input_size[1]}; rebuild it or drop the override")
    win = cfg.embed.window
    dtype = cfg.embed.dtype
    bs = batch_size or cfg.embed.batch_size
    weights_hash = file_sha256(weights) if Path(weights).is_file() else str(weights)

    t_run = time.perf_counter()
    # this rank's share; bad videos (and bad corner entries) are reported and skipped
    inputs = open_inputs(paths, cfg, corners=corners, arena=arena, min_frames=cfg.data.min_frames,
                         select=lambda ps: shard(ps, dist.rank, dist.world), require=False)
    cfg, infos, failures = inputs.cfg, inputs.videos, inputs.failed
    results = []
    new_frames = 0
    with _progress(show_progress and dist.is_main) as bar:
        run_task = bar.add_task(f"{len(infos) + len(failures)} video(s)", total=sum(i.frames for i in infos), rate="")
        for info in infos:
            try:
                key = video_key(weights_hash, cfg, info.path, dtype, win)
                done = None if overwrite else completed(out_dir, info.path.stem, key, win)
                if done is not None:
                    log.info("%s: already embedded (%d frames), skipped", info.path.name, done["frames"])
                    results.append({**done, "video": str(info.path), "skipped": True})
                    bar.advance(run_task, info.frames)
                    continue
                (src,) = make_sources([info], cfg)
                meter = _Meter(bar, run_task, t_run, new_frames, info.path.name, src.frames)
                res = embed_video(src, cfg, embedder, out_dir, bs, dtype, window=win, on_batch=meter,
                                  record={"key": key, "weights_sha256": weights_hash, "backend": embedder.name})
                meter.close()
                new_frames += res["frames"]
                log.info("%s: %d frames, %.0f frames/s", info.path.name, res["frames"], res["fps"])
                results.append(res)
            except Exception as exc:  # one bad video is reported; the others go on
                problem = exc.problem if isinstance(exc, VideoError) else f"{type(exc).__name__}: {exc}"
                log.error("%s: %s", info.path, problem)
                failures.append({"video": str(info.path), "error": problem})
    manifest = {
        "weights": str(weights),
        "weights_sha256": weights_hash,
        "backend": embedder.name,
        "precision": getattr(embedder, "precision", None),
        **{k: getattr(embedder, attr) for k, attr in (("backend_selection", "selection"), ("backend_fallback", "fallback"))
           if getattr(embedder, attr, None)},
        "device": str(embedder.device),
        "batch_size": bs,
        "dtype": dtype,
        "window": win,
        "config": cfg.to_dict(),
    }
    return {"results": results, "failures": failures, "usable": len(infos), "new_frames": new_frames,
            "elapsed": time.perf_counter() - t_run, "manifest": manifest}


class _Meter:
    """Per-video and per-run progress with frames/s (a batch callback for :func:`embed_video`)."""

    def __init__(self, bar, run_task, t_run: float, run_done: int, name: str, total: int):
        self.bar, self.run_task, self.t_run, self.run_done = bar, run_task, t_run, run_done
        self.task = bar.add_task(name, total=total, rate="")
        self.t0 = time.perf_counter()
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.run_done += n
        now = time.perf_counter()
        self.bar.update(self.task, advance=n, rate=f"{self.done / max(now - self.t0, 1e-9):,.0f} frames/s")
        self.bar.update(self.run_task, advance=n, rate=f"{self.run_done / max(now - self.t_run, 1e-9):,.0f} frames/s")

    def close(self) -> None:
        self.bar.remove_task(self.task)


def _progress(show: bool):
    if show:
        from selfee.console import progress

        return progress()
    from rich.progress import Progress

    return Progress(disable=True)


def _dist_initialized() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def _gather_group(dist):
    """A gloo group with :data:`DIST_TIMEOUT` for the ranks' one meeting at the end (None without torchrun).

    Not the default group: NCCL's watchdog (10 minutes by default) would abort a rank that waits
    there for a slower one, and gloo gathers Python objects on the CPU.
    """
    if not dist.enabled:
        return None
    import torch.distributed as tdist

    return tdist.new_group(backend="gloo", timeout=DIST_TIMEOUT)


def _gather(dist, group, part: dict) -> list[dict]:
    """Every rank's ``part`` on every rank, in rank order (the manifest is one for the run)."""
    if not dist.enabled:
        return [part]
    import torch.distributed as tdist

    parts: list = [None] * dist.world
    tdist.all_gather_object(parts, part, group=group)
    return parts
