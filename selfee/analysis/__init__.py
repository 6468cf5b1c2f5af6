"""Downstream analyses of embeddings: classify, anomaly, maps, motifs, compare, pose states, evaluate."""
