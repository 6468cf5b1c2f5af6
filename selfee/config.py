"""One frozen configuration for every command: dataclasses per concern, the paper's recipe as defaults.

The original Selfee (bioRxiv 2021.12.24.474120) kept its settings as constants at the top of its
training script. Here they live in frozen dataclasses, validated once at load time, readable from
TOML or YAML and overridable from the command line with dotted keys (``optim.batch_size=64``).
Derived values (the learning rate, warm-up steps, ...) are properties, never stored twice, and
nothing is silently coupled (the original doubled the batch size whenever AMP was on).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from selfee.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-video preprocessing done on the fly (what the original did offline with a tracker tool).

    Every field can also be set per video in ``DataConfig.videos`` (keyed by file name or stem).
    """

    start_s: float = 0.0  # skip this many seconds at the start of each video
    duration_s: float | None = None  # use at most this many seconds (None: to the end)
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height in pixels of the decoded frame
    roi_margin: float = 0.0  # grow the ROI by this fraction of its size on each side
    resize: tuple[int, int] | None = None  # height, width after the ROI (None: keep)
    background: str = "none"  # none | mean: subtract a per-video mean background
    background_seconds: float | None = 60.0  # frames for the background come from the first N s (None: whole video)
    background_samples: int = 100  # number of frames averaged for the background
    illumination: str = "none"  # none | equalize (histogram) | normalize (per-frame min-max)
    invert: bool = False  # 255 - value (dark animals on a light floor become bright)
    arena: str = "none"  # none | open_field | plus_maze: perspective-warp from four corners
    arena_corners: tuple[tuple[float, float], ...] | None = None  # four (x, y) corners in decoded pixels
    arena_size: int = 500  # side of the square warped arena, pixels
    arena_margin: float | None = None  # margin as a fraction of the arena (None: 0.2 open field, 0.1 plus maze)

    def __post_init__(self):
        _check(self.start_s >= 0, "start_s", "must be >= 0", self.start_s)
        _check(self.duration_s is None or self.duration_s > 0, "duration_s", "must be > 0 or null", self.duration_s)
        if self.roi is not None:
            _check(len(self.roi) == 4, "roi", "must be [x, y, width, height]", self.roi)
            _check(self.roi[0] >= 0 and self.roi[1] >= 0, "roi", "x and y must be >= 0", self.roi)
            _check(self.roi[2] > 0 and self.roi[3] > 0, "roi", "width and height must be > 0", self.roi)
        _check(self.roi_margin >= 0, "roi_margin", "must be >= 0", self.roi_margin)
        if self.resize is not None:
            _check(len(self.resize) == 2 and min(self.resize) > 0, "resize", "must be [height, width] > 0", self.resize)
        _one_of(self.background, "background", ("none", "mean"))
        _check(
            self.background_seconds is None or self.background_seconds > 0,
            "background_seconds",
            "must be > 0 or null",
            self.background_seconds,
        )
        _check(self.background_samples >= 1, "background_samples", "must be >= 1", self.background_samples)
        _one_of(self.illumination, "illumination", ("none", "equalize", "normalize"))
        _one_of(self.arena, "arena", ("none", "open_field", "plus_maze"))
        if self.arena != "none":
            _check(
                self.arena_corners is not None and len(self.arena_corners) == 4,
                "arena_corners",
                "needs four (x, y) corners when arena is set",
                self.arena_corners,
            )
        _check(self.arena_size >= 16, "arena_size", "must be >= 16", self.arena_size)
        _check(
            self.arena_margin is None or 0 <= self.arena_margin < 1, "arena_margin", "must be in [0, 1)", self.arena_margin
        )

    @property
    def is_identity(self) -> bool:
        return self == PreprocessConfig(start_s=self.start_s, duration_s=self.duration_s)


