"""Checking an export against the eager fp32 encoder: cosine similarity per frame, a threshold per precision."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from selfee.errors import SelfeeError
from selfee.export.graph import MIN_COSINE

log = logging.getLogger("selfee")


def real_frames(cfg, videos, n: int, stride: int = 5) -> tuple[torch.Tensor | None, list[str]]:
    """Up to ``n`` live frames (every ``stride``-th) from the start of each video, as ``embed`` makes
    them (its frame source), and the names of the videos they come from."""
    from selfee.data import make_sources
    from selfee.embed.source import iter_embed_batches
    from selfee.video import open_inputs

    # bad videos are reported and skipped; without any, the caller uses synthetic frames
    infos = open_inputs(videos, cfg, min_frames=cfg.data.min_frames, require=False).videos
    per = max(1, n // max(1, len(infos)))
    out, used = [], []
    for src in make_sources(infos, cfg):
        first = next(iter(iter_embed_batches(src, cfg, per * stride)), None)
        if first is not None:
            out.append(first.frames[::stride][:per])
            used.append(src.info.path.name)
    return (torch.cat(out)[:n], used) if out else (None, [])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-300)


@torch.no_grad()
def eager_reference(encoder: torch.nn.Module, frames: torch.Tensor, batch: int = 32) -> np.ndarray:
    """The fp32 eager encoder on the CPU: the reference every export is held to."""
    enc = encoder.eval().float().cpu()
    out = [enc(frames[i : i + batch].float().div(255)).numpy() for i in range(0, len(frames), batch)]
    return np.concatenate(out)


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    if reference.shape != candidate.shape:
        return {"frames": len(reference), "error": f"shape {candidate.shape}, expected {reference.shape}"}
    cos = cosine_rows(reference, candidate)
    scale = float(np.abs(reference).max()) or 1.0
    return {
        "frames": int(len(reference)),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "max_rel_diff": float(np.abs(reference - candidate).max() / scale),
    }


def verify_export(name: str, run: Callable[[torch.Tensor], np.ndarray], encoder: torch.nn.Module,
                  inputs: dict[str, torch.Tensor], precision: str, batch: int = 16) -> dict:
    """Run ``run`` (an export) and the eager encoder on each named set of frames; fail below the threshold.

    Returns ``{"export": name, "precision", "threshold", "passed", "sets": {set name: comparison}}``.
    """
    threshold = MIN_COSINE[precision]
    sets = {}
    for label, frames in inputs.items():
        ref = eager_reference(encoder, frames)
        got = np.concatenate([np.asarray(run(frames[i : i + batch]), np.float32) for i in range(0, len(frames), batch)])
        sets[label] = compare(ref, got)
    passed = all("error" not in s and s["min_cosine"] >= threshold for s in sets.values())
    return {"export": name, "precision": precision, "threshold": threshold, "passed": passed, "sets": sets}


def describe(report: dict) -> str:
    """One line per frame set: what ``selfee-fast export`` prints."""
    lines = []
    for label, s in report["sets"].items():
        if "error" in s:
            lines.append(f"  {report['export']} vs eager on {label}: {s['error']}")
            continue
        ok = "ok" if s["min_cosine"] >= report["threshold"] else "FAILED"
        lines.append(
            f"  {report['export']} ({report['precision']}) vs eager fp32 on {s['frames']} {label} frames: "
            f"cosine min {s['min_cosine']:.6f} mean {s['mean_cosine']:.6f} (need >= {report['threshold']}), "
            f"max |diff| {s['max_abs_diff']:.2e} [{ok}]"
        )
    return "\n".join(lines)


def require_passed(report: dict, path) -> None:
    if not report["passed"]:
        worst = min((s.get("min_cosine", float("-inf")) for s in report["sets"].values()), default=float("nan"))
        raise SelfeeError(
            f"{path}: export verification failed: cosine similarity to the eager model {worst:.6f} "
            f"< {report['threshold']} ({report['precision']}); the file was not kept"
        )
