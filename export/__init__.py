"""Export of the Selfee encoder (TorchScript, ONNX, TensorRT) and the Embedders that run the exports.

Installed as ``selfee.export``; the only package that imports onnx, onnxruntime and tensorrt, and
only inside the functions that need them. Every exported graph takes the uint8 frames that
``selfee.embed.EmbedBatch`` carries (B x 3 x H x W, 0-255) and returns float32 embeddings
(B x dim); the 1/255 scaling is part of the graph (see :mod:`selfee.export.graph`).
:func:`selfee.export.open.open_embedder` opens any weights file (checkpoint or export) as an Embedder.
"""
