"""Atomic writes (one implementation for every file), the output-folder check, hashes, the cache folder."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from selfee.errors import SelfeeError
from selfee.fileio import (
    AtomicFile,
    atomic_path,
    atomic_write,
    atomic_write_json,
    cache_dir,
    check_writable,
    file_sha256,
    temp_path,
)


def test_text_bytes_and_json_replace_the_file_whole(tmp_path):
    p = tmp_path / "a.csv"
    atomic_write(p, "x\r\ny\n")
    assert p.read_bytes() == b"x\r\ny\n"  # newlines as given
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "m.json", {"a": 1, "p": tmp_path})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1, "p": str(tmp_path)}
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.csv", "m.json"]


def test_a_streamed_file_appears_only_when_committed(tmp_path):
    p = tmp_path / "v.npy"
    f = AtomicFile(p, tmp=tmp_path / "v.npy.partial")
    f.write(b"rows")
    assert not p.exists() and (tmp_path / "v.npy.partial").is_file()
    assert f.commit() == p and p.read_bytes() == b"rows"
    g = AtomicFile(p)
    g.write(b"other")
    g.abort()
    assert p.read_bytes() == b"rows" and [q.name for q in tmp_path.iterdir()] == ["v.npy"]
    with pytest.raises(RuntimeError), AtomicFile(p) as h:
        h.write(b"half")
        raise RuntimeError("writer failed")
    assert p.read_bytes() == b"rows" and [q.name for q in tmp_path.iterdir()] == ["v.npy"]


def test_a_path_written_by_a_tool_is_renamed_or_removed(tmp_path):
    final = tmp_path / "model.onnx"
    with atomic_path(final, keep_suffix=True) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == tmp_path and tmp.name.startswith(".model.")
        tmp.write_bytes(b"ok")
    assert final.read_bytes() == b"ok"
    with pytest.raises(ValueError), atomic_path(final) as tmp:
        tmp.write_bytes(b"bad")
        raise ValueError("verification failed")
    assert final.read_bytes() == b"ok" and [q.name for q in tmp_path.iterdir()] == ["model.onnx"]


def test_temporary_names_differ_between_threads(tmp_path):
    import threading

    names = []
    t = threading.Thread(target=lambda: names.append(temp_path(tmp_path / "x")))
    t.start()
    t.join()
    assert names[0] != temp_path(tmp_path / "x") and names[0].name.endswith(".partial")


def test_check_writable_and_sha256(tmp_path):
    assert check_writable(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(SelfeeError, match="output folder is not writable"):
        check_writable(tmp_path / "file" / "sub")
    data = bytes(range(256)) * 5000
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_one_cache_variable_and_the_old_one_still_read(tmp_path, monkeypatch, caplog):
    from selfee import fileio

    for name in ("SELFEE_CACHE", "SELFEE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "selfee-fast"
    monkeypatch.setenv("SELFEE_CACHE_DIR", str(tmp_path / "old"))
    fileio._warn_old_cache_env.cache_clear()
    with caplog.at_level(logging.WARNING, logger="selfee"):
        assert cache_dir() == tmp_path / "old"
        assert cache_dir() == tmp_path / "old"
    assert caplog.text.count("SELFEE_CACHE_DIR is deprecated: set SELFEE_CACHE") == 1
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "new"))
    assert cache_dir() == tmp_path / "new"
