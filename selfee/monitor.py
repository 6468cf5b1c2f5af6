"""Quality measured while training: k-NN macro F1 and accuracy of the current weights on labelled videos.

The online k-NN monitor of solo-learn and lightly, with ``classify``'s classifier. At the start, a
subsample of the labelled frames of the evaluation videos is decoded once (live frames at the input
size, exactly as ``embed`` reads them) and kept in memory. Every ``train.knn_every`` steps and at each
checkpoint those frames are embedded with a copy of the current encoder that carries the embedding's
BatchNorm statistics (re-estimated on plain training frames, as the trainer does for its checkpoints),
and classified by the weighted, class-balanced k-NN of :mod:`selfee.analysis.classify`, leave one video
out (one video: leave one of ``segments`` contiguous segments out, reference frames within ``gap``
frames of it left out). Two baselines are computed once, at the start, on the same frames: the
untrained encoder (the run's initial weights for its seed, BatchNorm re-estimated on plain frames) and
raw pixels (:class:`selfee.analysis.evaluate.PixelEmbedder`). The trainer logs the returned fields
(:data:`FIELDS`) to metrics.csv, TensorBoard and its progress line; :meth:`QualityMonitor.plot`
draws ``quality.png``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

# Columns the monitor adds to metrics.csv (empty on rows without an evaluation).
FIELDS = ("knn_f1", "knn_acc", "knn_f1_untrained", "knn_acc_untrained", "knn_f1_pixels", "knn_acc_pixels", "knn_s")


# ---------------------------------------------------------------------------------------------
# The evaluation frames and the classifier
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Labelled live frames of the evaluation videos (a subsample), held in memory."""

    frames: torch.Tensor  # N x 3 x H x W uint8 at the input size
    index: np.ndarray  # N frame numbers in their video
    video: np.ndarray  # N video number (into ``names``)
    y: np.ndarray  # N class index (into ``classes``)
    names: list[str]
    classes: list[str]
    stride: int  # one labelled frame in ``stride`` was kept


def load_eval_set(videos, labels_dir: str | Path, cfg, max_frames: int = 2000) -> EvalSet:
    """Decode the labelled frames of ``videos`` (labels in the formats ``classify`` reads), keep about
    ``max_frames`` of them at a regular stride."""
    from selfee.analysis import io
    from selfee.analysis.classify import sort_classes
    from selfee.data import make_sources
    from selfee.embed.source import iter_embed_batches
    from selfee.video import open_inputs

    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise SelfeeError(f"--eval-labels {labels_dir}: not a directory of label files")
    inputs = open_inputs(videos, cfg, min_frames=cfg.data.min_frames)
    per_video = []
    for src in make_sources(inputs.videos, cfg):
        stem = Path(src.info.path).stem
        path = io.find_label_file(labels_dir, stem)
        if path is None:
            raise SelfeeError(f"--eval-labels: no {stem}.txt or {stem}.csv in {labels_dir}")
        labels = io.read_labels(path)
        per_video.append((stem, src, labels))
    if not per_video:
        raise SelfeeError("--eval-videos: no usable video")
    total = sum(len(lab.frames) for _, _, lab in per_video)
    stride = max(1, math.ceil(total / max(max_frames, 1)))
    classes = sort_classes(str(x) for _, _, lab in per_video for x in lab.labels)
    cls = {c: i for i, c in enumerate(classes)}
    frames, index, video, y = [], [], [], []
    for v, (stem, src, lab) in enumerate(per_video):
        kept = 0
        for b in iter_embed_batches(src, cfg, 256):
            f = b.frame.numpy()
            names = lab.for_video(SimpleNamespace(n=len(f), frames=f))
            rows = np.flatnonzero((names != "") & (f % stride == 0))
            if len(rows):
                frames.append(b.frames[torch.from_numpy(rows)])
                index.append(f[rows])
                video.append(np.full(len(rows), v))
                y.append(np.array([cls[str(n)] for n in names[rows]], np.int64))
                kept += len(rows)
        if not kept:
            raise SelfeeError(f"{stem}: no labelled frame in {labels_dir}")
    return EvalSet(torch.cat(frames), np.concatenate(index), np.concatenate(video), np.concatenate(y),
                   [s for s, _, _ in per_video], classes, stride)


