"""DALI lanes when decoding goes wrong: one rejected video among several, and a broken last GOP."""

import logging

import av
import pytest
import torch

from conftest import write_video
from selfee.video import probe

pytest.importorskip("nvidia.dali")

from dali_helpers import cfg_for, dali_cpu_rgb, take, textured_frames  # noqa: E402

from selfee.data import BlockLoader, ChunkDecoder, make_sources, plan_chunks  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.pipelines.decode import DaliChunkDecoder  # noqa: E402


def encode(path, frames, codec, **opts):
    try:
        return write_video(path, frames, codec=codec, **opts)
    except Exception as exc:
        pytest.skip(f"{codec} encoder unavailable: {exc}")


def hide_tail(src, dst, n: int):
    """A copy of a VP8 WebM whose last ``n`` packets are marked not shown: the container still lists
    them as frames (and ``probe`` counts them), but no decoder outputs a picture for them."""
    with av.open(str(src)) as inp:
        s = inp.streams.video[0]
        packets = [p for p in inp.demux(s) if p.size]
        with av.open(str(dst), "w", format="webm") as out:
            o = out.add_stream_from_template(s)
            for i, p in enumerate(packets):
                if i >= len(packets) - n:
                    data = bytearray(bytes(p))
                    assert data[0] & 0x10  # VP8 frame tag: show_frame
                    data[0] &= ~0x10
                    q = av.Packet(bytes(data))
                    q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                    p = q
                p.stream = o
                out.mux(p)
    return dst


@pytest.fixture
def broken(tmp_path):
    """A new file per test: the tail check is made (and logged) once per file and process."""
    p = encode(tmp_path / "intact.webm", textured_frames(48), "libvpx", g=8, **{"auto-alt-ref": 0})
    return hide_tail(p, tmp_path / "broken.webm", 3)




# ---------------------------------------------------------------------------------------------
# One video DALI rejects does not take the others of its batch to PyAV
# ---------------------------------------------------------------------------------------------


def test_a_failing_run_demotes_only_the_video_that_fails_again(tmp_path, monkeypatch, caplog):
    good = encode(tmp_path / "good.webm", textured_frames(40), "libvpx-vp9", g=8)
    bad = encode(tmp_path / "bad.webm", textured_frames(40, seed=3), "libvpx-vp9", g=8)
    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.live_frames": False, "data.input_size": [48, 64]})
    sources = make_sources([probe(good), probe(bad)], cfg)
    chunks = [c for v, s in enumerate(sources) for c in plan_chunks(v, s, 2, 16, 0, s.frames)]
    runs = []
    real = DaliChunkDecoder._decode_dali

    def rejects_bad(self, lane, part):  # NVDEC rejecting one stream fails the whole batched run
        runs.append(sorted({c.video for c in part}))
        if any(c.video == 1 for c in part):
            raise RuntimeError("Critical error in pipeline:\nCUVID rejected the stream (test)")
        return real(self, lane, part)

    monkeypatch.setattr(DaliChunkDecoder, "_decode_dali", rejects_bad)
    dec = DaliChunkDecoder(sources, False, (48, 64), torch.device("cpu"), threads=1)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        first = dec.decode_many(chunks)
        again = dec.decode_many(chunks)
    dec.close()
    assert runs == [[0, 1], [0], [1], [0]]  # the batch, then each video alone; then bad.webm stays on PyAV
    assert dec.lanes == {0: "dali-cpu", 1: "pyav"}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [f"{bad}: DALI's CPU decoder unavailable (CUVID rejected the stream (test)); using PyAV"]
    assert dec.decode_paths[1]["fallback"] == {"wanted": "DALI's CPU decoder", "taken": "PyAV",
                                               "why": "CUVID rejected the stream (test)"}
    assert dec.decode_paths[0] == {"lane": "dali-cpu", "why": "vp9 on DALI's CPU decoder"}
    ref = ChunkDecoder(sources, False, (48, 64))
    whole = torch.from_numpy(dali_cpu_rgb(good)).permute(0, 3, 1, 2)
    for c, x, y in zip(chunks, first, again):
        assert torch.equal(x, y)
        if c.video == 1:
            assert torch.equal(x, ref.decode(c))  # PyAV: the reference itself
        else:
            assert torch.equal(x, whole[c.decode_start : c.decode_stop])  # still DALI's decoder


