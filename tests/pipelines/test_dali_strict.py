"""Fallbacks on the DALI lanes said out loud (or errors under --strict), bugs never taken for decode
failures, each video's decode path recorded, the DALI version checked, the copy stream ordered."""

import logging
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import cfg_for, textured_frames  # noqa: E402

from conftest import write_video  # noqa: E402
from selfee.data import make_sources, plan_chunks  # noqa: E402
from selfee.errors import SelfeeError, VideoError  # noqa: E402
from selfee.fallback import FallbackError  # noqa: E402
from selfee.pipelines import backend, decode  # noqa: E402
from selfee.pipelines.decode import DaliChunkDecoder  # noqa: E402
from selfee.pipelines.embed import dali_embed_batches  # noqa: E402
from selfee.video import probe  # noqa: E402


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    try:
        return write_video(tmp_path_factory.mktemp("strict") / "v.webm", textured_frames(30), codec="libvpx-vp9", g=8)
    except Exception as exc:
        pytest.skip(f"no VP9 encoder: {exc}")


def chunk_decoder(path, **kw):
    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.live_frames": False, "data.input_size": [48, 64]})
    sources = make_sources([probe(path)], cfg)
    chunks = plan_chunks(0, sources[0], 2, 16, 0, sources[0].frames)
    return DaliChunkDecoder(sources, False, (48, 64), torch.device("cpu"), threads=1, **kw), chunks


# ---------------------------------------------------------------------------------------------
# Which exceptions are decode failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc, failure", [
    (RuntimeError("Critical error in pipeline:\nCUVID rejected the stream"), True),
    (VideoError("v.mp4", "DALI decoded (3, 4) for 5 frames"), True),
    (OSError("truncated"), True),
    (TypeError("unexpected keyword argument"), False),
    (KeyError("encoded"), False),
    (AttributeError("no attribute"), False),
    (NotImplementedError(), False),
    (SelfeeError("DALI 1.30 has no video decoder taking start_frame"), False),
])
def test_decode_failures_and_bugs(exc, failure):
    assert backend.decode_failure(exc) is failure


def test_a_bug_in_a_dali_lane_propagates_instead_of_falling_back(vp9, monkeypatch, caplog):
    dec, chunks = chunk_decoder(vp9)
    monkeypatch.setattr(DaliChunkDecoder, "_decode_dali", lambda self, lane, part: {}["no such key"])
    with caplog.at_level(logging.WARNING, logger="selfee"), pytest.raises(KeyError):
        dec.decode_many(chunks)
    dec.close()
    assert dec.lanes == {0: "dali-cpu"} and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_strict_mode_turns_a_failing_dali_lane_into_an_error(vp9, monkeypatch):
    monkeypatch.setenv("SELFEE_STRICT", "1")
    dec, chunks = chunk_decoder(vp9)

    def rejects(self, lane, part):
        raise RuntimeError("Critical error in pipeline:\nCUVID rejected the stream (test)")

    monkeypatch.setattr(DaliChunkDecoder, "_decode_dali", rejects)
    with pytest.raises(FallbackError, match=r"v\.webm: DALI's CPU decoder unavailable \(CUVID rejected "
                                            r"the stream \(test\)\); strict mode forbids falling back to PyAV"):
        dec.decode_many(chunks)
    dec.close()


# ---------------------------------------------------------------------------------------------
# Embedding: the decode path of each video, strict mode, bugs
# ---------------------------------------------------------------------------------------------


def test_the_embedding_stream_records_its_decode_path(vp9):
    cfg = cfg_for()
    (src,) = make_sources([probe(vp9)], cfg)
    record = {"stale": 1}
    n = sum(len(b.frame) for b in dali_embed_batches(src, cfg, 16, "cpu", sequence=8, record=record))
    assert n == 30
    assert record == {"lane": "dali-cpu", "why": "vp9 on DALI's CPU decoder", "frames": {"dali-cpu": 30}}


def test_the_pyav_lane_records_its_frames(tmp_path):
    p = write_video(tmp_path / "h.mp4", textured_frames(20))
    cfg = cfg_for()
    (src,) = make_sources([probe(p)], cfg)
    record = {}
    assert sum(len(b.frame) for b in dali_embed_batches(src, cfg, 16, "cpu", sequence=8, record=record)) == 20
    assert record == {"lane": "pyav", "why": "DALI's CPU decoder does not read h264", "frames": {"pyav": 20}}


def _breaking_stream(monkeypatch, exc):
    real = decode._dali_stream

    def breaks(*a, **kw):
        for i, item in enumerate(real(*a, **kw)):
            if i == 1:
                raise exc
            yield item

    monkeypatch.setattr(decode, "_dali_stream", breaks)


def test_strict_embedding_stops_where_dali_stops(vp9, monkeypatch):
    _breaking_stream(monkeypatch, RuntimeError("CUVID rejected the stream (test)"))
    monkeypatch.setenv("SELFEE_STRICT", "1")
    cfg = cfg_for()
    (src,) = make_sources([probe(vp9)], cfg)
    with pytest.raises(FallbackError, match=r"stopped at frame 8: CUVID rejected the stream \(test\)"):
        list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))


