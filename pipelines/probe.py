"""Does NVDEC really decode? A tiny generated H.264 clip through DALI's mixed video decoder, against PyAV
(for ``selfee-fast doctor`` and bench/gpu_check.sh)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from nvidia.dali import fn, types

from selfee.pipelines.backend import one_line, sync_pipeline, video_decoder

FRAMES, HEIGHT, WIDTH = 16, 64, 96


def probe_clip(path: Path) -> np.ndarray:
    """Write the probe clip (H.264 yuv420p, a keyframe every 8 frames) to ``path``; returns its RGB frames."""
    from selfee.video import VideoWriter

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.stack([np.stack([(x * 2 + 9 * i) % 256, (y * 3) % 256, np.full_like(x, 40 + 8 * i)], -1)
                       for i in range(FRAMES)]).astype(np.uint8)
    with VideoWriter(path, 25, "libx264", "yuv420p", options={"g": 8, "bf": 0, "crf": 10}) as out:
        out.write_many(frames)
    return frames


def nvdec_decodes(device_index: int = 0) -> tuple[bool, str]:
    """(ok, what happened): NVDEC decodes the probe clip to the frames PyAV decodes (within YUV rounding)."""
    import av

    try:
        with tempfile.TemporaryDirectory(prefix="selfee-doctor-") as tmp:
            path = Path(tmp) / "probe.mp4"
            probe_clip(path)
            with av.open(str(path)) as c:
                ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
            decoder = video_decoder()

            @sync_pipeline(1, device_index, num_threads=1)
            def pipe():
                enc = fn.external_source(name="encoded", dtype=types.UINT8)
                return decoder(enc, device="mixed")

            p = pipe()
            p.build()
            p.feed_input("encoded", [np.frombuffer(path.read_bytes(), np.uint8)])
            (out,) = p.run()
            got = np.asarray(out.as_cpu()[0])
    except Exception as exc:  # any failure is the answer: NVDEC does not work here
        return False, one_line(exc)
    if got.shape != ref.shape:
        return False, f"NVDEC gave frames of shape {got.shape}, PyAV {ref.shape}"
    diff = float(np.abs(got.astype(np.int16) - ref.astype(np.int16)).mean())
    if diff > 3.0:
        return False, f"NVDEC's frames differ from PyAV's by {diff:.1f} grey levels on average"
    return True, f"decoded a {FRAMES}-frame {WIDTH}x{HEIGHT} H.264 clip like PyAV (mean difference {diff:.2f})"
