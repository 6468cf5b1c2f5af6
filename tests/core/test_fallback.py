"""Strict mode: a fallback is one warning normally and an error naming the cause when strict."""

import logging

import pytest

from selfee import fallback as fb


def test_a_fallback_warns_once_and_returns_its_record(monkeypatch, caplog):
    monkeypatch.delenv(fb.ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        rec = fb.fallback("NVDEC", "PyAV", "4:4:4 stream", subject="a.mp4")
    assert rec == {"wanted": "NVDEC", "taken": "PyAV", "why": "4:4:4 stream"}
    assert [r.getMessage() for r in caplog.records] == ["a.mp4: NVDEC unavailable (4:4:4 stream); using PyAV"]


@pytest.mark.parametrize("value,on", [("1", True), ("yes", True), ("0", False), ("", False), ("off", False)])
def test_the_environment_variable_decides(monkeypatch, value, on):
    monkeypatch.setenv(fb.ENV, value)
    assert fb.strict() is on


def test_strict_mode_raises_naming_the_cause(monkeypatch):
    monkeypatch.delenv(fb.ENV, raising=False)
    fb.set_strict(True)
    try:
        with pytest.raises(fb.FallbackError, match=r"TensorRT unavailable \(no engine\).*torch"):
            fb.fallback("TensorRT", "torch", "no engine")
    finally:
        fb.set_strict(False)
    assert not fb.strict()