def knn_opts(stride: int = 1, **overrides):
    """``classify``'s default k-NN, with its windows (in frames) turned into rows at ``stride``."""
    from selfee.analysis.classify import KnnOptions

    def rows(frames: int) -> int:
        n = max(1, round(frames / stride))
        return n if n % 2 else n + 1

    base = KnnOptions(device="cpu")
    return replace(base, feature_window=rows(base.feature_window), smooth_window=rows(base.smooth_window), **overrides)


def knn_quality(x: np.ndarray, index: np.ndarray, video: np.ndarray, y: np.ndarray, n_classes: int,
                opts=None, segments: int = 5) -> dict:
    """Pooled ``macro_f1`` and ``accuracy`` of leave-one-out k-NN over videos (one video: over
    ``segments`` contiguous segments, the reference frames within ``opts.gap`` frames of the held-out
    segment left out), with ``classify``'s classifier and metrics. Rows are in video order."""
    from selfee.analysis.classify import (
        LabelledSeq,
        knn_scores,
        leave_one_out,
        metrics,
        predict,
        reference_rows,
    )

    opts = opts or knn_opts()
    seqs = []
    for v in np.unique(video):
        rows = np.flatnonzero(video == v)
        cuts = segments if len(np.unique(video)) == 1 else 1
        bounds = np.linspace(0, len(rows), cuts + 1).round().astype(int)  # as io.split_segments
        parts = [rows[a:b] for a, b in zip(bounds, bounds[1:])]
        seqs += [LabelledSeq(f"{v}#{i}", index[r], index[r].astype(np.float64), x[r], y[r], source=str(v))
                 for i, r in enumerate(parts) if len(r)]
    if len(seqs) < 2:
        raise SelfeeError("the k-NN needs two evaluation videos or segments > 1")
    truth, preds, scores = [], [], []
    for i, ref in leave_one_out(len(seqs)):
        rows = reference_rows(seqs, i, ref, opts.gap)
        parts = [seqs[j].features[r] for j, r in zip(ref, rows) if len(r)]
        ref_y = np.concatenate([seqs[j].y[r] for j, r in zip(ref, rows)])
        if not len(ref_y):
            continue
        p, sc = predict(knn_scores(seqs[i].features, parts, ref_y, n_classes, opts), opts)
        truth.append(seqs[i].y)
        preds.append(p)
        scores.append(sc)
    if not truth:
        raise SelfeeError(f"no reference frames beyond the gap of {opts.gap} frames: use more segments or videos")
    m = metrics(np.concatenate(truth), np.concatenate(preds), np.concatenate(scores), n_classes)
    return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}


@torch.no_grad()
def embed_frames(encoder: torch.nn.Module, frames: torch.Tensor, batch: int = 256, device=None, autocast=None) -> np.ndarray:
    """Embeddings (N x D float32) of uint8 live frames by ``encoder`` in eval mode."""
    from contextlib import nullcontext

    from selfee.augment import to_float

    device = device or next(encoder.parameters()).device
    encoder.eval()
    out = []
    for i in range(0, len(frames), batch):
        x = to_float(frames[i : i + batch].to(device)).contiguous(memory_format=torch.channels_last)
        with autocast() if autocast is not None else nullcontext():
            out.append(encoder(x).float().cpu())
    return torch.cat(out).numpy()


def with_bn(encoder: torch.nn.Module, buffers: dict | None) -> torch.nn.Module:
    """A copy of ``encoder`` carrying the BatchNorm ``buffers`` (as ``load_model`` applies ``embed_bn``)."""
    enc = copy.deepcopy(encoder)
    if buffers:
        sd = enc.state_dict()
        sd.update({k: v.to(sd[k].device) for k, v in buffers.items()})
        enc.load_state_dict(sd)
    return enc.eval()


# ---------------------------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------------------------