@dataclass(frozen=True)
class DataConfig:
    """Which frames a sample is made of and how batches are drawn from videos."""

    live_frames: bool = True  # channels = grey frames t-k, t, t+k; False: the plain RGB frame
    frame_interval: int = 2  # k (paper: 2 for 30-fps mice, 1 for flies)
    inner_shuffle: bool = True  # every batch from a single video (strong batch effects, e.g. mice)
    input_size: tuple[int, int] = (256, 192)  # height, width of the network input (flies: 224, 224)
    chunk_frames: int = 256  # keyframe intervals shorter than this are merged into chunks of up to this many frames
    chunk_fraction: float = 0.5  # share of a decoded chunk's frames used as samples (decode cost ~ 1/this)
    # A batch holds ~chunk_frames * chunk_fraction / pool_batches samples of one chunk (4 here; 8 gave 16
    # near-duplicates). Memory: a block is ~pool_batches * batch / chunk_fraction working-size grey frames
    # (mouse preset: ~16.6k frames of 366x275, 1.7 GB) and the loader holds two (docs/pipelines.md).
    pool_batches: int = 32  # batches drawn from one shuffled pool of decoded chunks
    # innerShuffle: a block's batches come from this many videos (each batch from one of them, in a random
    # order), so consecutive batches and BatchNorm's running statistics span several videos; but a block's
    # chunks are shared among its videos, so each more video per block gives a batch fewer chunks of its video
    # (mouse preset: ~9 samples of one chunk per batch with 1 video, ~13 with 2, ~20 with 4).
    inner_shuffle_videos: int = 2
    holdout_fraction: float = 0.05  # last fraction of each video held out for the evaluation loss
    decode_threads: int = 2  # videos decoded in parallel by the reference loader
    augment_threads: int = 0  # threads augmenting batches when training on the CPU (0: one per core)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    videos: dict[str, PreprocessConfig] = field(default_factory=dict)  # per-video overrides, by name or stem

    def __post_init__(self):
        _check(self.frame_interval >= 1, "frame_interval", "must be >= 1", self.frame_interval)
        _check(
            len(self.input_size) == 2 and all(int(v) >= 16 for v in self.input_size),
            "input_size",
            "must be [height, width], each >= 16",
            self.input_size,
        )
        _check(self.chunk_frames >= 8, "chunk_frames", "must be >= 8", self.chunk_frames)
        _check(0 < self.chunk_fraction <= 1, "chunk_fraction", "must be in (0, 1]", self.chunk_fraction)
        _check(self.pool_batches >= 1, "pool_batches", "must be >= 1", self.pool_batches)
        _check(self.inner_shuffle_videos >= 1, "inner_shuffle_videos", "must be >= 1", self.inner_shuffle_videos)
        _check(0 <= self.holdout_fraction < 0.5, "holdout_fraction", "must be in [0, 0.5)", self.holdout_fraction)
        _check(self.decode_threads >= 1, "decode_threads", "must be >= 1", self.decode_threads)
        _check(self.augment_threads >= 0, "augment_threads", "must be >= 0", self.augment_threads)

    def preprocess_for(self, video: str | Path) -> PreprocessConfig:
        """The preprocessing of one video: a per-video entry (by file name, then stem) or the default."""
        p = Path(video)
        return self.videos.get(p.name) or self.videos.get(p.stem) or self.preprocess

    @property
    def min_frames(self) -> int:
        """Shortest usable video: one full live frame needs 2k + 1 frames."""
        return 2 * self.frame_interval + 1


@dataclass(frozen=True)
class AugmentConfig:
    """Per-view augmentation, in the original's order: crop, rotate, flips, Turbo, colour jitter."""

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)  # each side of the crop, as a fraction of the frame
    rotation_deg: float = 37.0  # rotation uniform in +-this
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    turbo_p: float = 0.5  # probability of the Turbo colormap (per channel lookup)
    brightness: float = 0.1  # factor uniform in [1-b, 1+b]
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1  # shift uniform in [-h, h] (fraction of the hue circle)

    def __post_init__(self):
        lo, hi = self.crop_scale
        _check(0 < lo <= hi <= 1, "crop_scale", "must satisfy 0 < min <= max <= 1", self.crop_scale)
        _check(0 <= self.rotation_deg <= 180, "rotation_deg", "must be in [0, 180]", self.rotation_deg)
        for name in ("hflip_p", "vflip_p", "turbo_p"):
            v = getattr(self, name)
            _check(0 <= v <= 1, name, "must be a probability in [0, 1]", v)
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            _check(0 <= v < 1, name, "must be in [0, 1)", v)
        _check(0 <= self.hue <= 0.5, "hue", "must be in [0, 0.5]", self.hue)


