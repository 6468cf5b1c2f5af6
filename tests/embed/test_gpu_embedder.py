"""The CUDA-graph TorchEmbedder on a GPU (gpu marker): the graph is captured once per input shape and
replayed (smaller batches padded into it), and its bf16 embeddings match the eager fp32 encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfee.embed.embedder import TorchEmbedder
from selfee.export.graph import random_frames

from .conftest import cosine_min

pytestmark = pytest.mark.gpu


def eager(model, frames):
    with torch.no_grad():
        return model.encoder.cpu().float()(frames.float() / 255).numpy()


def test_the_cuda_graph_embedder_matches_the_eager_encoder(tiny):
    import copy

    model = tiny[1]
    emb = TorchEmbedder(copy.deepcopy(model.encoder), "cuda")
    assert emb.cuda_graphs and emb.amp == torch.bfloat16
    xs = [random_frames(n, (32, 48), seed=n) for n in (16, 16, 5)]  # 5: padded into the 16-frame graph
    outs = [emb.submit(x).result() for x in xs]
    assert emb.cuda_graphs and len(emb._graphs) == 1  # captured once, no fallback to eager
    for x, y in zip(xs, outs):
        assert y.shape == (len(x), emb.dim) and y.dtype == np.float32
        assert cosine_min(y, eager(model, x)) >= 0.999  # bf16 autocast
    on_gpu = emb.submit(xs[0].cuda()).result()  # frames already on the GPU (the DALI lane)
    np.testing.assert_allclose(on_gpu, outs[0], rtol=1e-5, atol=1e-5)
    plain = TorchEmbedder(copy.deepcopy(model.encoder), "cuda", cuda_graphs=False)
    assert cosine_min(plain(xs[0]), outs[0]) >= 0.9999  # the graph replays what eager mode computes