def test_a_bug_in_the_embedding_stream_propagates(vp9, monkeypatch):
    _breaking_stream(monkeypatch, TypeError("a bug (test)"))
    cfg = cfg_for()
    (src,) = make_sources([probe(vp9)], cfg)
    with pytest.raises(TypeError, match="a bug"):
        list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))


def test_a_video_nvdec_cannot_take_is_a_fallback_on_a_gpu(caplog, monkeypatch):
    info = SimpleNamespace(path="m3v1mp4.mp4", codec="h264", pix_fmt="yuv444p", profile="High 4:4:4 Predictive",
                           vfr=False, width=640, height=480)
    gpu = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        rec = decode.decode_path(info, gpu)
    assert rec["lane"] == "pyav" and rec["fallback"]["wanted"] == "NVDEC" and rec["fallback"]["taken"] == "PyAV"
    assert caplog.messages == ["m3v1mp4.mp4: NVDEC unavailable (NVDEC does not decode h264 High 4:4:4 Predictive "
                               "yuv444p); using PyAV"]
    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match="NVDEC does not decode h264 High 4:4:4 Predictive yuv444p"):
        decode.decode_path(info, gpu)
    # on the CPU PyAV is the chosen lane, not a fallback: no warning, no error even in strict mode
    assert decode.decode_path(info, torch.device("cpu"))["lane"] == "pyav"


# ---------------------------------------------------------------------------------------------
# The DALI version: a DALI without the video decoder's arguments is a clear error, not a fallback
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def old_dali(monkeypatch):
    """DALI as an old release: its video decoder has no start_frame/end_frame/pad_mode (or does not exist)."""
    schemas = {"decoders__Video": None, "experimental__decoders__Video": {"bytes_per_sample_hint", "end_frame"}}
    monkeypatch.setattr(backend, "_schema_args", lambda name: schemas.get(name))
    backend.video_decoder.cache_clear()
    backend.backend_error.cache_clear()
    yield
    backend.video_decoder.cache_clear()
    backend.backend_error.cache_clear()


def test_an_old_dali_is_named_with_the_minimum(old_dali):
    import nvidia.dali

    msg = backend.dali_error()
    assert msg is not None and f"DALI {nvidia.dali.__version__} has no video decoder taking start_frame, end_frame, " \
        f"pad_mode" in msg and f"DALI >= {backend.DALI_MIN}" in msg
    with pytest.raises(SelfeeError, match=r"needs DALI >= 1\.48"):
        backend.video_decoder()
    assert backend.backend_error("cpu", None) == msg  # train/embed pipelines report it (auto: use torch)


def test_an_old_dali_stops_the_chunk_decoder_with_its_error(vp9, old_dali, caplog):
    dec, chunks = chunk_decoder(vp9)
    with caplog.at_level(logging.WARNING, logger="selfee"), pytest.raises(SelfeeError, match="DALI >= 1.48"):
        dec.decode_many(chunks)  # not swallowed into a PyAV fallback
    dec.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_experimental_name_serves_a_dali_from_before_the_move(monkeypatch):
    from nvidia.dali import fn

    args = {"start_frame", "end_frame", "pad_mode", "stride"}
    monkeypatch.setattr(backend, "_schema_args", lambda n: args if n == "experimental__decoders__Video" else None)
    backend.video_decoder.cache_clear()
    try:
        assert backend.video_decoder() is fn.experimental.decoders.video
    finally:
        backend.video_decoder.cache_clear()
        monkeypatch.undo()
    assert backend.video_decoder() is fn.decoders.video  # the installed DALI


def test_the_pinned_minimum_is_the_checked_one():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    pins = re.findall(r'"nvidia-dali-cuda1[23]0>=([\d.]+)"', text)
    assert pins and set(pins) == {backend.DALI_MIN}


# ---------------------------------------------------------------------------------------------
# feed_ndarray's copy stream waits for the current stream (fake streams: the order of the calls)
# ---------------------------------------------------------------------------------------------


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))

    def synchronize(self):
        self.log.append(("sync", self.name))


class FakeOut:
    def __init__(self, log):
        self.log = log

    def record_stream(self, stream):
        self.log.append(("record", stream.name))


def test_the_copy_waits_for_the_current_stream_and_the_output_records_the_copy_stream():
    log = []
    copy, current, out = FakeStream("copy", log), FakeStream("current", log), FakeOut(log)
    backend.ordered_copy(out, copy, current, lambda s: log.append(("copy on", s.name)))
    assert log == [("wait", "copy", "current"), ("copy on", "copy"), ("record", "copy")]


def test_to_torch_on_a_gpu_orders_the_copy_after_the_current_stream(monkeypatch):
    import nvidia.dali.plugin.pytorch as dali_torch

    log = []
    copy, current = FakeStream("copy", log), FakeStream("current", log)
    out = FakeOut(log)
    monkeypatch.setattr(backend, "_copy_stream", lambda device: copy)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: out)
    monkeypatch.setattr(dali_torch, "feed_ndarray", lambda t, o, cuda_stream: log.append(("feed", cuda_stream.name)))
    tensor = SimpleNamespace(shape=lambda: [2, 3], dtype=next(iter(dali_torch.to_torch_type)))
    assert backend.to_torch(tensor, torch.device("cuda", 0)) is out
    assert log == [("wait", "copy", "current"), ("feed", "copy"), ("record", "copy"), ("sync", "copy")]