_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "resnext50_32x4d")


@dataclass(frozen=True)
class ModelConfig:
    """ResNet backbone + SimSiam projector/predictor + CLD head (paper sizes by default)."""

    arch: str = "resnet50"
    proj_dim: int = 2048  # projector hidden and output width (the embedding is its output)
    pred_hidden: int = 512  # predictor bottleneck
    cld_dim: int = 1024  # CLD head output (the original tied it to 2 x pred_hidden)
    init: str = "imagenet"  # none | imagenet (torchvision IMAGENET1K_V1, as the original) | a checkpoint path (either format)

    def __post_init__(self):
        _one_of(self.arch, "arch", _ARCHS)
        for name in ("proj_dim", "pred_hidden", "cld_dim"):
            v = getattr(self, name)
            _check(v >= 2, name, "must be >= 2", v)
        _check(bool(self.init), "init", "must be 'none', 'imagenet' or a checkpoint path", self.init)


@dataclass(frozen=True)
class LossConfig:
    """SimSiam (arXiv:2011.10566) + lambda x CLD (Wang et al., CVPR 2021)."""

    cld: bool = True
    cld_lambda: float = 2.0
    cld_lambda_ramp: bool = False  # cosine ramp of lambda from 0 to cld_lambda over the run
    clusters: int = 10  # k-means K
    kmeans_iters: int = 10
    temperature: float = 0.07
    byol: bool = False  # EMA target encoder instead of a shared one (the original: "not recommended")
    byol_decay: float = 0.99

    def __post_init__(self):
        _check(self.cld_lambda >= 0, "cld_lambda", "must be >= 0", self.cld_lambda)
        _check(self.clusters >= 2, "clusters", "must be >= 2", self.clusters)
        _check(self.kmeans_iters >= 1, "kmeans_iters", "must be >= 1", self.kmeans_iters)
        _check(self.temperature > 0, "temperature", "must be > 0", self.temperature)
        _check(0 <= self.byol_decay < 1, "byol_decay", "must be in [0, 1)", self.byol_decay)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with a one-cycle schedule (PyTorch OneCycleLR semantics, as the original used).

    Momentum: by default (``cycle_momentum``) the schedule sets it at every step, 0.95 at the
    start, down to 0.85 at the learning-rate peak, back up to 0.95 at the end (OneCycleLR's
    defaults). The original created its SGD with momentum=0.9 but ran OneCycleLR with
    ``cycle_momentum=True``, which overwrote it, so 0.9 was never used; ``momentum`` below only
    applies, constant, with ``cycle_momentum = false``.
    """

    batch_size: int = 256  # global (all processes); with CLD each process's share must be >= loss.clusters
    base_lr: float = 0.05  # per 256 samples; lr = base_lr * batch_size / 256
    momentum: float = 0.9  # used only with cycle_momentum = false (then constant)
    weight_decay: float = 1e-4
    steps: int = 20_000
    warmup_fraction: float = 0.025  # one-cycle pct_start
    cycle_momentum: bool = True  # momentum 0.95 -> 0.85 -> 0.95 with the lr cycle (OneCycleLR; the original)
    div_factor: float = 25.0  # initial lr = lr / div_factor
    final_div_factor: float = 1e4  # final lr = initial lr / final_div_factor

    def __post_init__(self):
        _check(self.batch_size >= 2, "batch_size", "must be >= 2 (batch norm and k-means need a batch)", self.batch_size)
        _check(self.base_lr > 0, "base_lr", "must be > 0", self.base_lr)
        _check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay)
        _check(self.steps >= 1, "steps", "must be >= 1", self.steps)
        _check(0 < self.warmup_fraction < 1, "warmup_fraction", "must be in (0, 1)", self.warmup_fraction)
        _check(self.div_factor >= 1, "div_factor", "must be >= 1", self.div_factor)
        _check(self.final_div_factor >= 1, "final_div_factor", "must be >= 1", self.final_div_factor)

    @property
    def lr(self) -> float:
        """Peak learning rate, scaled linearly with the batch size."""
        return self.base_lr * self.batch_size / 256

    @property
    def warmup_steps(self) -> int:
        return max(1, math.floor(self.warmup_fraction * self.steps))


@dataclass(frozen=True)
class TrainConfig:
    """How the run executes: device, precision, pipeline, checkpoints, logging."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 (with a grad scaler) | off
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    pipeline: str = "auto"  # auto (DALI on a GPU where installed, else torch) | dali | torch | synthetic
    sync_bn: bool = False  # SyncBatchNorm under torchrun (CUDA only: PyTorch has no CPU SyncBatchNorm)
    seed: int = 0
    checkpoint_every: int = 5_000
    eval_every: int = 100  # loss on the held-out split every N steps (0: never)
    log_every: int = 10
    keep_checkpoints: int = 0  # 0: keep all periodic checkpoints; N: keep the newest N
    tensorboard: bool = True  # also write TensorBoard events when tensorboard is installed
    # BatchNorm statistics for embedding, re-estimated on this many un-augmented frames at every checkpoint and
    # stored beside the training ones (0: embed with the training statistics, as the original did)
    embed_bn_frames: int = 4096
    # Quality monitor (``train --eval-videos V... --eval-labels DIR``, selfee.monitor): k-NN of the current
    # weights every knn_every steps (0: at checkpoints only) on about knn_frames labelled frames; one video is
    # cut into knn_segments segments for leave-one-segment-out
    knn_every: int = 500
    knn_frames: int = 1000
    knn_segments: int = 5

    def __post_init__(self):
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            "must be auto, cpu, cuda or cuda:N",
            self.device,
        )
        _one_of(self.amp, "amp", ("auto", "bf16", "fp16", "off"))
        _one_of(self.pipeline, "pipeline", ("auto", "dali", "torch", "synthetic"))
        _check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1", self.checkpoint_every)
        _check(self.eval_every >= 0, "eval_every", "must be >= 0", self.eval_every)
        _check(self.log_every >= 1, "log_every", "must be >= 1", self.log_every)
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", "must be >= 0", self.keep_checkpoints)
        _check(self.embed_bn_frames >= 0, "embed_bn_frames", "must be >= 0", self.embed_bn_frames)
        _check(self.knn_every >= 0, "knn_every", "must be >= 0", self.knn_every)
        _check(self.knn_frames >= 10, "knn_frames", "must be >= 10", self.knn_frames)
        _check(self.knn_segments >= 1, "knn_segments", "must be >= 1", self.knn_segments)


