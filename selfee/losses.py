"""Selfee's losses as pure functions of tensors (device-agnostic, no module state).

SimSiam (Chen & He, arXiv:2011.10566): symmetric negative cosine with a stop-gradient on the
targets. CLD (Wang, Liu & Yu, CVPR 2021): k-means groups of one view's features supervise the
other view's instances through their affinity to the group centroids. Selfee (bioRxiv
2021.12.24.474120) adds lambda x CLD to SimSiam.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """2 - cos(p1, sg(z2)) - cos(p2, sg(z1)), each cosine averaged over the batch. Range [-2 .. 2] + 2."""
    p1, p2, z1, z2 = (t.float() for t in (p1, p2, z1, z2))
    return 2 - F.cosine_similarity(p1, z2.detach(), dim=-1).mean() - F.cosine_similarity(p2, z1.detach(), dim=-1).mean()


def kmeans(x: torch.Tensor, k: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means (Euclidean) initialised with the first ``k`` rows, as CLD does.

    Returns (labels N, centroids k x D). Assignments are discrete; the returned centroids are the
    means of ``x`` under the final assignment and carry gradients to ``x``, like the original. An
    empty cluster keeps its previous centroid instead of becoming NaN.
    """
    x = x.float()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} samples, got {n}")
    with torch.no_grad():
        c = x[:k].detach().clone()
        xd = x.detach()
        for _ in range(iters):
            labels = torch.cdist(xd, c, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
            c = _means(xd, labels, k, fallback=c)
    return labels, _means(x, labels, k, fallback=c)


def _means(x: torch.Tensor, labels: torch.Tensor, k: int, fallback: torch.Tensor) -> torch.Tensor:
    sums = x.new_zeros(k, x.shape[1]).index_add(0, labels, x)
    counts = torch.bincount(labels, minlength=k).to(x.dtype).unsqueeze(1)
    means = sums / counts.clamp(min=1)
    return torch.where(counts > 0, means, fallback.detach())


def cld_loss(c1: torch.Tensor, c2: torch.Tensor, k: int = 10, iters: int = 10, temperature: float = 0.07):
    """Cross-level discrimination between two views' CLD features (N x D each, unit norm).

    k-means groups each view; view 1's affinities to view 2's centroids (divided by the
    temperature) are trained with cross-entropy against view 2's labels, and symmetrically.
    """
    c1, c2 = c1.float(), c2.float()
    labels1, cent1 = kmeans(c1, k, iters)
    labels2, cent2 = kmeans(c2, k, iters)
    loss12 = F.cross_entropy(c1 @ cent2.t() / temperature, labels2)
    loss21 = F.cross_entropy(c2 @ cent1.t() / temperature, labels1)
    return 0.5 * (loss12 + loss21)


def byol_cld_loss(c1, t1, c2, t2, k: int = 10, iters: int = 10, temperature: float = 0.07):
    """CLD with an EMA target branch: online view 1 vs target view 2, and target view 1 vs online view 2."""
    return 0.5 * (cld_loss(c1, t2, k, iters, temperature) + cld_loss(t1, c2, k, iters, temperature))


def cld_weight(step: int, total_steps: int, max_lambda: float, ramp: bool) -> float:
    """Lambda at ``step``: constant, or a cosine ramp 0 -> max over the run (the original's option)."""
    if not ramp:
        return max_lambda
    return max_lambda * 0.5 * (1 - math.cos(step * math.pi / total_steps))


def collapse_level(z: torch.Tensor) -> torch.Tensor:
    """1 - sqrt(d) * mean(std(normalize(z))) : ~0 for well-spread features, 1 for a collapsed output."""
    z = F.normalize(z.detach().float(), dim=1)
    return 1 - math.sqrt(z.shape[1]) * z.std(dim=0).mean()


def selfee_loss(out, cfg, lam: float) -> dict[str, torch.Tensor]:
    """Total loss and its parts from a :class:`selfee.model.SelfeeOutput` and a LossConfig."""
    if out.y1 is not None:  # BYOL: the targets come from the EMA encoder
        ss = simsiam_loss(out.p1, out.p2, out.y1, out.y2)
    else:
        ss = simsiam_loss(out.p1, out.p2, out.z1, out.z2)
    if cfg.cld:
        if out.t1 is not None:
            cld = byol_cld_loss(out.c1, out.t1, out.c2, out.t2, cfg.clusters, cfg.kmeans_iters, cfg.temperature)
        else:
            cld = cld_loss(out.c1, out.c2, cfg.clusters, cfg.kmeans_iters, cfg.temperature)
    else:
        cld = ss.new_zeros(())
    return {"loss": ss + lam * cld, "loss_ss": ss, "loss_cld": cld}
