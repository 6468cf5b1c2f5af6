"""k-NN behaviour classification of embeddings with leave-one-video-out cross-validation.

The Selfee paper (bioRxiv 2021.12.24.474120) evaluates embeddings with a weighted k-NN
classifier (after Wu et al., "Unsupervised feature learning via non-parametric instance
discrimination", CVPR 2018): each of the k most cosine-similar reference frames votes for its
label with weight exp(s / tau), votes are multiplied by the class-balance weight N / N_c, and the
predicted label is the class with the highest score. Held-out videos never see themselves: every
video is classified against the labelled frames of all the *other* videos.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from selfee._deps import require
from selfee.analysis import io, plots
from selfee.analysis.distance import DEFAULT_BLOCK_ELEMS, cosine_topk
from selfee.analysis.temporal import (
    FEATURES,
    check_window,
    feature_dim,
    sliding_mode,
    temporal_features,
    window_average_scores,
)
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

SMOOTHING = ("mode", "mean", "none")
# Features larger than this are written to memory maps in the output directory, not kept in RAM.
IN_MEMORY_BYTES = 1 << 30


@dataclass(frozen=True)
class KnnOptions:
    """The classifier (defaults: the original's k = 200, tau = 0.07, sliding mode over 21 frames)."""

    k: int = 200
    tau: float = 0.07
    balance: bool = True  # multiply class votes by N / N_c of the reference set
    features: str = "frame"  # frame | mean | mean_std (temporal aggregation of the embeddings)
    feature_window: int = 21  # frames in the feature window (odd)
    smooth: str = "mode"  # mode (of predicted labels) | mean (of class scores) | none
    smooth_window: int = 21  # frames in the prediction window (odd)
    # With segments of one video: reference frames within this many frames of the held-out segment
    # are left out (neighbouring frames are near-duplicates that would leak across the boundary).
    gap: int = 21
    device: str = "auto"  # auto | cpu | cuda | cuda:N (resolved once by classify)
    block_elems: int = DEFAULT_BLOCK_ELEMS

    def __post_init__(self):
        if self.k < 1:
            raise SelfeeError(f"k must be >= 1 (got {self.k})")
        if self.tau <= 0:
            raise SelfeeError(f"tau must be > 0 (got {self.tau})")
        if self.features not in FEATURES:
            raise SelfeeError(f"features must be one of {', '.join(FEATURES)} (got {self.features!r})")
        if self.smooth not in SMOOTHING:
            raise SelfeeError(f"smooth must be one of {', '.join(SMOOTHING)} (got {self.smooth!r})")
        check_window(self.feature_window, "feature window")
        check_window(self.smooth_window, "smoothing window")
        if self.gap < 0:
            raise SelfeeError(f"gap must be >= 0 frames (got {self.gap})")


@dataclass
class LabelledSeq:
    """One labelled unit of cross-validation (a video or a segment of one)."""

    name: str
    frames: np.ndarray
    times: np.ndarray
    features: np.ndarray  # n x D (array or memory map)
    y: np.ndarray  # int64 class index per row, -1 = no label
    source: str = ""  # the video the rows come from (segments of one video share it); '' = ``name``

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(self.y >= 0)

    @property
    def video(self) -> str:
        return self.source or self.name


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------


def balance_weights(ref_y: np.ndarray, n_classes: int, balance: bool) -> np.ndarray:
    """N / N_c for the classes in the reference (0 for absent ones); ones without balancing."""
    counts = np.bincount(ref_y, minlength=n_classes).astype(np.float64)
    if not balance:
        return (counts > 0).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, counts.sum() / counts, 0.0)
    return w