@dataclass(frozen=True)
class EmbedConfig:
    """Bulk embedding of every frame."""

    batch_size: int = 256
    dtype: str = "float32"  # float32 | float16 (of the saved .npy)
    window: int = 0  # > 1: also save the original's windowed average pooling over this many frames
    backend: str = "auto"  # auto (from the weights file) | torch | torchscript | onnx | tensorrt
    device: str = "auto"
    pipeline: str = "auto"  # frame source: auto (DALI on a GPU where installed) | dali | torch (PyAV reference)
    # the representation an embedding is: projector (the paper's projector output) | backbone (the pooled
    # ResNet features the projector reads) | both (side by side, each L2-normalized). Part of the weights:
    # a checkpoint's config sets it, an export is made with it (docs/quality.md: backbone for short CPU runs)
    features: str = "projector"

    def __post_init__(self):
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)
        _one_of(self.features, "features", ("projector", "backbone", "both"))
        _one_of(self.dtype, "dtype", ("float32", "float16"))
        _check(self.window >= 0, "window", "must be >= 0", self.window)
        _one_of(self.backend, "backend", ("auto", "torch", "torchscript", "onnx", "tensorrt"))
        _one_of(self.pipeline, "pipeline", ("auto", "dali", "torch"))
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            "must be auto, cpu, cuda or cuda:N",
            self.device,
        )


