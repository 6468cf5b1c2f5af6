"""``--backend auto``: the backend and precision for this machine, chosen by measurement and cached.

Each candidate (an installed backend valid for the device, at one precision) is opened, run once on
real frames of the first video (warm-up, and its embeddings compared with the fp32 eager encoder's)
and timed for a few seconds (:data:`SECONDS`, at most :data:`MAX_BATCHES` batches) on one batch of
them. Candidates whose median cosine to fp32 is below
:data:`MIN_MEDIAN_COSINE`, or that fail to open or run, are out; the fastest of the rest wins. The
table is logged and, with the choice, cached per (machine, weights SHA-256, input size, device,
precision asked) in ``<cache>/backends/``: later runs open the chosen backend without timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfee.errors import SelfeeError
from selfee.fileio import atomic_write_json, cache_dir

log = logging.getLogger("selfee")

MIN_MEDIAN_COSINE = 0.99
SECONDS = 3.0  # timed per candidate (or MAX_BATCHES, whichever comes first)
MAX_BATCHES = 30
BATCH = 16


@dataclass
class Candidate:
    """A backend at a precision, and how to open it as an Embedder (raising when it cannot be used here)."""

    backend: str
    precision: str
    open: Callable[[], object]

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def machine_id(device: torch.device) -> dict:
    """What a cached choice is valid for: the host, its CPU (or GPU), the threads, the library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    ident = {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
             "torch": torch.__version__}
    try:
        import onnxruntime

        ident["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        ident["gpu"] = torch.cuda.get_device_name(device)
    return ident


def cache_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "backends" / f"{digest}.json"


def measure(candidates: list[Candidate], frames: torch.Tensor, reference: np.ndarray, seconds: float | None = None,
            batch: int = BATCH, clock: Callable[[], float] = time.perf_counter) -> tuple[list[dict], dict]:
    """(table rows, {label: opened embedder} of the accurate ones): each candidate's accuracy and frames/s."""
    seconds = SECONDS if seconds is None else seconds
    rows, opened = [], {}
    for cand in candidates:
        row = {"backend": cand.backend, "precision": cand.precision}
        try:
            emb = cand.open()
            out = np.concatenate([np.asarray(emb(frames[i : i + batch]), np.float32)
                                  for i in range(0, len(frames), batch)])  # also the warm-up
            from selfee.export.verify import cosine_rows

            cos = cosine_rows(reference, out)
            row["median_cosine"] = float(np.median(cos))
            row["accurate"] = bool(row["median_cosine"] >= MIN_MEDIAN_COSINE)
            x = frames[:batch]
            n, t0 = 0, clock()
            while True:
                emb(x)
                n += len(x)
                dt = clock() - t0
                if n >= 2 * len(x) and (dt >= seconds or n >= MAX_BATCHES * len(x)):
                    break
            row["fps"] = n / dt if dt > 0 else float("inf")
            if row["accurate"]:
                opened[cand.label] = emb
        except Exception as exc:  # not installed, no GPU, cannot export or run: out of the race
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        rows.append(row)
    return rows, opened


def pick(rows: list[dict]) -> dict:
    """The fastest accurate row."""
    ok = [r for r in rows if r.get("accurate") and "error" not in r]
    if not ok:
        why = [f"{r['backend']} {r['precision']}: " + (r.get("error") or f"median cosine {r['median_cosine']:.4f}")
               for r in rows]
        raise SelfeeError("no backend gave embeddings within the accuracy limit: " + "; ".join(why))
    return max(ok, key=lambda r: r["fps"])


def table(rows: list[dict], chosen: dict | None = None) -> str:
    lines = [f"  {'backend':<12} {'precision':<9} {'frames/s':>9} {'median cos':>11}  note"]
    for r in rows:
        note = r.get("error") or ("" if r.get("accurate") else f"rejected: below {MIN_MEDIAN_COSINE}")
        if chosen is r:
            note = "chosen"
        fps = f"{r['fps']:9.1f}" if "fps" in r else f"{'-':>9}"
        cos = f"{r['median_cosine']:11.5f}" if "median_cosine" in r else f"{'-':>11}"
        lines.append(f"  {r['backend']:<12} {r['precision']:<9} {fps} {cos}  {note}")
    return "\n".join(lines)


def choose(candidates: list[Candidate], key: dict, frames: Callable[[], tuple[torch.Tensor, np.ndarray]],
           seconds: float | None = None, clock: Callable[[], float] = time.perf_counter, subject: str = ""):
    """(embedder, record): the cached choice for ``key`` when there is one and it opens, else the fastest
    accurate candidate, measured on ``frames()`` = (uint8 frames, fp32 eager embeddings of them)."""
    by_label = {c.label: c for c in candidates}
    path = cache_file(key)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if cached and cached.get("key") == key and cached.get("chosen") in by_label:
        try:
            emb = by_label[cached["chosen"]].open()
        except Exception as exc:
            log.info("%s: the cached choice %s cannot be opened (%s); measuring again", subject, cached["chosen"], exc)
        else:
            log.info("%s: backend %s (measured on this machine %s; %s; delete it to measure again)", subject,
                     cached["chosen"], cached.get("measured_at", "earlier"), path)
            return emb, {**cached, "cached": True, "cache_file": str(path)}
    x, ref = frames()
    seconds = SECONDS if seconds is None else seconds
    log.info("%s: timing %d backend(s) on %d real frames, about %.0f s each", subject, len(candidates), len(x), seconds)
    rows, opened = measure(candidates, x, ref, seconds, clock=clock)
    best = pick(rows)
    label = f"{best['backend']} {best['precision']}"
    log.info("%s: backends on this machine (%s chosen):\n%s", subject, label, table(rows, best))
    record = {"key": key, "chosen": label, "backend": best["backend"], "precision": best["precision"],
              "table": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    except OSError as exc:
        log.warning("%s: cannot cache the backend choice (%s)", path, exc)
    return opened[label], {**record, "cached": False, "cache_file": str(path)}