def knn_scores(query, ref_parts: Sequence[np.ndarray], ref_y: np.ndarray, n_classes: int, opts: KnnOptions,
               on_rows=None) -> np.ndarray:
    """Class scores (n_query x n_classes, float64) of the weighted, class-balanced k-NN vote.

    The vote weight exp((s - 1) / tau) is the original exp(s / tau) times the constant
    exp(-1 / tau): rankings and predictions are the same, and it cannot overflow.
    """
    k = min(opts.k, len(ref_y))
    sims, idx = cosine_topk(query, ref_parts, k, device=opts.device, block_elems=opts.block_elems, on_rows=on_rows)
    ok = idx >= 0
    w = torch.where(ok, torch.exp((sims.double() - 1.0) / opts.tau), torch.zeros((), dtype=torch.float64))
    cls = torch.as_tensor(ref_y)[idx.clamp(min=0)]
    scores = torch.zeros(len(idx), n_classes, dtype=torch.float64)
    scores.scatter_add_(1, cls, w)
    return scores.numpy() * balance_weights(ref_y, n_classes, opts.balance)[None, :]


def predict(scores: np.ndarray, opts: KnnOptions) -> tuple[np.ndarray, np.ndarray]:
    """Temporal aggregation of one sequence's predictions: (labels, scores) after smoothing."""
    if opts.smooth == "mean":
        scores = window_average_scores(scores, opts.smooth_window)
    pred = scores.argmax(axis=1)
    if opts.smooth == "mode":
        pred = sliding_mode(pred, opts.smooth_window, scores.shape[1])
    return pred, scores


def leave_one_out(n: int) -> Iterator[tuple[int, list[int]]]:
    """(held-out index, reference indices): every unit once, never in its own reference."""
    for i in range(n):
        yield i, [j for j in range(n) if j != i]


def reference_rows(seqs: Sequence[LabelledSeq], i: int, ref: Sequence[int], gap: int) -> list[np.ndarray]:
    """Labelled rows of each reference sequence that the held-out ``seqs[i]`` may be compared with.

    Segments of the held-out sequence's own video lose their rows within ``gap`` video frames of
    it (frames ``first - gap`` to ``last + gap``); other videos keep all their labelled rows.
    """
    held = seqs[i]
    lo, hi = int(held.frames.min()) - gap, int(held.frames.max()) + gap
    out = []
    for j in ref:
        rows = seqs[j].labelled
        if seqs[j].video == held.video:
            f = seqs[j].frames[rows]
            rows = rows[(f < lo) | (f > hi)]
        out.append(rows)
    return out