@dataclass(frozen=True)
class SelfeeConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def __post_init__(self):
        # Rules across sections. k-means groups each batch into loss.clusters groups; under
        # torchrun each process clusters its own share (checked again with the world size).
        if self.loss.cld and self.optim.batch_size < self.loss.clusters:
            raise ConfigError(
                f"config field 'optim.batch_size' ({self.optim.batch_size}) must be >= 'loss.clusters' "
                f"({self.loss.clusters}) when loss.cld is on: k-means groups each batch into loss.clusters groups"
            )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SelfeeConfig:
        raw = _merge_per_video(raw)
        return _build(cls, raw, "")

    @classmethod
    def load(cls, path: str | Path | None = None, preset: str | None = None, overrides=()) -> SelfeeConfig:
        """Defaults <- preset <- file <- ``key=value`` overrides, validated once."""
        merged: dict[str, Any] = {}
        if preset:
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset '{preset}' (choose from: {', '.join(sorted(PRESETS))})")
            _deep_merge(merged, PRESETS[preset])
        if path is not None:
            loaded = read_config_file(path)
            file_preset = loaded.pop("preset", None)
            if file_preset:
                if file_preset not in PRESETS:
                    raise ConfigError(f"{path}: unknown preset '{file_preset}'")
                base: dict[str, Any] = {}
                _deep_merge(base, PRESETS[file_preset])
                _deep_merge(base, merged)
                merged = base
            _deep_merge(merged, loaded)
        _deep_merge(merged, parse_overrides(overrides))
        return cls.from_dict(merged)

    def replace(self, **dotted: Any) -> SelfeeConfig:
        """A copy with dotted fields replaced: ``cfg.replace(**{"optim.steps": 10})``."""
        raw = self.to_dict()
        _deep_merge(raw, _nest(dotted))
        return SelfeeConfig.from_dict(raw)

    # -- output ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Presets: the paper's two settings. The defaults above are the original script's (mice).
# --------------------------------------------------------------------------------------------

# The CPU presets' budget (fly-cpu, mouse-cpu): ResNet-18 with small heads, 400 steps of 32 in bf16, about
# 7-9 minutes on 2 cores (docs/quality.md); the backbone output is embedded (see there).
_CPU_BUDGET: dict[str, dict[str, Any]] = {
    "model": {"arch": "resnet18", "proj_dim": 128, "pred_hidden": 32, "cld_dim": 64, "init": "none"},
    "loss": {"clusters": 4},
    "optim": {"batch_size": 32, "base_lr": 0.5, "steps": 400},
    "train": {"amp": "bf16", "checkpoint_every": 400, "eval_every": 0, "log_every": 20, "embed_bn_frames": 2048},
    "embed": {"batch_size": 64, "features": "backbone"},
}

PRESETS: dict[str, dict[str, Any]] = {
    "mouse": {
        "data": {"frame_interval": 2, "inner_shuffle": True, "input_size": [256, 192]},
    },
    "fly": {
        "data": {"frame_interval": 1, "inner_shuffle": False, "input_size": [224, 224]},
    },
    # The fly and mouse settings on 2 CPU cores (docs/quality.md): the paper's semantics (frame interval,
    # sampling mode) with a budget that trains in minutes (400 steps: 7-9 min measured on 2 shared cores, bf16
    # about halving a CPU step): ResNet-18 with small heads, no ImageNet, ~96 px, batch 32, BatchNorm frames
    # spread over the videos, and the backbone output as the embedding (short runs' projector output was the
    # less transferable one; the paper's projector is --set embed.features=projector). No Turbo or hue jitter
    # (they re-code and mix the three time channels of a live frame, i.e. the motion).
    "fly-cpu": {
        "data": {"frame_interval": 1, "inner_shuffle": False, "input_size": [96, 96]},
        # a crop centred on one fly: no random crop (it cut the other fly out of a view), any rotation (the
        # inscribed circle, 2.8 body lengths around the centred male, stays in view)
        "augment": {"crop_scale": [1.0, 1.0], "rotation_deg": 180.0, "turbo_p": 0.0, "hue": 0.0},
        **_CPU_BUDGET,
    },
    # whole-arena mouse videos at half the mouse preset's size (4:3, as it): the paper's crop and rotation
    "mouse-cpu": {
        "data": {"frame_interval": 2, "inner_shuffle": True, "input_size": [128, 96]},
        "augment": {"turbo_p": 0.0, "hue": 0.0},
        **_CPU_BUDGET,
    },
    # Small and fast, for CPU smoke runs and the demo: not the paper's recipe.
    "tiny": {
        "data": {"input_size": [64, 64], "pool_batches": 4, "frame_interval": 1},
        "model": {"arch": "resnet18", "proj_dim": 128, "pred_hidden": 32, "cld_dim": 64, "init": "none"},
        "loss": {"clusters": 4},
        "optim": {"batch_size": 32, "steps": 200},
        "train": {"checkpoint_every": 100, "eval_every": 50, "log_every": 10, "embed_bn_frames": 256},
        "embed": {"batch_size": 64},
    },
}

# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=_yaml_loader()) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as exc:  # a parse error: say where
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping")
    return data


def _yaml_loader():
    """A safe YAML loader where only true/false are booleans (``amp: off`` stays the string "off")."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


def parse_overrides(items) -> dict[str, Any]:
    """``["optim.batch_size=64", "data.input_size=[224,224]"]`` -> nested dict (values parsed as YAML)."""
    import yaml

    flat: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.field=value")
        key, value = item.split("=", 1)
        try:
            flat[key.strip()] = yaml.load(value, Loader=_yaml_loader()) if value.strip() else None
        except yaml.YAMLError:
            flat[key.strip()] = value
    return _nest(flat)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def _merge_per_video(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-video preprocessing entries start from the default preprocessing."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        return raw
    base = data.get("preprocess") or {}
    videos = {}
    for name, entry in data["videos"].items():
        if entry is not None and not isinstance(entry, dict):
            raise ConfigError(f"config field 'data.videos.{name}' must be a table of preprocessing fields")
        videos[name] = _deep_merge(_deep_merge({}, base), entry or {})
    return {**raw, "data": {**data, "videos": videos}}


def _deep_merge(dst: dict, src: dict) -> dict:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and key != "videos":
            _deep_merge(dst[key], value)
        elif isinstance(value, dict) and key != "videos":
            dst[key] = _deep_merge({}, value)
        else:
            dst[key] = value
    return dst


# --------------------------------------------------------------------------------------------
# Typed construction with errors that name the field
# --------------------------------------------------------------------------------------------

_CURRENT_PATH: list[str] = []


def _check(ok: bool, name: str, msg: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config field '{_qualify(name)}' {msg} (got {value!r})")


def _one_of(value: str, name: str, choices) -> None:
    _check(value in choices, name, f"must be one of {', '.join(choices)}", value)


def _qualify(name: str) -> str:
    return ".".join([*_CURRENT_PATH, name]) if _CURRENT_PATH else name


def _build(cls, raw: Any, path: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section '{path or 'top level'}' must be a table/mapping (got {raw!r})")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, names, n=1)
        where = f"{path}.{key}" if path else key
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(names))})"
        raise ConfigError(f"unknown config field '{where}'{hint}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        where = f"{path}.{f.name}" if path else f.name
        kwargs[f.name] = _coerce(raw[f.name], hints[f.name], where)
    _CURRENT_PATH[:] = path.split(".") if path else []
    try:
        return cls(**kwargs)
    finally:
        _CURRENT_PATH.clear()


def _coerce(value: Any, tp: Any, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        last_err = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                last_err = exc
        raise last_err or ConfigError(f"config field '{where}' has an invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{where}' must be a list (got {value!r})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config field '{where}' must have {len(args)} items (got {value!r})")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}' must be a table/mapping (got {value!r})")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"config field '{where}' must be true or false (got {value!r})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config field '{where}' must be an integer (got {value!r})")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"config field '{where}' must be an integer (got {value!r})") from None
        if not f.is_integer():
            raise ConfigError(f"config field '{where}' must be an integer (got {value!r})")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config field '{where}' must be a number (got {value!r})")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config field '{where}' must be a number (got {value!r})") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config field '{where}' must be a string (got {value!r})")
        return str(value)
    return value


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj
