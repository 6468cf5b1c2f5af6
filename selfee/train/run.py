"""``selfee-fast train``: probe the videos, build the pipelines and the trainer, fit, write run.json.

Kept apart from the trainer, which takes any iterable of view batches: this is where training meets
the inputs (``selfee.video``), the data pipelines (``selfee.data``: which one runs is chosen once per run and recorded in
run.json), torchrun's set-up (processes, shared backgrounds) and run.json.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from selfee.checkpoint import checkpoint_config, load_checkpoint
from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError
from selfee.fileio import atomic_write_json, check_writable
from selfee.runtime import DistInfo, init_distributed, versions
from selfee.train.trainer import Trainer, check_batch

log = logging.getLogger("selfee")


def run_training(
    cfg: SelfeeConfig,
    videos: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    resume: bool = False,
    show_progress: bool = True,
    corners=None,
    arena: str | None = None,
    eval_videos: list[str | os.PathLike] | None = None,
    eval_labels: str | os.PathLike | None = None,
    monitor=None,
) -> dict:
    """``selfee-fast train``: probe videos, build the pipelines and the trainer, fit, summarise.

    ``corners`` (a corner file, a folder of ``<stem>.json``/``.csv`` or the corners as text) adds
    per-video arena correction of kind ``arena`` (see ``selfee.video.arena.apply_corners``). Videos that
    cannot be used are reported and skipped (``selfee.video.open_inputs``).
    """
    from selfee.data import build_pipeline, choose_pipeline, make_sources
    from selfee.video import open_inputs

    out_dir = Path(out_dir)
    if resume:
        last = out_dir / "last.pt"
        if not last.exists():
            raise SelfeeError(f"--resume: no checkpoint at {last}")
        saved = checkpoint_config(load_checkpoint(last))
        if saved.to_dict() != cfg.to_dict():
            log.warning("--resume: using the configuration saved with the run (%s), not the one given", last)
        cfg = saved
    dist, device = init_distributed(cfg.train.device)
    if dist.is_main:  # only rank 0 writes into the run folder
        check_writable(out_dir)
    check_batch(cfg, dist.world)

    sources = []
    if cfg.train.pipeline != "synthetic":
        # Bad videos (and bad corner entries) are reported and skipped; none usable is an error.
        inputs = open_inputs(videos, cfg, corners=None if resume else corners, arena=arena,
                             min_frames=cfg.data.min_frames)
        cfg = inputs.cfg
        sources = make_sources(inputs.videos, cfg, cache_dir=out_dir / "backgrounds")
        if dist.enabled:
            _share_backgrounds(sources, dist)
        log.info(
            "training on %d videos (%d frames); %d skipped", len(sources), sum(s.frames for s in sources),
            len(inputs.failures)
        )

    # The trainer's global config (for the schedule); pipelines draw per-rank batches.
    local_cfg = cfg.replace(**{"optim.batch_size": cfg.optim.batch_size // dist.world}) if dist.enabled else cfg
    backend = choose_pipeline(cfg, device)  # once: a fallback is said once, for every pipeline of the run
    plain = None
    if sources and cfg.train.embed_bn_frames:
        def plain():  # the embedding's inputs: live frames resized to the input size, no augmentation
            from selfee.embed.bn import plain_frames

            return plain_frames(local_cfg, sources, device, dist.rank, dist.world, backend)

    if monitor is None and eval_videos and dist.is_main:  # or a selfee.monitor.QualityMonitor given
        from selfee.monitor import QualityMonitor

        monitor = QualityMonitor.open(cfg, eval_videos, eval_labels)
    trainer = Trainer(cfg, out_dir, device=device, dist=dist, plain_frames=plain, monitor=monitor)
    if resume:
        trainer.load(out_dir / "last.pt")
        log.info("resuming at step %d", trainer.step)
    train_pipe = build_pipeline(local_cfg, sources, device, "train", trainer.step, dist.rank, dist.world, backend)
    eval_pipe = None
    if cfg.train.eval_every and cfg.data.holdout_fraction > 0 and train_pipe.name != "synthetic":
        eval_start = trainer.step // cfg.train.eval_every
        eval_pipe = build_pipeline(local_cfg, sources, device, "eval", eval_start, dist.rank, dist.world,
                                   backend)
    if dist.is_main:
        v = versions()
        atomic_write_json(out_dir / "run.json", {
            "videos": [str(s.info.path) for s in sources],
            "pipeline": train_pipe.name,
            "pipeline_choice": train_pipe.choice,  # wanted, taken, why, whether it was a fallback
            "device": str(device),
            "world_size": dist.world,
            "selfee_fast": v["selfee_fast"],
            "torch": v["torch"],
            "versions": v,
        })
    try:
        last = trainer.fit(train_pipe, eval_pipe, show_progress=show_progress)
    finally:
        train_pipe.close()
        if eval_pipe is not None:
            eval_pipe.close()
        if monitor is not None:
            monitor.plot(out_dir / "quality.png")
    stats = getattr(train_pipe, "stats", {})
    return {"step": trainer.step, "out_dir": str(out_dir), **last, **stats}


def _share_backgrounds(sources, dist: DistInfo) -> None:
    """Under torchrun, rank 0 computes the mean backgrounds and caches them in the run folder; the
    other ranks wait, then read its files, so that only rank 0 writes there."""
    need = [s for s in sources if s.pre.cfg.background == "mean"]
    if not need:
        return
    import datetime

    import torch.distributed as tdist

    # A gloo group (made by all ranks before the wait) with a long timeout: many long videos can
    # take rank 0 longer than NCCL's default 10 minutes.
    group = tdist.new_group(backend="gloo", timeout=datetime.timedelta(hours=2))
    if dist.is_main:
        for s in need:
            s.pre.background()
    tdist.barrier(group=group)
    tdist.destroy_process_group(group)
    if not dist.is_main:
        for s in need:
            s.pre.background()
