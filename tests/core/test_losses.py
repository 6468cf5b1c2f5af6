"""Losses against float64 NumPy references and hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfee.config import LossConfig
from selfee.losses import (
    byol_cld_loss,
    cld_loss,
    cld_weight,
    collapse_level,
    kmeans,
    selfee_loss,
    simsiam_loss,
)
from selfee.model import SelfeeOutput


def np_cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def np_kmeans(x, k, iters):
    """Lloyd's algorithm, first-k init, empty clusters keep their centroid (float64)."""
    c = x[:k].copy()
    for _ in range(iters):
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        for j in range(k):
            if (lab == j).any():
                c[j] = x[lab == j].mean(0)
    return lab, c


def np_ce(logits, labels):
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def test_simsiam_hand_computed():
    p1 = torch.tensor([[1.0, 0.0]])
    z2 = torch.tensor([[0.0, 3.0]])  # cos 0
    p2 = torch.tensor([[2.0, 2.0]])
    z1 = torch.tensor([[1.0, 1.0]])  # cos 1
    assert simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(2 - 0 - 1)


def test_simsiam_matches_numpy_and_stops_gradients():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(16, 8, generator=g, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    ref = 2 - np_cos(p1.detach().double().numpy(), z2.detach().double().numpy()).mean() - np_cos(
        p2.detach().double().numpy(), z1.detach().double().numpy()
    ).mean()
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient on the targets
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_kmeans_matches_numpy_reference():
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 5, (4, 6))
    x = np.concatenate([c + rng.normal(0, 0.3, (20, 6)) for c in centers])
    x = x[rng.permutation(len(x))]
    lab, cen = kmeans(torch.tensor(x, dtype=torch.float32), 4, 10)
    ref_lab, ref_cen = np_kmeans(x, 4, 10)
    assert (lab.numpy() == ref_lab).all()
    np.testing.assert_allclose(cen.numpy(), ref_cen, rtol=1e-4, atol=1e-5)


def test_kmeans_empty_cluster_is_not_nan():
    # identical first rows: several initial centroids coincide, so clusters go empty
    x = torch.cat([torch.ones(5, 3), torch.randn(20, 3)])
    lab, cen = kmeans(x, 5, 10)
    assert torch.isfinite(cen).all()
    loss = cld_loss(F.normalize(x, dim=1), F.normalize(x + 0.01, dim=1), k=5, iters=10)
    assert torch.isfinite(loss)


def test_cld_loss_matches_numpy_reference():
    g = torch.Generator().manual_seed(3)
    c1 = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    c2 = F.normalize(c1 + 0.2 * torch.randn(40, 8, generator=g), dim=1)
    loss = cld_loss(c1, c2, k=5, iters=10, temperature=0.07)
    a, b = c1.double().numpy(), c2.double().numpy()
    la, ca = np_kmeans(a, 5, 10)
    lb, cb = np_kmeans(b, 5, 10)
    ref = 0.5 * (np_ce(a @ cb.T / 0.07, lb) + np_ce(b @ ca.T / 0.07, la))
    assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_cld_gradients_reach_both_views():
    g = torch.Generator().manual_seed(4)
    c1 = torch.randn(32, 8, generator=g, requires_grad=True)
    c2 = torch.randn(32, 8, generator=g, requires_grad=True)
    cld_loss(F.normalize(c1, dim=1), F.normalize(c2, dim=1), k=4).backward()
    assert c1.grad.abs().sum() > 0 and c2.grad.abs().sum() > 0


def test_byol_cld_is_the_average_of_the_two_cross_pairs():
    g = torch.Generator().manual_seed(5)
    c1, t1, c2, t2 = (F.normalize(torch.randn(24, 6, generator=g), dim=1) for _ in range(4))
    expected = 0.5 * (cld_loss(c1, t2, 4, 5, 0.1) + cld_loss(t1, c2, 4, 5, 0.1))
    assert byol_cld_loss(c1, t1, c2, t2, 4, 5, 0.1).item() == pytest.approx(expected.item())


def test_lambda_ramp():
    assert cld_weight(100, 1000, 2.0, ramp=False) == 2.0
    assert cld_weight(0, 1000, 2.0, ramp=True) == pytest.approx(0.0)
    assert cld_weight(500, 1000, 2.0, ramp=True) == pytest.approx(1.0)
    assert cld_weight(1000, 1000, 2.0, ramp=True) == pytest.approx(2.0)


def test_collapse_level():
    z = torch.ones(64, 16) + 1e-7 * torch.randn(64, 16)  # everything the same direction
    assert collapse_level(z).item() == pytest.approx(1.0, abs=1e-3)
    # spread evenly on the sphere: per-dimension std of normalized vectors ~ 1/sqrt(d)
    z = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    assert abs(collapse_level(z).item()) < 0.05
    zn = F.normalize(z.double(), dim=1).numpy()
    assert collapse_level(z).item() == pytest.approx(1 - math.sqrt(16) * zn.std(0, ddof=1).mean(), abs=1e-5)


def test_selfee_loss_combines_parts():
    g = torch.Generator().manual_seed(6)
    t = [torch.randn(16, 8, generator=g) for _ in range(4)]
    c = [F.normalize(torch.randn(16, 4, generator=g), dim=1) for _ in range(2)]
    out = SelfeeOutput(*t, *c)
    cfg = LossConfig(clusters=3, kmeans_iters=4)
    parts = selfee_loss(out, cfg, lam=2.0)
    assert parts["loss"].item() == pytest.approx(parts["loss_ss"].item() + 2.0 * parts["loss_cld"].item(), rel=1e-6)
    no_cld = selfee_loss(out, LossConfig(cld=False), lam=2.0)
    assert no_cld["loss_cld"].item() == 0 and no_cld["loss"].item() == pytest.approx(parts["loss_ss"].item())