def cross_validate(
    seqs: list[LabelledSeq], n_classes: int, opts: KnnOptions, on_fold: Callable[[int, list[int]], None] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Leave-one-sequence-out predictions and scores for every row of every sequence.

    A held-out segment is compared with its own video's other segments only beyond ``opts.gap``
    frames of it (see :func:`reference_rows`).
    """
    if len(seqs) < 2:
        raise SelfeeError("leave-one-video-out needs at least two labelled videos (or use --segments)")
    from selfee.console import progress

    preds, scores = [], []
    with progress() as bar:
        task = bar.add_task("k-NN folds", total=sum(len(s.y) for s in seqs), rate="")
        for i, ref in leave_one_out(len(seqs)):
            if on_fold is not None:
                on_fold(i, ref)
            rows = reference_rows(seqs, i, ref, opts.gap)
            parts = [_rows(seqs[j].features, r) for j, r in zip(ref, rows) if len(r)]
            ref_y = np.concatenate([seqs[j].y[r] for j, r in zip(ref, rows)])
            if not len(ref_y):
                hint = f" beyond --gap {opts.gap} frames" if any(seqs[j].video == seqs[i].video for j in ref) else ""
                raise SelfeeError(f"{seqs[i].name}: the other videos have no labelled frames{hint} to compare with")
            sc = knn_scores(seqs[i].features, parts, ref_y, n_classes, opts, lambda n: bar.advance(task, n))
            p, sc = predict(sc, opts)
            preds.append(p)
            scores.append(sc)
            log.info("%s: classified %d frames against %d reference frames", seqs[i].name, len(p), len(ref_y))
    return preds, scores


def _rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a (possibly memory-mapped) array; a contiguous run stays a view."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return a[idx[0] : idx[-1] + 1]
    return a[idx]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, n_classes: int) -> dict:
    """Macro F1 (over the classes in truth or prediction), mAP (over the classes present), accuracy."""
    skm = require("sklearn.metrics", "classification metrics")
    if not len(y_true):
        return {"frames": 0, "macro_f1": math.nan, "mAP": math.nan, "accuracy": math.nan}
    f1 = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    present = np.unique(y_true)
    aps = [skm.average_precision_score(y_true == c, scores[:, c]) for c in present]
    return {
        "frames": int(len(y_true)),
        "macro_f1": float(f1),
        "mAP": float(np.mean(aps)),
        "accuracy": float(np.mean(y_true == y_pred)),
    }


def per_class(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, classes: list[str]) -> list[dict]:
    skm = require("sklearn.metrics", "classification metrics")
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    rows = []
    for c in labels:
        ap = skm.average_precision_score(y_true == c, scores[:, c]) if s[c] else math.nan
        rows.append({"class": classes[c], "support": int(s[c]), "precision": float(p[c]), "recall": float(r[c]),
                     "f1": float(f[c]), "AP": float(ap)})
    return rows


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


# ---------------------------------------------------------------------------------------------
# From directories to results
# ---------------------------------------------------------------------------------------------


def sort_classes(names) -> list[str]:
    """Class names sorted numerically when they are all integers, else alphabetically."""
    names = sorted(set(names))
    try:
        return sorted(names, key=lambda s: int(s))
    except ValueError:
        return names


def load_labelled(
    embed_dir: Path, labels_dir: Path, segments: int = 1
) -> tuple[list[tuple[io.EmbeddedVideo, np.ndarray]], list[SelfeeError]]:
    """Videos of ``embed_dir`` with their per-row label names ('' = none), cut into segments."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise SelfeeError(f"{labels_dir}: not a directory of label files")
    videos, errors = io.list_videos(embed_dir)
    out = []
    stems = set()
    for v in videos:
        stems.add(v.stem)
        try:
            path = io.find_label_file(labels_dir, v.stem)
            if path is None:
                log.warning("%s: no %s.txt or %s.csv in %s; video skipped", v.path, v.stem, v.stem, labels_dir)
                continue
            lab = io.read_labels(path)
        except SelfeeError as exc:
            log.error("%s", exc)
            errors.append(exc)
            continue
        for seg in io.split_segments([v], segments):
            names = lab.for_video(seg)
            if not np.any(names != ""):
                log.warning("%s: no labelled frames (labels: %s); skipped", seg.stem, path)
                continue
            out.append((seg, names))
    for f in sorted(labels_dir.iterdir()):
        if f.suffix.lower() in io.LABEL_SUFFIXES and f.stem not in stems:
            log.warning("%s: no embeddings for this label file in %s", f, embed_dir)
    return out, errors


@dataclass
class ClassifyResult:
    out_dir: Path
    pooled: dict
    per_video: dict[str, dict]
    classes: list[str]
    errors: list[SelfeeError] = field(default_factory=list)


def classify(
    embed_dir: str | Path,
    labels_dir: str | Path,
    out_dir: str | Path,
    opts: KnnOptions = KnnOptions(),
    segments: int = 1,
    max_ethogram_rows: int = 12,
) -> ClassifyResult:
    """Leave-one-video-out k-NN classification; writes metrics, predictions and plots to ``out_dir``."""
    from selfee.runtime import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = replace(opts, device=str(resolve_device(opts.device)))  # the outputs record where it ran
    items, errors = load_labelled(Path(embed_dir), Path(labels_dir), segments)
    if len(items) < 2:
        raise SelfeeError(
            f"{embed_dir}: {len(items)} labelled video(s) found; leave-one-video-out needs at least two "
            "(use --segments N to cut a single video into N parts)"
        )
    dim = io.check_dims(v for v, _ in items)
    classes = sort_classes(n for _, names in items for n in names if n)
    index = {c: i for i, c in enumerate(classes)}
    cache = out / ".features"
    total = sum(v.n for v, _ in items) * feature_dim(opts.features, dim) * 4
    seqs = []
    for v, names in items:
        y = np.array([index.get(n, -1) for n in names], np.int64)
        x = v.load(mmap=True)
        if opts.features == "frame" and total <= IN_MEMORY_BYTES:
            feats = np.asarray(x, np.float32)
        elif opts.features == "frame":
            feats = x  # already on disk: streamed block by block
        else:
            target = None
            if total > IN_MEMORY_BYTES:
                cache.mkdir(exist_ok=True)
                target = np.lib.format.open_memmap(cache / f"{io.safe_name(v.stem)}.npy", "w+", np.float32,
                                                   (v.n, feature_dim(opts.features, dim)))
            feats = temporal_features(x, opts.features, opts.feature_window, out=target)
        seqs.append(LabelledSeq(v.stem, v.frames, v.times, feats, y, source=str(v.path)))
    preds, scores = cross_validate(seqs, len(classes), opts)
    protocol = (f"leave-one-segment-out, {segments} segments per video, gap {opts.gap} frames" if segments > 1
                else "leave-one-video-out")
    result = write_results(out, seqs, preds, scores, classes, opts, max_ethogram_rows, protocol)
    result.errors = errors
    shutil.rmtree(cache, ignore_errors=True)
    return result


def write_results(out: Path, seqs, preds, scores, classes, opts: KnnOptions, max_ethogram_rows: int = 12,
                  protocol: str = "leave-one-video-out") -> ClassifyResult:
    n = len(classes)
    per_video = {}
    for s, p, sc in zip(seqs, preds, scores):
        m = s.labelled
        per_video[s.name] = metrics(s.y[m], p[m], sc[m], n)
        norm = sc / np.maximum(sc.sum(axis=1, keepdims=True), 1e-300)
        io.write_table(
            out / "predictions" / f"{io.safe_name(s.name)}.csv",
            ["frame", "time_s", "true", "predicted", *[f"score_{c}" for c in classes]],
            ([int(f), float(t), classes[yt] if yt >= 0 else "", classes[pp], *map(float, row)]
             for f, t, yt, pp, row in zip(s.frames, s.times, s.y, p, norm)),
        )
    yt = np.concatenate([s.y[s.labelled] for s in seqs])
    yp = np.concatenate([p[s.labelled] for s, p in zip(seqs, preds)])
    ys = np.concatenate([sc[s.labelled] for s, sc in zip(seqs, scores)])
    pooled = metrics(yt, yp, ys, n)
    cls_rows = per_class(yt, yp, ys, classes)
    cm = confusion(yt, yp, n)

    io.write_table(out / "per_video.csv", ["video", "frames", "macro_f1", "mAP", "accuracy"],
                   ([k, v["frames"], v["macro_f1"], v["mAP"], v["accuracy"]] for k, v in per_video.items()))
    io.write_table(out / "per_class.csv", ["class", "support", "precision", "recall", "f1", "AP"],
                   ([r["class"], r["support"], r["precision"], r["recall"], r["f1"], r["AP"]] for r in cls_rows))
    io.write_table(out / "confusion.csv", ["true \\ predicted", *classes],
                   ([c, *map(int, row)] for c, row in zip(classes, cm)))
    with open(out / "metrics.json", "w") as fh:
        json.dump({"pooled": pooled, "per_video": per_video, "per_class": cls_rows, "classes": classes,
                   "confusion": cm.tolist(), "protocol": protocol, "options": asdict(opts)}, fh, indent=2)

    recall = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    plots.matrix(out / "confusion.png", recall, classes, classes,
                 f"k-NN confusion (row-normalized = recall); macro F1 {pooled['macro_f1']:.3f}, mAP {pooled['mAP']:.3f}",
                 "predicted", "true", vmin=0, vmax=1)
    rows = []
    for s, p in list(zip(seqs, preds))[:max_ethogram_rows]:
        rows.append((f"{s.name} true", s.times, s.y))
        rows.append((f"{s.name} predicted", s.times, p))
    plots.ethogram(out / "ethogram.png", rows, classes, f"true vs predicted labels ({protocol})")
    log.info("pooled over %d frames: macro F1 %.3f, mAP %.3f", pooled["frames"], pooled["macro_f1"], pooled["mAP"])
    return ClassifyResult(out, pooled, per_video, classes)
