"""Chunked cosine nearest neighbours in torch (CPU or GPU): never a full frames x frames matrix.

Query rows are taken ``query_rows`` at a time and the reference is streamed in blocks, so at most
one ``query_rows x ref_rows`` block of similarities (``block_elems`` numbers) exists at once,
whatever the number of frames. Inputs may be NumPy memory maps (float16 or float32); each block
is read, L2-normalized and moved to the device only when it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_BLOCK_ELEMS = 1 << 24  # 16 M similarities = 64 MiB in float32 per block


def to_unit(x, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows as float32 unit vectors on ``device`` (all-zero rows stay zero)."""
    # A copy: blocks of read-only memory maps must not become tensors that alias them.
    t = torch.from_numpy(np.array(x, dtype=np.float32, order="C")) if isinstance(x, np.ndarray) else x
    t = t.to(device=device, dtype=torch.float32)
    return torch.nn.functional.normalize(t, dim=1, eps=1e-12)


@dataclass
class BlockStats:
    """What a chunked search did: the largest similarity block it held and how many it computed."""

    peak_block_elems: int = 0
    blocks: int = 0

    def add(self, rows: int, cols: int) -> None:
        self.peak_block_elems = max(self.peak_block_elems, rows * cols)
        self.blocks += 1


def _block_shape(nq: int, block_elems: int, query_rows: int | None) -> tuple[int, int]:
    qb = max(1, min(nq, query_rows or math.isqrt(block_elems), block_elems))
    return qb, max(1, block_elems // qb)


def cosine_topk(
    query: np.ndarray,
    refs: Sequence[np.ndarray] | np.ndarray,
    k: int,
    *,
    exclude_radius: int | None = None,
    query_pos: np.ndarray | None = None,
    ref_pos: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    query_rows: int | None = None,
    stats: BlockStats | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar reference rows of every query row.

    ``refs`` is one array or several (streamed one after the other; indices count across them).
    With ``exclude_radius`` = w, pairs with ``|query_pos - ref_pos| <= w`` are skipped (a video
    against itself, leaving out its own +-w frames). Returns (similarities, indices), both
    ``n_query x k`` on the CPU, best first; missing neighbours have similarity -inf and index -1.
    ``on_rows(n)`` is called after each block of ``n`` query rows (for progress bars).
    """
    from selfee.runtime import resolve_device

    dev = resolve_device(device)
    parts = [refs] if isinstance(refs, np.ndarray) else list(refs)
    nq = len(query)
    if exclude_radius is not None:
        if query_pos is None or ref_pos is None:
            raise ValueError("exclude_radius needs query_pos and ref_pos")
        rpos_all = torch.as_tensor(np.asarray(ref_pos, np.int64))
        qpos_all = torch.as_tensor(np.asarray(query_pos, np.int64))
    qb, rb = _block_shape(nq, block_elems, query_rows)
    out_s = torch.full((nq, k), -float("inf"))
    out_i = torch.full((nq, k), -1, dtype=torch.long)
    for q0 in range(0, nq, qb):
        q = to_unit(query[q0 : q0 + qb], dev)
        best_s = torch.full((len(q), k), -float("inf"), device=dev)
        best_i = torch.full((len(q), k), -1, dtype=torch.long, device=dev)
        if exclude_radius is not None:
            qpos = qpos_all[q0 : q0 + qb].to(dev)
            qlo, qhi = int(qpos.min()), int(qpos.max())
        offset = 0
        for part in parts:
            for r0 in range(0, len(part), rb):
                r = to_unit(part[r0 : r0 + rb], dev)
                s = q @ r.T  # qb x rb
                if stats is not None:
                    stats.add(*s.shape)
                if exclude_radius is not None:
                    rpos = rpos_all[offset + r0 : offset + r0 + len(r)].to(dev)
                    # Only blocks that come within the radius need the mask.
                    if int(rpos.min()) <= qhi + exclude_radius and int(rpos.max()) >= qlo - exclude_radius:
                        s.masked_fill_((qpos[:, None] - rpos[None, :]).abs() <= exclude_radius, -float("inf"))
                if k == 1:  # the common case (anomaly scores): a running max, no sorting
                    bs, bi = s.max(dim=1, keepdim=True)
                    better = bs > best_s
                    best_s = torch.where(better, bs, best_s)
                    best_i = torch.where(better, bi + (offset + r0), best_i)
                    continue
                bs, bi = s.topk(min(k, s.shape[1]), dim=1)
                del s
                cs = torch.cat([best_s, bs], dim=1)
                ci = torch.cat([best_i, bi + (offset + r0)], dim=1)
                best_s, pick = cs.topk(k, dim=1)
                best_i = ci.gather(1, pick)
            offset += len(part)
        best_i[torch.isinf(best_s)] = -1
        out_s[q0 : q0 + len(q)] = best_s.cpu()
        out_i[q0 : q0 + len(q)] = best_i.cpu()
        if on_rows is not None:
            on_rows(len(q))
    return out_s, out_i


def min_cosine_distance(query: np.ndarray, refs, **kwargs) -> np.ndarray:
    """Smallest cosine distance (1 - similarity) from each query row to any reference row (inf if none)."""
    s, _ = cosine_topk(query, refs, 1, **kwargs)
    return (1.0 - s[:, 0].double()).numpy()
