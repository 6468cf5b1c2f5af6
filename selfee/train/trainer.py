"""The Selfee trainer: one object owning device, precision, optimizer, schedule and checkpoints.

Channels-last, autocast (bf16 on GPU by default; fp16 with a gradient scaler as an option; fp32
on CPU), optional ``torch.compile``, SGD with the one-cycle schedule of the paper's recipe,
lambda for CLD, a NaN guard, collapse levels, a periodic held-out loss, CSV (and TensorBoard)
metrics (``selfee.train.logs``), atomic checkpoints with everything needed to resume exactly,
Ctrl-C safe. Under ``torchrun`` it wraps the model in DistributedDataParallel; only rank 0 writes.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from selfee.checkpoint import build_model, checkpoint_dict, load_checkpoint, load_state
from selfee.config import SelfeeConfig
from selfee.errors import SelfeeError
from selfee.fileio import atomic_save
from selfee.losses import cld_weight, collapse_level, selfee_loss
from selfee.model import Selfee
from selfee.runtime import DistInfo, resolve_amp, resolve_device
from selfee.schedule import optim_schedule
from selfee.train.logs import MetricsLog, Progress

log = logging.getLogger("selfee")


class TrainingDiverged(SelfeeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Batches over processes
# ---------------------------------------------------------------------------------------------


def check_batch(cfg: SelfeeConfig, world: int) -> None:
    """The global batch splits evenly over ``world`` processes, and with CLD each share is at least
    ``loss.clusters`` (k-means runs on each process's own batch)."""
    b, k = cfg.optim.batch_size, cfg.loss.clusters
    if world > 1 and b % world:
        raise SelfeeError(f"optim.batch_size={b} must be divisible by the {world} processes")
    if cfg.loss.cld and b // world < k:
        raise SelfeeError(
            f"optim.batch_size={b} over {world} processes gives {b // world} samples per process, fewer than "
            f"loss.clusters={k} (k-means groups each process's batch): use optim.batch_size >= {k * world} "
            "or fewer clusters"
        )


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Owns the model, optimizer, precision and run directory; ``fit`` runs the loop."""

    def __init__(
        self,
        cfg: SelfeeConfig,
        out_dir: str | os.PathLike,
        model: Selfee | None = None,
        device: torch.device | None = None,
        dist: DistInfo | None = None,
        plain_frames: Callable[[], Iterator[torch.Tensor]] | None = None,
        monitor=None,
    ):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        # batches of un-augmented training frames, for the embedding's BatchNorm statistics (see save)
        self.plain_frames = plain_frames
        self._embed_bn: tuple[int, dict | None] | None = None  # (step, statistics) of the last estimate
        self.monitor = monitor  # selfee.monitor.QualityMonitor (rank 0) or None
        self.dist = dist or DistInfo()
        self.device = device or resolve_device(cfg.train.device)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        if self.dist.enabled:
            check_batch(cfg, self.dist.world)
            if cfg.train.sync_bn and self.device.type != "cuda":
                raise SelfeeError("train.sync_bn=true needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU version); "
                                  "set train.sync_bn=false")
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.model = (model or build_model(cfg.model, byol=cfg.loss.byol)).to(self.device)
        if self.dist.enabled and cfg.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.forward = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # without CLD the CLD head gets no gradient: DDP must not wait for it
            self.forward = DDP(self.model, device_ids=ids, find_unused_parameters=not cfg.loss.cld)
        if cfg.train.compile:
            self.forward = torch.compile(self.forward)
        self._stop_requested = False

    # -- one step -------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the step's metrics as 0-d tensors (no host sync)."""
        cfg = self.cfg
        lr, momentum = optim_schedule(cfg.optim, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["momentum"] = momentum
        lam = cld_weight(self.step, cfg.optim.steps, cfg.loss.cld_lambda, cfg.loss.cld_lambda_ramp)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.forward(view1, view2)
        losses = selfee_loss(out, cfg.loss, lam)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if cfg.loss.byol:
            self.model.update_target(cfg.loss.byol_decay)
        self.step += 1
        return {
            **{k: v.detach() for k, v in losses.items()},
            "collapse_z": collapse_level(out.z1),
            "collapse_cld": collapse_level(out.c1),
            "lambda": torch.tensor(lam),
            "lr": torch.tensor(lr),
            "momentum": torch.tensor(momentum),
        }

    @torch.no_grad()
    def eval_step(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses on a held-out batch, the model in eval mode (as the original's test loss)."""
        lam = cld_weight(self.step, self.cfg.optim.steps, self.cfg.loss.cld_lambda, self.cfg.loss.cld_lambda_ramp)
        self.model.eval()
        with self._autocast():
            out = self.model(view1, view2)
        losses = selfee_loss(out, self.cfg.loss, lam)
        self.model.train()
        return {f"val_{k}": v for k, v in losses.items()}

    # -- checkpoints ------------------------------------------------------------------------------

    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _np_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return checkpoint_dict(self.model, self.cfg, step=self.step, optimizer=self.optimizer.state_dict(),
                               scheduler={"step": self.step, "kind": "one_cycle"}, scaler=self.scaler.state_dict(),
                               rng=rng)

    def save(self, name: str | None = None) -> Path | None:
        """Write ``step{N}.pt`` (or ``name``) and ``last.pt`` atomically; rank 0 only."""
        if not self.dist.is_main:
            return None
        state = self.state()
        bn = self.embedding_bn()
        if bn is not None:
            state["embed_bn"] = bn
        path = atomic_save(state, self.out_dir / (name or f"step{self.step:07d}.pt"))
        atomic_save(state, self.out_dir / "last.pt")
        self._prune()
        log.info("checkpoint: %s (step %d)", path, self.step)
        return path

    def embedding_bn(self) -> dict | None:
        """The encoder's BatchNorm statistics on ``train.embed_bn_frames`` plain frames (what
        ``load_model`` embeds with), or None when off or without a frame source. A failure costs the
        checkpoint these statistics only, never the checkpoint. Computed once per step (the quality
        monitor and the checkpoint of the same step share them)."""
        if self._embed_bn is not None and self._embed_bn[0] == self.step:
            return self._embed_bn[1]
        bn = self._estimate_embedding_bn()
        self._embed_bn = (self.step, bn)
        return bn

    def _estimate_embedding_bn(self) -> dict | None:
        n = self.cfg.train.embed_bn_frames
        if not n or self.plain_frames is None:
            return None
        from selfee.model import embedding_bn_stats

        try:
            buffers, seen = embedding_bn_stats(self.model.encoder, self.plain_frames(), n, self._autocast)
        except Exception as exc:  # noqa: BLE001 - the checkpoint matters more
            log.warning("BatchNorm statistics for embedding not re-estimated (%s: %s); embedding will use the "
                        "training statistics of this checkpoint", type(exc).__name__, exc)
            return None
        if seen < 2:
            return None
        return {"frames": seen, "encoder": buffers}

    def _prune(self):
        keep = self.cfg.train.keep_checkpoints
        if keep <= 0:
            return
        ckpts = sorted(self.out_dir.glob("step*.pt"))
        for old in ckpts[:-keep]:
            old.unlink(missing_ok=True)

    def load(self, path: str | os.PathLike) -> None:
        """Restore everything from a checkpoint written by :meth:`save` (for ``--resume``)."""
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt:
            raise SelfeeError(f"{path}: holds weights only; cannot resume from it (use --init)")
        load_state(self.model, ckpt["model"], source=str(path))
        self._embed_bn = None  # new weights: estimate anew
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate(_as_python_state(rng["python"]))
        if "numpy" in rng:
            np.random.set_state(_as_np_state(rng["numpy"]))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, batches: Iterable, eval_batches: Iterable | None = None, show_progress: bool = True) -> dict:
        """Train until ``optim.steps``; returns the last logged metrics. Rank 0 logs and saves."""
        cfg = self.cfg.train
        total = self.cfg.optim.steps
        if self.step >= total:
            log.info("nothing to do: the run is at step %d of %d", self.step, total)
            return {}
        main = self.dist.is_main
        logs = None
        if main:  # only rank 0 touches the run folder
            self.out_dir.mkdir(parents=True, exist_ok=True)
            logs = MetricsLog(self.out_dir, self.cfg, self.step)
        it = iter(batches)
        eval_it: Iterator | None = iter(eval_batches) if eval_batches is not None else None
        sums: dict[str, torch.Tensor] = {}
        n_in_window = 0
        samples_in_window = 0
        t_window = time.perf_counter()
        t_start = t_window
        last: dict = {}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        progress = Progress(total, self.step, enabled=main and show_progress)
        previous_handler = self._install_sigint()
        if logs is not None and self.monitor is not None:  # baselines and the starting point of the quality curve
            row = self.monitor.start(self)
            if row:
                logs.write({"step": self.step, **row})
        try:
            while self.step < total:
                if self._stop_requested:
                    raise KeyboardInterrupt
                batch = next(it)
                metrics = self.train_step(batch[0], batch[1])
                bad |= ~torch.isfinite(metrics["loss"])
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0) + v.float()
                n_in_window += 1
                samples_in_window += batch[0].shape[0] * self.dist.world
                val = {}
                if eval_it is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    eb = next(eval_it)
                    val = {k: float(v) for k, v in self.eval_step(eb[0], eb[1]).items()}
                log_now = self.step % cfg.log_every == 0 or self.step == total or val
                ckpt_now = self.step % cfg.checkpoint_every == 0 or self.step == total
                knn_now = main and self.monitor is not None and self.monitor.due(self.step, ckpt_now)
                log_now = log_now or knn_now
                if log_now or ckpt_now:
                    if bool(bad):  # one host sync per log interval (and before evaluating diverged weights)
                        self._diverged()
                knn = self.monitor.evaluate(self) if knn_now else {}
                if log_now:
                    now = time.perf_counter()
                    dt = max(now - t_window, 1e-9)
                    last = {k: float(v) / n_in_window for k, v in sums.items()}
                    last.update(
                        step=self.step,
                        samples_per_s=samples_in_window / dt,
                        steps_per_s=n_in_window / dt,
                        elapsed_s=now - t_start,
                        **val,
                        **knn,
                    )
                    if logs is not None:
                        logs.write(last)
                    progress.update(self.step, last)
                    sums, n_in_window, samples_in_window, t_window = {}, 0, 0, now
                else:
                    progress.advance(self.step)
                if ckpt_now:
                    self.save()
                    self._barrier()
        except KeyboardInterrupt:
            progress.close()
            if not bool(bad):
                log.warning("interrupted at step %d: writing a checkpoint before exiting", self.step)
                self.save()
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            progress.close()
            if logs is not None:
                logs.close()
        return last

    def _diverged(self):
        last = self.out_dir / "last.pt"
        where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"loss became NaN/inf by step {self.step}; stopped without saving ({where}). "
            "Try a lower --lr, amp=bf16 instead of fp16, or check the input videos"
        )

    def _barrier(self):
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _install_sigint(self):
        """First Ctrl-C: finish the step, checkpoint, exit. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return None  # signal handlers can only be set from the main thread

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nCtrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

        return signal.signal(signal.SIGINT, handler)


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "g": has_gauss, "c": cached}


def _as_np_state(s):
    return (s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["g"], s["c"])


def _as_python_state(s):
    # torch.load(weights_only=True) returns lists where tuples were saved
    return (s[0], tuple(s[1]), s[2])
