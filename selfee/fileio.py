"""Files: atomic writes, the output-folder check, file hashes, the cache folder.

Every file that must never be seen half-written goes through this module: its bytes go to a
temporary name in the target's folder, unique to this process and thread, and ``os.replace``
renames it over the target in one step (two writers of one file, such as ranks or processes
exporting the same checkpoint, each rename a whole file; the last one stays). Files that must
survive a crash (checkpoints, embeddings, records) are fsynced before the rename.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def temp_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A temporary name beside ``path``, unique to this process and thread.

    ``<name>.<pid>-<thread>.partial``; with ``keep_suffix`` ``.<stem>.<pid>-<thread>.partial<suffix>``,
    for tools that choose the format by the suffix (PyAV, ONNX, TorchScript, TensorRT).
    """
    path = Path(path)
    tag = f"{os.getpid()}-{threading.get_ident()}"
    if keep_suffix:
        return path.with_name(f".{path.stem}.{tag}.partial{path.suffix}")
    return path.with_name(f"{path.name}.{tag}.partial")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path for the block (or a tool it calls) to write: renamed over ``path`` when the
    block ends normally, removed when it raises."""
    path = Path(path)
    tmp = temp_path(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicFile:
    """A file streamed to a temporary name; :meth:`commit` flushes, fsyncs and renames it over ``path``,
    :meth:`abort` removes it. As a context manager: committed when the block ends normally, else aborted.

    ``tmp`` fixes the temporary name (an embedding's ``<stem>.npy.partial``, which a rerun replaces).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb", tmp: str | os.PathLike | None = None,
                 fsync: bool = True, newline: str | None = None):
        self.path = Path(path)
        self.tmp = Path(tmp) if tmp is not None else temp_path(self.path)
        self.fsync = fsync
        self.file = open(self.tmp, mode, **({} if "b" in mode else {"newline": newline}))

    def write(self, data) -> int:
        return self.file.write(data)

    def commit(self) -> Path:
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = True) -> Path:
    """Write ``data`` (text as is, newlines untranslated; or bytes) to ``path`` atomically."""
    with AtomicFile(path, "w" if isinstance(data, str) else "wb", fsync=fsync, newline="") as f:
        f.write(data)
    return f.path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (anything else as ``str``), atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, default=str))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (fsynced), creating its folder."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as f:
        torch.save(obj, f.file)
    return path


# ---------------------------------------------------------------------------------------------
# Checks and hashes
# ---------------------------------------------------------------------------------------------


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` and write a file there; a one-line :class:`SelfeeError` when it cannot be."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)  # a unique name: runs may share a folder
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SelfeeError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None
    return out_dir


_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> digest


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, remembered per (path, size, modification time): one embedding run asks for a
    checkpoint's digest in several places (exports, the backend cache, the outputs) and reads it once."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


# ---------------------------------------------------------------------------------------------
# The cache folder
# ---------------------------------------------------------------------------------------------

CACHE_ENV = "SELFEE_CACHE"
_OLD_CACHE_ENV = "SELFEE_CACHE_DIR"  # deprecated alias, still read


def cache_dir() -> Path:
    """``$SELFEE_CACHE``, else ``$XDG_CACHE_HOME/selfee-fast``, else ``~/.cache/selfee-fast``.

    Mean backgrounds go to ``<cache>/backgrounds``, exported checkpoints to ``<cache>/exports``,
    TensorRT timing caches to ``<cache>/tensorrt``. The old ``SELFEE_CACHE_DIR`` is still read
    (with a warning) where ``SELFEE_CACHE`` is not set.
    """
    env = os.environ.get(CACHE_ENV)
    if not env and os.environ.get(_OLD_CACHE_ENV):
        env = os.environ[_OLD_CACHE_ENV]
        _warn_old_cache_env()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfee-fast"


@functools.cache
def _warn_old_cache_env() -> None:
    log.warning("%s is deprecated: set %s instead (it names the same folder)", _OLD_CACHE_ENV, CACHE_ENV)
