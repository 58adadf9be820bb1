"""evaluation.knn_label_agreement against brute force, and its chance level."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from evaluation import knn_label_agreement


def brute_force(emb, labels, k, metric):
    """Full distance matrix, argsort per row, self excluded."""
    dist = cdist(emb, emb, "cosine" if metric == "cosine" else "sqeuclidean")
    np.fill_diagonal(dist, np.inf)
    nbr = np.argsort(dist, axis=1, kind="stable")[:, :k]
    labels = np.asarray(labels)
    return float((labels[nbr] == labels[:, None]).mean())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [7, 2048])
def test_matches_brute_force(metric, chunk_size):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    emb = rng.normal(size=(120, 6)) + labels[:, None] * 0.8  # some structure
    res = knn_label_agreement(emb, labels, k=5, metric=metric, chunk_size=chunk_size)
    assert res["agreement"] == pytest.approx(brute_force(emb, labels, 5, metric), abs=1e-12)
    assert 0.3 < res["agreement"] <= 1 and res["n_items"] == 120 and res["n_missing"] == 0


def test_chance_and_agreement_on_a_hand_case():
    # labels a, a, a, b, b, c: n = 6; chance = (3*2 + 2*1 + 1*0) / (6*5) = 8/30.
    # k = 2 by cosine: each a's neighbours are the other two a's (1); each b has the other b
    # and then a[1] or a[2] (1/2); c has no partner (0): agreement = (3 + 1 + 0) / 6.
    labels = ["a", "a", "a", "b", "b", "c"]
    emb = [[1, 0], [1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [-1, -1]]
    res = knn_label_agreement(np.array(emb, dtype=np.float64), labels, k=2)
    assert res["chance"] == pytest.approx(8 / 30)
    assert res["agreement"] == pytest.approx(4 / 6)
    assert res["lift"] == pytest.approx((4 / 6) / (8 / 30))
    assert res["per_label"] == {
        "a": {"n": 3, "agreement": 1.0, "chance": pytest.approx(2 / 5)},
        "b": {"n": 2, "agreement": 0.5, "chance": pytest.approx(1 / 5)},
        "c": {"n": 1, "agreement": 0.0, "chance": 0.0},
    }
    assert res["n_labels"] == 3 and res["k"] == 2 and res["metric"] == "cosine"
    json.dumps(res)  # plain JSON types
    distinct = knn_label_agreement(np.array(emb), list("uvwxyz"), k=2)
    assert distinct["chance"] == 0.0 and distinct["agreement"] == 0.0
    assert np.isnan(distinct["lift"])  # 0 / 0


def test_perfect_clusters_and_random_embeddings_sit_at_one_and_at_chance():
    rng = np.random.default_rng(1)
    labels = rng.choice(["en", "de", "fr", "es"], size=3000, p=[0.55, 0.25, 0.15, 0.05])
    centres = rng.normal(size=(4, 16)) * 10
    codes = pd.factorize(labels)[0]
    clustered = centres[codes] + rng.normal(size=(3000, 16)) * 0.1
    assert knn_label_agreement(clustered, labels, k=10)["agreement"] == 1.0
    # random directions: agreement should be chance up to sampling noise (sd ~ 0.006 here)
    res = knn_label_agreement(rng.normal(size=(3000, 16)), labels, k=10)
    p = np.bincount(codes) / 3000
    assert res["chance"] == pytest.approx((p * (p * 3000 - 1) / 2999).sum())
    assert res["agreement"] == pytest.approx(res["chance"], abs=0.025)
    assert res["lift"] == pytest.approx(1.0, abs=0.07)


def test_missing_labels_are_excluded_and_counted():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(50, 4)).astype(np.float32)
    labels = list(rng.choice(["x", "y"], size=50))
    holes = [3, 10, 11, 40]
    for i, hole in enumerate(holes):
        labels[hole] = [None, np.nan, pd.NA, float("nan")][i]
    res = knn_label_agreement(emb, pd.Series(labels, dtype=object), k=3)
    keep = np.setdiff1d(np.arange(50), holes)
    ref = knn_label_agreement(emb[keep], [labels[i] for i in keep], k=3)
    assert res["n_missing"] == 4 and res["n_items"] == 46 and res["n_labels"] == 2
    assert res["agreement"] == ref["agreement"] and res["chance"] == ref["chance"]


def test_bad_input():
    emb = np.random.default_rng(3).normal(size=(10, 3))
    with pytest.raises(
        ValueError, match=r"labels: expected length n_items = 10 \(rows of emb\); got 9"
    ):
        knn_label_agreement(emb, list(range(9)))
    with pytest.raises(
        ValueError, match=r"k: needs at least k \+ 1 = 11 items with a label; got 10"
    ):
        knn_label_agreement(emb, list(range(10)), k=10)
    with pytest.raises(ValueError, match="metric: must be one of"):
        knn_label_agreement(emb, list(range(10)), k=2, metric="manhattan")
    bad = emb.copy()
    bad[4, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"emb: must be finite; 1 row\(s\) hold NaN/inf \(e.g. rows 4\)"
    ):
        knn_label_agreement(bad, list(range(10)), k=2)
