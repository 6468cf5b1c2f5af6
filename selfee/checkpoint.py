"""Checkpoints and models: the checkpoint dict, loading, building a model with its initial weights
(none, ImageNet, a checkpoint), the original Selfee weights converter.

A selfee-fast checkpoint is a ``torch.save``d dict (made by :func:`checkpoint_dict`)::

    {"format": "selfee-fast", "version": 1, "selfee_fast": "0.1.0", "model": state_dict,
     "config": SelfeeConfig.to_dict(), "step": int, "optimizer": ..., "scaler": ..., "rng": ..., "embed_bn": ...}

Only "format", "version", "model" and "config" are needed for inference. The original Selfee
released a bare ``state_dict`` of its ``CLD_SimSiam`` module; :func:`convert_original` maps it
strictly (every tensor used, every shape checked) onto :class:`selfee.model.Selfee`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from selfee import __version__
from selfee.config import ModelConfig, SelfeeConfig
from selfee.errors import SelfeeError
from selfee.fileio import atomic_save, file_sha256
from selfee.model import Selfee

log = logging.getLogger("selfee")

FORMAT = "selfee-fast"
VERSION = 1

# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------


def checkpoint_dict(model: torch.nn.Module | dict, cfg: SelfeeConfig, **extra) -> dict:
    """The checkpoint of ``model`` (or its state dict) trained with ``cfg``: what :func:`load_checkpoint`
    reads; ``extra`` adds entries (the trainer's step, optimizer, scaler, RNG states, ...)."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    return {"format": FORMAT, "version": VERSION, "selfee_fast": __version__,
            "model": {k: v.detach().cpu() for k, v in state.items()}, "config": cfg.to_dict(), **extra}


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise SelfeeError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects we refuse to run
        raise SelfeeError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


