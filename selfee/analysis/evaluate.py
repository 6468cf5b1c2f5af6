"""End-to-end quality check: embed labelled videos, k-NN classify, and compare with two baselines.

The same frames (the trained weights' live frames, input size and preprocessing) are embedded
three ways: by the trained encoder, by an untrained encoder of the same architecture (random
weights, seeded), and as raw pixels (each live frame shrunk to ``pixel_size`` x ``pixel_size``
and flattened). Each embedding directory then goes through the same leave-one-video-out k-NN
classification (:mod:`selfee.analysis.classify`), so the three rows of the result differ only in
the features.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfee.analysis import io, plots
from selfee.analysis.classify import ClassifyResult, KnnOptions, classify
from selfee.embed.embedder import HostEmbedder
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

METHODS = ("trained", "untrained", "pixels")


class PixelEmbedder(HostEmbedder):
    """The raw-pixel baseline: live frames (B x 3 x H x W uint8) shrunk to ``size`` x ``size``, flattened."""

    name = "pixels"

    def __init__(self, size: int = 16):
        if size < 1:
            raise SelfeeError(f"pixel size must be >= 1 (got {size})")
        self.size = size
        self.dim = None

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        from selfee.augment import resize_uint8

        small = resize_uint8(frames, (self.size, self.size))
        return small.flatten(1).float().div_(255.0).numpy()


UNTRAINED_BN = ("frames", "init")


def untrained_embedder(cfg, device: str, seed: int, videos=(), bn: str = "frames"):
    """An encoder of the configured architecture with seeded random weights (no ImageNet, no training),
    embedding the same representation as the trained one (``embed.features``).

    ``bn="frames"``: its BatchNorm statistics are estimated on ``train.embed_bn_frames`` plain frames of
    ``videos`` (:class:`selfee.video.VideoInfo` or paths), as training does for the trained encoder
    (``embed_bn``); ``"init"``: the statistics it is built with (mean 0, variance 1: no normalisation at
    all, which leaves a random ResNet's outputs nearly parallel: mean pairwise cosine 0.98-0.998 on the fly
    video, docs/quality.md). With ``train.embed_bn_frames = 0`` the trained encoder embeds with its training
    statistics and the untrained one keeps its initial ones. ``seed`` = a run's ``train.seed`` gives the
    weights that run started from.
    """
    from selfee.data import make_sources
    from selfee.embed import TorchEmbedder
    from selfee.embed.bn import fit_embedding_bn
    from selfee.model import Selfee

    if bn not in UNTRAINED_BN:
        raise SelfeeError(f"untrained BatchNorm must be one of {', '.join(UNTRAINED_BN)} (got {bn!r})")
    torch.manual_seed(seed)
    encoder = Selfee(cfg.model).encoder
    encoder.features = cfg.embed.features
    if bn == "frames" and cfg.train.embed_bn_frames and videos:
        infos = list(videos)
        if not all(hasattr(v, "frames") for v in infos):
            from selfee.video import open_inputs

            infos = open_inputs(infos, cfg, min_frames=cfg.data.min_frames).videos
        seen = fit_embedding_bn(encoder, cfg, make_sources(infos, cfg))
        log.info("untrained encoder: BatchNorm statistics estimated on %d plain frames", seen)
    return TorchEmbedder(encoder.eval(), device)


def embed_with(embedder, videos, cfg, out_dir: Path, batch_size: int, infos=None) -> Path:
    """Embed ``videos`` with any Embedder into ``out_dir`` (same files as ``selfee-fast embed``);
    ``infos``: the videos already opened (:func:`selfee.video.open_inputs`)."""
    from selfee.data import make_sources
    from selfee.embed import embed_video
    from selfee.video import open_inputs

    out_dir.mkdir(parents=True, exist_ok=True)
    if infos is None:
        infos = open_inputs(videos, cfg, min_frames=cfg.data.min_frames).videos  # bad videos: reported and skipped
    results = [embed_video(src, cfg, embedder, out_dir, batch_size) for src in make_sources(infos, cfg)]
    with open(out_dir / "manifest.json", "w") as fh:
        json.dump({"embedder": embedder.name, "videos": results, "config": cfg.to_dict()}, fh, indent=2, default=str)
    return out_dir


@dataclass
class EvaluateResult:
    out_dir: Path
    results: dict[str, ClassifyResult]
    table: list[dict] = field(default_factory=list)


def evaluate(
    videos: list[str | Path],
    labels_dir: str | Path,
    weights: str | Path,
    out_dir: str | Path,
    opts: KnnOptions = KnnOptions(),
    segments: int = 1,
    pixel_size: int = 16,
    seed: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    methods: tuple[str, ...] = METHODS,
    reuse: bool = False,
    untrained_bn: str = "frames",
) -> EvaluateResult:
    """Embed with the trained weights and the two baselines, classify each, tabulate and plot."""
    from selfee.checkpoint import checkpoint_config, load_checkpoint
    from selfee.embed import embed_videos
    from selfee.export.open import open_embedder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SelfeeError(f"unknown method(s) {', '.join(unknown)} (choose from: {', '.join(METHODS)})")
    try:
        cfg = checkpoint_config(load_checkpoint(weights))
    except SelfeeError as exc:
        raise SelfeeError(f"{exc} (evaluate needs a checkpoint, to build the untrained baseline of the same architecture)") from None
    bs = batch_size or cfg.embed.batch_size
    results, table = {}, []
    infos = None  # the videos, opened (probed) once for the untrained and pixel baselines
    for m in methods:
        emb = out / f"embed_{m}"
        if reuse and _complete(emb, videos):
            log.info("%s: reusing the embeddings in %s", m, emb)
        elif m == "trained":
            embed_videos(videos, weights, emb, device=device, batch_size=bs, open_embedder=open_embedder)
        else:
            if infos is None:
                from selfee.video import open_inputs

                infos = open_inputs(videos, cfg, min_frames=cfg.data.min_frames).videos
            embedder = (untrained_embedder(cfg, device, seed, infos, untrained_bn) if m == "untrained"
                        else PixelEmbedder(pixel_size))
            embed_with(embedder, videos, cfg, emb, bs, infos)
        res = classify(emb, labels_dir, out / f"classify_{m}", opts, segments=segments)
        results[m] = res
        dim = io.list_videos(emb)[0][0].dim
        table.append({"method": m, "dim": dim, **res.pooled})
        log.info("%s: macro F1 %.4f, mAP %.4f", m, res.pooled["macro_f1"], res.pooled["mAP"])
    io.write_table(out / "evaluation.csv", ["method", "dim", "frames", "macro_f1", "mAP", "accuracy"],
                   ([r["method"], r["dim"], r["frames"], r["macro_f1"], r["mAP"], r["accuracy"]] for r in table))
    with open(out / "evaluation.json", "w") as fh:
        json.dump({"weights": str(weights), "videos": [str(v) for v in videos], "labels": str(labels_dir),
                   "segments": segments, "pixel_size": pixel_size, "seed": seed, "knn": asdict(opts),
                   "untrained_bn": untrained_bn, "features": cfg.embed.features,
                   "results": table, "per_class": {m: _per_class(out / f"classify_{m}") for m in results}},
                  fh, indent=2)
    plot_table(out / "evaluation.png", table)
    return EvaluateResult(out, results, table)


def _complete(emb: Path, videos) -> bool:
    """True when ``emb`` already holds embeddings of every video (with ``reuse``, a rerun skips them)."""
    from selfee.video import expand_inputs

    try:
        return all((emb / f"{Path(v).stem}.npy").is_file() and (emb / f"{Path(v).stem}.csv").is_file()
                   for v in expand_inputs(videos))
    except SelfeeError:
        return False


def _per_class(classify_dir: Path) -> list[dict]:
    return json.loads((classify_dir / "metrics.json").read_text())["per_class"]


def plot_table(path: Path, table: list[dict]) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = [r["method"] for r in table]
    x = np.arange(len(names))
    for i, (key, label) in enumerate((("macro_f1", "macro F1"), ("mAP", "mAP"), ("accuracy", "accuracy"))):
        vals = [r[key] for r in table]
        bars = ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (leave-one-out k-NN)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("trained Selfee vs baselines, same frames and classifier")
    return plots.save(fig, path)
