"""``embed --shard I/N``: N independent processes (a SLURM array, several machines) embed one set of videos
into one output folder.

Every process expands the same inputs, sorts them and takes its share (:func:`select`: every N-th
path by name, or the greedy size balance of :func:`shard`, which also splits a torchrun job among its ranks). Video outputs never
clash (one ``<stem>.*`` set per video, each written atomically), and each process writes its own
``manifest.shard-I-of-N.json``. Lock-free merging: after writing its own, a process reads the
others' (same inputs, weights and N); when all N are there it writes the full ``manifest.json``.
Two processes finishing together may both write it, with the same content (the last rename wins);
if a process died, any rerun (with or without ``--shard``) skips the finished videos and completes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from selfee.errors import SelfeeError
from selfee.fileio import atomic_write_json

log = logging.getLogger("selfee")

BY = ("name", "size")


def shard(paths: list[Path], rank: int, world: int) -> list[Path]:
    """This rank's videos: largest first to the least-loaded rank (sizes balance the work), in input order."""
    if world <= 1:
        return list(paths)
    sizes = [p.stat().st_size if p.is_file() else 0 for p in paths]
    load = [0] * world
    owner = {}
    for i in sorted(range(len(paths)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i] + 1
    return [p for i, p in enumerate(paths) if owner[i] == rank]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N; SLURM: ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) -> (I, N); None -> None."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise SelfeeError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I counts from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise SelfeeError(f"--shard {text}: need 0 <= I < N (got I={i}, N={n})")
    return i, n


def select(paths: list[Path], index: int, count: int, by: str = "name") -> list[Path]:
    """Shard ``index`` of ``count`` of ``paths``: the same on every machine for the same inputs.

    ``name``: the paths sorted, every ``count``-th from ``index``. ``size``: largest file first to the
    least-loaded shard (ties to the lower shard), which balances the work when sizes vary.
    """
    if by not in BY:
        raise SelfeeError(f"unknown --shard-by '{by}' (choose from: {', '.join(BY)})")
    ordered = sorted(paths, key=str)
    if by == "size":
        return shard(ordered, index, count)
    return ordered[index::count]


def inputs_digest(paths: list[Path]) -> str:
    """What identifies the run's full input set across processes (the sorted resolved paths)."""
    names = sorted(str(Path(p).resolve()) for p in paths)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def shard_manifest_path(out_dir: Path, index: int, count: int) -> Path:
    return Path(out_dir) / f"manifest.shard-{index}-of-{count}.json"


def write_shard_manifest(out_dir: Path, index: int, count: int, digest: str, manifest: dict) -> Path:
    """This process's manifest, tagged with the shard and the full input set."""
    return atomic_write_json(shard_manifest_path(out_dir, index, count),
                             {**manifest, "shard": {"index": index, "count": count, "inputs_sha256": digest}})


def merge(out_dir: Path, count: int, digest: str, weights_sha256: str, order: dict[str, int]) -> dict | None:
    """The full ``manifest.json`` when all ``count`` shard manifests of this run are present (written), else None."""
    out_dir = Path(out_dir)
    parts = []
    for i in range(count):
        try:
            part = json.loads(shard_manifest_path(out_dir, i, count).read_text())
        except (OSError, ValueError):
            return None
        tag = part.get("shard", {})
        if tag.get("inputs_sha256") != digest or part.get("weights_sha256") != weights_sha256:
            return None  # left from another run (other inputs or weights)
        parts.append(part)
    first = next((p for p in parts if p.get("videos") or p.get("backend")), parts[0])
    videos = sorted((v for p in parts for v in p.get("videos", [])),
                    key=lambda r: order.get(str(Path(r["video"]).resolve()), len(order)))
    frames = sum(p.get("frames_embedded", 0) for p in parts)
    seconds = max(p.get("seconds", 0.0) for p in parts)
    manifest = {
        **{k: v for k, v in first.items() if k != "shard"},
        "shards": count,
        "videos": videos,
        "failed": [f for p in parts for f in p.get("failed", [])],
        "nearly_constant": [n for p in parts for n in p.get("nearly_constant", [])],
        "frames_embedded": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds else 0.0,
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    log.info("all %d shards are complete: wrote %s", count, out_dir / "manifest.json")
    return manifest


def finish(out_dir: Path, shard_of: tuple[int, int], all_paths: list[Path], manifest: dict) -> dict:
    """Write this shard's manifest and, when every shard is done, the full one; returns this shard's manifest."""
    index, count = shard_of
    digest = inputs_digest(all_paths)
    write_shard_manifest(out_dir, index, count, digest, manifest)
    order = {str(Path(p).resolve()): i for i, p in enumerate(all_paths)}
    merged = merge(out_dir, count, digest, manifest.get("weights_sha256", ""), order)
    if merged is None:
        log.info("shard %d/%d done; manifest.json is written by the last shard to finish (or by any rerun)",
                 index, count)
    return {**manifest, "shard": {"index": index, "count": count}, "complete": merged is not None}