class QualityMonitor:
    """Evaluates the trainer's current weights; ``start`` once before training, ``step`` after each step."""

    def __init__(self, data: EvalSet, every: int, segments: int = 5, pixel_size: int = 16, opts=None):
        self.data = data
        self.every = every
        self.segments = segments
        self.pixel_size = pixel_size
        self.opts = opts or knn_opts(data.stride)
        self.baselines: dict[str, float] | None = None
        self.history: list[dict] = []

    @classmethod
    def open(cls, cfg, videos, labels_dir) -> QualityMonitor:
        t = time.perf_counter()
        data = load_eval_set(videos, labels_dir, cfg, cfg.train.knn_frames)
        log.info("quality monitor: %d labelled frames of %d video(s) (every %d), %d classes, read in %.1f s",
                 len(data.y), len(data.names), data.stride, len(data.classes), time.perf_counter() - t)
        return cls(data, cfg.train.knn_every, cfg.train.knn_segments)

    def score(self, x: np.ndarray) -> dict:
        d = self.data
        return knn_quality(x, d.index, d.video, d.y, len(d.classes), self.opts, self.segments)

    def _embed(self, trainer, encoder, buffers) -> np.ndarray:
        enc = with_bn(encoder, buffers)
        enc.features = trainer.cfg.embed.features  # what embed writes (the copy's; training keeps its own)
        return embed_frames(enc, self.data.frames, trainer.cfg.embed.batch_size, trainer.device, trainer._autocast)

    def start(self, trainer) -> dict:
        """The baselines (once) and, for a run starting at step 0, that step's row ({} on a resumed run,
        whose row for its step was logged before it stopped).

        The untrained encoder gets BatchNorm statistics the way the trained one does
        (:meth:`Trainer.embedding_bn`: plain frames, when the trainer has them; else its own)."""
        from selfee.analysis.evaluate import PixelEmbedder
        from selfee.checkpoint import build_model
        from selfee.model import embedding_bn_stats

        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trainer.cfg.train.seed)  # the trainer's initial weights
            initial = build_model(trainer.cfg.model, byol=trainer.cfg.loss.byol).encoder.to(trainer.device)
        initial = initial.to(memory_format=torch.channels_last)
        bn, n = None, trainer.cfg.train.embed_bn_frames
        if n and trainer.plain_frames is not None:
            bn, _ = embedding_bn_stats(initial, trainer.plain_frames(), n, trainer._autocast)
        untrained = self.score(self._embed(trainer, initial, bn))
        pixels = self.score(PixelEmbedder(self.pixel_size)(self.data.frames))
        self.baselines = {"knn_f1_untrained": untrained["macro_f1"], "knn_acc_untrained": untrained["accuracy"],
                          "knn_f1_pixels": pixels["macro_f1"], "knn_acc_pixels": pixels["accuracy"]}
        log.info("quality monitor baselines: k-NN macro F1 untrained %.3f, pixels %.3f (%.1f s)",
                 untrained["macro_f1"], pixels["macro_f1"], time.perf_counter() - t)
        return self.evaluate(trainer) if trainer.step == 0 else {}

    def due(self, step: int, checkpoint: bool) -> bool:
        """Whether to evaluate at ``step``: every ``every`` steps and at each checkpoint."""
        return checkpoint or bool(self.every and step % self.every == 0)

    def evaluate(self, trainer) -> dict:
        t = time.perf_counter()
        bn = trainer.embedding_bn()
        s = self.score(self._embed(trainer, trainer.model.encoder, bn["encoder"] if bn else None))
        row = {"knn_f1": s["macro_f1"], "knn_acc": s["accuracy"], **(self.baselines or {}),
               "knn_s": time.perf_counter() - t}
        self.history.append({"step": trainer.step, **row})
        return row

    def plot(self, path: str | Path) -> Path | None:
        """``quality.png``: k-NN macro F1 against the step, the baselines as horizontal lines."""
        if not self.history:
            return None
        from selfee.analysis import plots

        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.8))
        steps = [r["step"] for r in self.history]
        ax.plot(steps, [r["knn_f1"] for r in self.history], "o-", label="trained")
        for key, label, style in (("knn_f1_untrained", "untrained encoder", "--"), ("knn_f1_pixels", "raw pixels", ":")):
            if self.baselines and key in self.baselines:
                ax.axhline(self.baselines[key], linestyle=style, color="grey" if style == "--" else "black", label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel("k-NN macro F1")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.set_title(f"quality while training ({len(self.data.y)} frames, {len(self.data.classes)} classes)")
        return plots.save(fig, Path(path))
