"""The Selfee network: ResNet backbone, SimSiam projector/predictor and CLD head; the exported Encoder.

SimSiam: Chen & He, arXiv:2011.10566. CLD: Wang, Liu & Yu, "Unsupervised Feature Learning by
Cross-Level Instance-Group Discrimination", CVPR 2021. Selfee: Jia et al., bioRxiv
2021.12.24.474120. The model returns its outputs; it never computes a loss (see selfee.losses).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from selfee.config import ModelConfig


class NormedLinear(nn.Module):
    """Cosine of the L2-normalized input with L2-normalized weight columns (weight: in x out)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        # Columns of unit-ish norm, as CLD initialises them.
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class CLDHead(nn.Module):
    """Normalized linear layer followed by L2 normalization: the CLD branch."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = NormedLinear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=1)


def projector(in_dim: int, dim: int) -> nn.Sequential:
    """in -> dim -> dim -> dim: (Linear, BN, ReLU) x 2 then Linear, BN."""
    return nn.Sequential(
        nn.Linear(in_dim, dim),
        nn.BatchNorm1d(dim),
        nn.ReLU(inplace=True),
        nn.Linear(dim, dim),
        nn.BatchNorm1d(dim),
        nn.ReLU(inplace=True),
        nn.Linear(dim, dim),
        nn.BatchNorm1d(dim),
    )


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """dim -> hidden -> dim: Linear, BN, ReLU, Linear."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


def backbone(arch: str, weights: dict | None = None) -> tuple[nn.Module, int]:
    """A torchvision ResNet with ``fc`` replaced by Identity, and its feature width.

    ``weights``: a state dict for it without ``fc`` (ImageNet weights come from
    :func:`selfee.checkpoint.imagenet_backbone`).
    """
    net = getattr(torchvision.models, arch)(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    if weights is not None:
        net.load_state_dict(weights)
    return net, dim


FEATURES = ("projector", "backbone", "both")


class Encoder(nn.Module):
    """Frames -> embedding: the representation chosen by ``features`` (``embed.features``).

    ``projector``: the projector output (the paper's "meta-representation"); ``backbone``: the
    pooled ResNet features the projector reads; ``both``: the two side by side, each L2-normalized.
    Training always goes through :meth:`project` (the SimSiam targets), whatever ``features`` is.
    Input: N x 3 x H x W float in [0, 1] (live frames or RGB), no mean/std normalization.
    This is the only part that is exported.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, features: str = "projector"):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.features = features

    @property
    def features(self) -> str:
        return self._features

    @features.setter
    def features(self, value: str) -> None:
        if value not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {value!r}")
        self._features = value

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`forward`'s output for the chosen ``features``."""
        proj = int(self.projector[-1].num_features)
        feat = int(self.projector[0].in_features)
        return {"projector": proj, "backbone": feat, "both": feat + proj}[self.features]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The projector output (what training and the BatchNorm re-estimation use)."""
        return self.projector(self.backbone(x))  # N x proj_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features == "projector":
            return self.project(x)
        h = self.backbone(x)
        if self.features == "backbone":
            return h
        return torch.cat([F.normalize(h, dim=1), F.normalize(self.projector(h), dim=1)], dim=1)


class SelfeeOutput(NamedTuple):
    p1: torch.Tensor  # predictor outputs, N x proj_dim
    p2: torch.Tensor
    z1: torch.Tensor  # projector outputs (SimSiam targets; the embedding with embed.features = projector), N x proj_dim
    z2: torch.Tensor
    c1: torch.Tensor  # CLD features of the online branch, N x cld_dim, unit norm
    c2: torch.Tensor
    y1: torch.Tensor | None = None  # BYOL only: projections of the EMA target encoder (the targets)
    y2: torch.Tensor | None = None
    t1: torch.Tensor | None = None  # BYOL only: CLD features of the target projections
    t2: torch.Tensor | None = None


class Selfee(nn.Module):
    """Backbone + projector (the Encoder), predictor and CLD head; optional BYOL target encoder."""

    def __init__(self, cfg: ModelConfig, byol: bool = False, backbone_weights: dict | None = None):
        super().__init__()
        self.cfg = cfg
        net, feat_dim = backbone(cfg.arch, backbone_weights)
        self.encoder = Encoder(net, projector(feat_dim, cfg.proj_dim))
        self.predictor = predictor(cfg.proj_dim, cfg.pred_hidden)
        self.cld_head = CLDHead(cfg.proj_dim, cfg.cld_dim)
        self.target: Encoder | None = None
        if byol:
            self.target = copy.deepcopy(self.encoder)
            self.target.requires_grad_(False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> SelfeeOutput:
        # The views go through apart, as in the original: batch norm sees each view's statistics.
        z1 = self.encoder.project(x1)
        z2 = self.encoder.project(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        c1, c2 = self.cld_head(z1), self.cld_head(z2)
        if self.target is None:
            return SelfeeOutput(p1, p2, z1, z2, c1, c2)
        with torch.no_grad():
            y1 = self.target.project(x1)
            y2 = self.target.project(x2)
            t1, t2 = self.cld_head(y1), self.cld_head(y2)
        return SelfeeOutput(p1, p2, z1, z2, c1, c2, y1, y2, t1, t2)

    @torch.no_grad()
    def update_target(self, decay: float) -> None:
        """BYOL: target <- decay * target + (1 - decay) * online (parameters; buffers copied)."""
        if self.target is None:
            return
        for t, o in zip(self.target.parameters(), self.encoder.parameters()):
            t.mul_(decay).add_(o.detach(), alpha=1 - decay)
        for t, o in zip(self.target.buffers(), self.encoder.buffers()):
            t.copy_(o)


class _LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over this process's batch, for inputs of any rank (what a SyncBatchNorm becomes)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")


def _plain_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with its SyncBatchNorm layers turned back into local BatchNorm (one process alone
    must be able to run it in train mode)."""
    if isinstance(module, nn.SyncBatchNorm):
        ref = next(iter(module.state_dict().values()), None)  # on the module's device (CUDA for SyncBatchNorm)
        bn = _LocalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                             device=None if ref is None else ref.device)
        bn.load_state_dict(module.state_dict())
        return bn
    for name, child in module.named_children():
        setattr(module, name, _plain_batchnorm(child))
    return module


@torch.no_grad()
def embedding_bn_stats(encoder: Encoder, batches: Iterable[torch.Tensor], frames: int,
                       autocast=None) -> tuple[dict[str, torch.Tensor], int]:
    """BatchNorm statistics of ``encoder`` re-estimated on un-augmented frames (the embedding's inputs).

    Training leaves running statistics of *augmented* views (half of them Turbo-coloured, rotated,
    jittered); plain frames sit far from them in the first layers, which shifts every embedding by
    one common offset and can make a short run's embeddings nearly parallel. Here every BatchNorm
    layer's statistics are the average over batches of ``frames`` plain frames (a cumulative
    average, as "precise BN"), with the weights unchanged. Returns (encoder buffers, frames used).
    """
    enc = _plain_batchnorm(copy.deepcopy(encoder))
    bns = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    enc.train()
    seen = 0
    for x in batches:
        x = x[: frames - seen]
        if len(x) < 2:  # a batch of one has no variance
            break
        with autocast() if autocast is not None else contextlib.nullcontext():
            enc.project(x)  # every BatchNorm layer, whatever the embedding's features
        seen += len(x)
        if seen >= frames:
            break
    keep = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v.detach().cpu().clone() for k, v in enc.state_dict().items() if k.rsplit(".", 1)[-1] in keep}, seen
