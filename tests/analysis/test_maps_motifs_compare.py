"""Maps, motifs and DTW comparison on synthetic embeddings with known structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import bouts, cluster_sequence, write_embed
from selfee.analysis.compare import CompareOptions, binned, compare, dtw_distance, dtw_reference, group_test
from selfee.analysis.maps import make_map
from selfee.analysis.motifs import MotifOptions, find_motifs, transitions


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def adjusted_rand(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b)


@pytest.fixture
def clustered(tmp_path, rng):
    centers = unit(rng.standard_normal((3, 24)))
    truth = {}
    for v in range(2):
        states = bouts(rng, 400, 3, 25)
        write_embed(tmp_path / "emb", f"v{v}", cluster_sequence(rng, centers, states, 0.1))
        truth[f"v{v}"] = states
    lab = tmp_path / "labels"
    lab.mkdir()
    for stem, s in truth.items():
        (lab / f"{stem}.csv").write_text("frame,label\n" + "".join(f"{i},b{x}\n" for i, x in enumerate(s)))
    return tmp_path, truth


def test_motifs_recover_the_clusters(clustered):
    root, truth = clustered
    res = find_motifs(root / "emb", root / "motifs", MotifOptions(k=3, pca_dim=4, smooth=3, seed=1))
    for stem, s in truth.items():
        assert adjusted_rand(res.states[stem], s) > 0.95
        assert np.sort(res.usage[stem]) == pytest.approx(np.sort(np.bincount(s) / len(s)), abs=0.03)
    assert np.allclose(res.transitions.sum(1), 1) and np.allclose(np.diag(res.transitions), 0)
    all_states = np.concatenate(list(res.states.values()))
    assert np.all(np.diff(np.bincount(all_states)) <= 0)  # state 0 is the most used
    out = root / "motifs"
    for name in ("usage.csv", "transitions.csv", "states_summary.csv", "model.npz", "ethogram.png", "usage.png",
                 "transitions.png", "states/v0.csv"):
        assert (out / name).is_file(), name


def test_transition_counts_by_hand():
    t = transitions(np.array([0, 0, 1, 1, 2, 0, 2]), 3)
    assert t.tolist() == [[0, 1, 1], [0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_map_separates_the_clusters(clustered, method):
    from threadpoolctl import threadpool_limits

    root, truth = clustered
    # One OpenMP thread: on a loaded 2-core CI machine t-SNE's thread barriers cost 10x more than the work.
    with threadpool_limits(1):
        res = make_map(root / "emb", root / method, method, labels_dir=root / "labels", max_points=300, perplexity=20)
    assert len(res.xy) == 300 and set(res.videos) == {"v0", "v1"}
    from sklearn.metrics import silhouette_score

    assert silhouette_score(res.xy, res.labels) > 0.5
    for name in ("map.csv", "map_by_video.png", "map_by_time.png", "map_by_label.png"):
        assert (root / method / name).is_file()


def test_dtw_matches_the_textbook_recursion(rng):
    a, b = unit(rng.standard_normal((13, 5))), unit(rng.standard_normal((9, 5)))
    assert dtw_distance(a, b, block_rows=4) == pytest.approx(dtw_reference(a, b), rel=1e-9)
    assert dtw_distance(a, a) == pytest.approx(0, abs=1e-9)
    # A band can only remove paths, and a band as wide as the sequences removes none.
    assert dtw_distance(a, b, band=0.3) >= dtw_distance(a, b) - 1e-12
    assert dtw_distance(a, b, band=1.0) == pytest.approx(dtw_distance(a, b))


def test_dtw_ranks_a_time_warped_copy_nearest(tmp_path, rng):
    centers = unit(rng.standard_normal((4, 16)))
    base = bouts(rng, 300, 4, 30)
    warped = base[np.clip(np.round(np.linspace(0, 1, 360) ** 1.3 * 299).astype(int), 0, 299)]  # slower, uneven
    other = bouts(rng, 300, 4, 30)
    for name, s in (("a", base), ("b", warped), ("c", other)):
        write_embed(tmp_path / "g1", name, cluster_sequence(rng, centers, s, 0.05), fps=10)
    res = compare([tmp_path / "g1"], tmp_path / "out", CompareOptions(bin_s=0.5))
    d = dict(zip(res.names, res.distances))
    assert res.names == ["a", "b", "c"]
    assert d["a"][1] < d["a"][2] and d["b"][0] < d["b"][2]
    nearest = (tmp_path / "out" / "nearest.csv").read_text().splitlines()
    assert nearest[1].startswith("a,g1,b,g1,")
    assert (tmp_path / "out" / "dtw_distances.png").is_file() and (tmp_path / "out" / "dtw_mds.png").is_file()


def test_binning_averages_unit_frames_per_bin():
    x = np.array([[1.0, 0], [0, 1], [3, 0], [0, 2]])
    got = binned(x, np.array([0.0, 0.4, 1.0, 1.2]), 1.0)
    np.testing.assert_allclose(got, [[np.sqrt(0.5), np.sqrt(0.5)], [np.sqrt(0.5), np.sqrt(0.5)]])
    rng = np.random.default_rng(0)
    y, t = rng.standard_normal((500, 3)), np.sort(rng.uniform(0, 40, 500))
    np.testing.assert_allclose(binned(y, t, 1.0, block=7), binned(y, t, 1.0), atol=1e-6)  # chunked == one block


def test_groups_differ_by_permutation_test(tmp_path, rng):
    centers = unit(rng.standard_normal((4, 8)))
    for g, states_of in (("wt", (0, 1)), ("mut", (2, 3))):
        for v in range(3):
            s = np.array(states_of)[bouts(rng, 120, 2, 20)]
            write_embed(tmp_path / g, f"{g}{v}", cluster_sequence(rng, centers, s, 0.05), fps=10)
    res = compare([tmp_path / "wt", tmp_path / "mut"], tmp_path / "out", CompareOptions(bin_s=1.0, permutations=2000))
    assert res.test["mean_between"] > res.test["mean_within"]
    assert res.test["p_value"] < 0.2  # 3 + 3 videos: the smallest possible p is 1/10 for this statistic
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["group_test"]["p_value"] == res.test["p_value"]
    d = np.array([[0, 1, 5, 5], [1, 0, 5, 5], [5, 5, 0, 1], [5, 5, 1, 0]], float)
    t = group_test(d, np.array(["a", "a", "b", "b"]), 500)
    assert t["mean_within"] == 1 and t["mean_between"] == 5