# ---------------------------------------------------------------------------------------------
# A broken last GOP: PyAV's frames, logged once per video, never padded frames counted
# ---------------------------------------------------------------------------------------------


def test_the_broken_tail_video_is_what_the_tests_need(broken):
    info = probe(broken)
    with av.open(str(broken)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert (info.frames, decoded, int(info.keyframes[-1])) == (48, 45, 40)


def test_embedding_counts_only_the_frames_pyav_decodes(broken, caplog):
    from selfee.pipelines.embed import dali_embed_batches

    cfg = cfg_for()
    (src,) = make_sources([probe(broken)], cfg)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        ours = list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))
        again = list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))
    ref = list(iter_embed_batches(src, cfg, 16))
    frames = torch.cat([b.frame for b in ours])
    assert frames.tolist() == torch.cat([b.frame for b in ref]).tolist() == list(range(45))
    assert torch.cat([b.frame for b in again]).tolist() == frames.tolist()
    live, want = torch.cat([b.frames for b in ours]), torch.cat([b.frames for b in ref])
    assert torch.equal(live[42:], want[42:])  # live frames (t-2, t, t+2) all in the last GOP: PyAV's frames
    assert (live.int() - want.int()).abs().float().mean() < 2.0  # elsewhere DALI's YUV -> RGB
    tail = [r for r in caplog.records if "broken tail" in r.getMessage()]
    assert len(tail) == 1
    assert "broken.webm: the last GOP (frames 40-47) decodes to 5 frames, not 8" in tail[0].getMessage()


def test_training_chunks_at_a_broken_tail_match_the_reference_and_log_once(broken, caplog):
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.chunk_frames": 8, "data.pool_batches": 2})
    sources = make_sources([probe(broken)], cfg)
    ref = take(BlockLoader(sources, cfg), 12)  # the PyAV lane warns for every chunk reaching the tail
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selfee"):
        pipe = DaliTrainPipeline(sources, cfg, "cpu", prefetch=0)
        ours = take(pipe, 12)
    assert pipe.lanes == {"broken.webm": "dali-cpu"}
    tail_samples = 0
    for a, r in zip(ours, ref):
        assert torch.equal(a.frame, r.frame)
        got = (a.view1 * 255).round().to(torch.uint8)
        at_tail = a.frame + 2 >= 40  # live frames reaching the last GOP: decoded by PyAV, padded as the reference
        tail_samples += int(at_tail.sum())
        assert torch.equal(got[at_tail], r.frames[at_tail])
        assert (got[~at_tail].int() - r.frames[~at_tail].int()).abs().float().mean() < 2.0
    assert tail_samples > 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "broken tail" in lines[0]  # once for the video, not per chunk or block


def test_runs_are_cut_by_chunk_count_and_decoded_bytes():
    from types import SimpleNamespace

    from selfee.data import Chunk

    big = SimpleNamespace(info=SimpleNamespace(height=1024, width=1024))
    small = SimpleNamespace(info=SimpleNamespace(height=48, width=64))
    dec = SimpleNamespace(sources=[big, small], max_chunks=3, run_bytes=2 * 100 * 1024 * 1024 * 3)
    chunks = [Chunk(v, 2, 102, 0, 100 + 4) for v in (0, 0, 0, 1, 1, 1, 1)]  # 104 frames each
    runs = DaliChunkDecoder._runs(dec, chunks, list(range(len(chunks))))
    assert [j for r in runs for j in r] == list(range(len(chunks)))  # every chunk once, in order
    assert all(len(r) <= 3 for r in runs)
    for r in runs:  # within the budget, unless a run holds a single chunk that alone exceeds it
        need = sum((chunks[j].decode_stop - chunks[j].decode_start) * dec.sources[chunks[j].video].info.height
                   * dec.sources[chunks[j].video].info.width * 3 for j in r)
        assert need <= dec.run_bytes or len(r) == 1
    # two 1024^2 chunks of 104 frames exceed the budget; small frames fill a run up to the chunk count
    assert runs == [[0], [1], [2, 3, 4], [5, 6]]