def is_selfee_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def is_original_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and any(
        isinstance(k, str) and (k.startswith("backbone.backbone.") or k.startswith("online_encoder.backbone."))
        for k in obj
    )


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A selfee-fast checkpoint dict; original Selfee files are converted on the fly."""
    path = Path(path)
    obj = _torch_load(path)
    if is_selfee_checkpoint(obj):
        if obj.get("version", 1) > VERSION:
            raise SelfeeError(f"{path}: checkpoint version {obj['version']} is newer than this selfee-fast")
        return obj
    if is_original_state_dict(obj):
        model_state, mcfg, byol = convert_original(obj, source=str(path))
        fields = {f"model.{k}": v for k, v in dataclasses.asdict(mcfg).items()}
        cfg = SelfeeConfig().replace(**fields, **{"loss.byol": byol})
        return checkpoint_dict(model_state, cfg, step=0)
    raise SelfeeError(f"{path}: not a selfee-fast checkpoint nor an original Selfee state_dict")


def checkpoint_config(ckpt: dict) -> SelfeeConfig:
    return SelfeeConfig.from_dict(ckpt["config"])


def load_model(path: str | os.PathLike, byol: bool | None = None, bn: str = "embed"):
    """(model, config) from a checkpoint of either format, in eval mode on the CPU.

    ``bn="embed"``: where the checkpoint holds BatchNorm statistics re-estimated on plain frames
    (``train.embed_bn_frames``), the encoder uses them; ``bn="train"``: the training statistics.
    The encoder embeds the representation of the checkpoint's ``embed.features``.
    """
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    model = Selfee(cfg.model, byol=cfg.loss.byol if byol is None else byol)
    load_state(model, ckpt["model"], source=str(path))
    if bn not in ("embed", "train"):
        raise ValueError(f"bn must be 'embed' or 'train', not {bn!r}")
    if bn == "embed" and ckpt.get("embed_bn"):
        own = model.encoder.state_dict()
        extra = [k for k in ckpt["embed_bn"]["encoder"] if k not in own]
        if extra:
            raise SelfeeError(f"{path}: embedding BatchNorm statistics for unknown tensor {extra[0]}")
        own.update(ckpt["embed_bn"]["encoder"])
        model.encoder.load_state_dict(own)
        log.debug("%s: BatchNorm statistics re-estimated on %d plain frames", path, ckpt["embed_bn"]["frames"])
    model.encoder.features = cfg.embed.features
    return model.eval(), cfg


def load_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """Strict load with a one-line error naming the first missing/unexpected/mismatched tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    # A BYOL target absent from the file (a SimSiam checkpoint) starts as a copy of the online
    # encoder; a file with only part of a target is damaged, and the first missing tensor is named.
    has_target = any(k.startswith("target.") for k in state)
    if missing and not has_target and all(k.startswith("target.") for k in missing) and hasattr(model, "encoder"):
        state = dict(state)
        for k in missing:
            state[k] = state["encoder." + k[len("target.") :]]
        missing = []
    unexpected = [k for k in state if k not in own]
    if unexpected and all(k.startswith("target.") for k in unexpected):
        state = {k: v for k, v in state.items() if not k.startswith("target.")}
        unexpected = []
    if missing:
        raise SelfeeError(f"{source}: weights lack '{missing[0]}' ({len(missing)} tensors missing)")
    if unexpected:
        raise SelfeeError(f"{source}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} not used by the model)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise SelfeeError(f"{source}: '{k}' has shape {tuple(state[k].shape)}, the model needs {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------
# The original Selfee (EBGU/Selfee) state_dict
# ---------------------------------------------------------------------------------------------

# original key prefix -> ours; the CLD head's NormedLinear weight is stored (in, out) in both
_ORIGINAL_PREFIXES = (
    ("backbone.backbone.", "encoder.backbone."),
    ("backbone.projector.", "encoder.projector."),
    ("online_encoder.backbone.", "encoder.backbone."),  # the BYOL variant
    ("online_encoder.projector.", "encoder.projector."),
    ("target_encoder.backbone.", "target.backbone."),
    ("target_encoder.projector.", "target.projector."),
    ("predictor.predictor.", "predictor."),
    ("predictor.groupDis.0.", "cld_head.linear."),
)


def _infer_model_config(sd: dict) -> ModelConfig:
    bb = "backbone.backbone." if any(k.startswith("backbone.backbone.") for k in sd) else "online_encoder.backbone."
    blocks = {}
    for k in sd:
        m = re.match(re.escape(bb) + r"layer(\d)\.(\d+)\.", k)
        if m:
            layer, idx = int(m.group(1)), int(m.group(2))
            blocks[layer] = max(blocks.get(layer, 0), idx + 1)
    bottleneck = any(k.startswith(bb + "layer1.0.conv3.") for k in sd)
    counts = tuple(blocks.get(i, 0) for i in (1, 2, 3, 4))
    table = {
        (False, (2, 2, 2, 2)): "resnet18",
        (False, (3, 4, 6, 3)): "resnet34",
        (True, (3, 4, 6, 3)): "resnet50",
        (True, (3, 4, 23, 3)): "resnet101",
        (True, (3, 8, 36, 3)): "resnet152",
    }
    arch = table.get((bottleneck, counts))
    if arch is None:
        raise SelfeeError(f"unrecognised backbone in original weights (blocks per stage {counts})")
    if arch == "resnet50":
        w = sd.get(bb + "layer1.0.conv2.weight")
        if w is not None and w.shape[1] != w.shape[0]:
            arch = "resnext50_32x4d"
        elif w is not None and w.shape[0] == 128:
            arch = "wide_resnet50_2"
    proj = sd.get("backbone.projector.0.weight", sd.get("online_encoder.projector.0.weight"))
    pred = sd.get("predictor.predictor.0.weight")
    cld = sd.get("predictor.groupDis.0.weight")
    if proj is None or pred is None or cld is None:
        raise SelfeeError("original weights lack the projector, predictor or CLD head")
    return ModelConfig(arch=arch, proj_dim=proj.shape[0], pred_hidden=pred.shape[0], cld_dim=cld.shape[1], init="none")


def convert_original(sd: dict, source: str = "weights") -> tuple[OrderedDict, ModelConfig, bool]:
    """Map an original ``CLD_SimSiam`` (or ``CLD_Byol``) state_dict onto :class:`selfee.model.Selfee`.

    Strict: every tensor in the file must be used, every tensor of the model must be found, and
    every shape must match; the first problem is named. Returns (state_dict, ModelConfig, byol).
    """
    mcfg = _infer_model_config(sd)
    byol = any(k.startswith("target_encoder.") for k in sd)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise SelfeeError(f"{source}: entry '{k}' is not a tensor")
        for old, new in _ORIGINAL_PREFIXES:
            if k.startswith(old):
                out[new + k[len(old) :]] = v
                break
        else:
            raise SelfeeError(f"{source}: tensor '{k}' has no place in the Selfee model")
    model = Selfee(mcfg, byol=byol)
    load_state(model, out, source)  # checks names and shapes
    return out, mcfg, byol


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``selfee-fast convert``: an original Selfee .pkl -> a selfee-fast checkpoint."""
    src = Path(src)
    obj = _torch_load(src)
    if is_selfee_checkpoint(obj):
        raise SelfeeError(f"{src}: already a selfee-fast checkpoint")
    if not is_original_state_dict(obj):
        raise SelfeeError(f"{src}: not an original Selfee state_dict (no 'backbone.backbone.*' keys)")
    ckpt = load_checkpoint(src)
    ckpt["converted_from"] = {"path": str(src), "sha256": file_sha256(src)}
    return atomic_save(ckpt, dst)


# ---------------------------------------------------------------------------------------------
# Building models: initial weights
# ---------------------------------------------------------------------------------------------

# The original Selfee built its backbone with torchvision's ``pretrained=True``, which means the
# IMAGENET1K_V1 weights (resnet50-0676ba61.pth), not today's DEFAULT (IMAGENET1K_V2 for ResNet-50).
IMAGENET_WEIGHTS = "IMAGENET1K_V1"


def build_model(cfg: ModelConfig, byol: bool = False) -> Selfee:
    """The model with its configured initial weights (``none``, ``imagenet`` or a checkpoint)."""
    init = cfg.init.lower()
    if init == "imagenet":  # a BYOL target starts as a copy of the pretrained encoder
        return Selfee(cfg, byol=byol, backbone_weights=imagenet_backbone(cfg.arch))
    model = Selfee(cfg, byol=byol)
    if init != "none":
        load_initial_weights(model, cfg.init)
    return model



def imagenet_backbone(arch: str) -> dict:
    """torchvision's IMAGENET1K_V1 weights for ``arch`` without ``fc``: downloaded, or from the hub cache.

    V1 is what the original's ``resnet50(pretrained=True)`` loaded (resnet50-0676ba61.pth), not
    torchvision's current DEFAULT (V2 for ResNet-50 and deeper).
    """
    import torchvision

    weights = torchvision.models.get_model_weights(arch)[IMAGENET_WEIGHTS]
    url = weights.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    try:
        sd = torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu", check_hash=False)
    except Exception as exc:
        raise SelfeeError(
            f"ImageNet weights for {arch} ({IMAGENET_WEIGHTS}) are not in the torch hub cache and could not be "
            f"downloaded ({type(exc).__name__}). Download {url} and save it as {cache}, or train with --init none"
        ) from None
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def load_initial_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``--init PATH``: weights from a selfee-fast checkpoint or an original Selfee file."""
    ckpt = load_checkpoint(path)
    load_state(model, ckpt["model"], source=str(path))
    log.info("initial weights: %s", path)
