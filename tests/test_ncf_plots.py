"""ncf.plots: files written, the numbers behind each figure, subsampling, training curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from ncf.plots import embedding_map, neighbour_figure, project_2d, training_curves
from ncf.retrieval import similar_by_cosine

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# What Lightning 2.6's CSVLogger writes for a step-logged loss (on_step + on_epoch) and two
# validation metrics logged at epoch end: one row per logging call, NaN elsewhere.
METRICS_CSV = """epoch,step,train_loss_epoch,train_loss_step,val_ndcg@10,val_recall@10
0,1,,0.1355,,
0,3,,0.0464,,
0,3,,,0.138,0.297
0,3,0.0799,,,
1,5,,0.0036,,
1,7,,0.0011,,
1,7,,,0.552,0.338
1,7,0.0017,,,
"""


@pytest.fixture
def courses():
    rng = np.random.default_rng(0)
    n = 300
    lang = rng.choice(["en", "de", "fr"], n, p=[0.6, 0.3, 0.1])
    codes = pd.factorize(lang)[0]
    emb = (rng.normal(size=(n, 16)) + rng.normal(size=(3, 16))[codes] * 2).astype(np.float32)
    category = pd.Series([f"c{i}" for i in rng.integers(0, 20, n)], dtype=object)  # > 12 values
    category[[5, 6]] = None
    return {
        "emb": emb,
        "language": lang,
        "category": category,
        "popularity": rng.lognormal(size=n),  # continuous
        "ids": np.arange(n) + 1000,
        "titles": [f"Course {i}" for i in range(n)],
    }


def no_temp_files(path):
    return not [p for p in path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_embedding_map_writes_pngs_and_the_numbers(courses, tmp_path):
    colour_by = {k: courses[k] for k in ("language", "category", "popularity")}
    m = embedding_map(
        courses["emb"], colour_by, tmp_path, "courses", method="pca", ids=courses["ids"]
    )
    assert set(m.files) == {"png:language", "png:category", "png:popularity", "parquet"}
    for key, path in m.files.items():
        assert path.parent == tmp_path and path.stat().st_size > 0
        if key.startswith("png"):
            assert path.read_bytes()[:8] == PNG_MAGIC
    assert m.files["png:language"].name == "courses_pca_language.png"
    back = pd.read_parquet(m.files["parquet"])
    assert list(back.columns) == ["row", "id", "x", "y", "language", "category", "popularity"]
    np.testing.assert_array_equal(back["row"], np.arange(300))
    np.testing.assert_array_equal(back["id"], courses["ids"])
    assert back["category"].isna().sum() == 2 and back["popularity"].dtype == np.float64
    ref = PCA(n_components=2, random_state=0).fit_transform(courses["emb"])
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), ref, atol=1e-4)
    assert no_temp_files(tmp_path)


def test_subsampling_is_seeded_and_reported(courses, tmp_path):
    a = embedding_map(
        courses["emb"],
        {"language": courses["language"]},
        tmp_path / "a",
        "c",
        method="pca",
        max_points=120,
        seed=3,
    )
    b = embedding_map(
        courses["emb"],
        {"language": courses["language"]},
        tmp_path / "b",
        "c",
        method="pca",
        max_points=120,
        seed=3,
    )
    assert len(a.coords) == 120 and a.coords["row"].is_unique
    pd.testing.assert_frame_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.coords["language"], courses["language"][a.coords["row"]])


def test_learners_by_segment_is_the_same_call(tmp_path):
    rng = np.random.default_rng(1)
    seg = rng.choice(["student", "engineer", None], 80)
    m = embedding_map(
        rng.normal(size=(80, 8)), {"segment": seg}, tmp_path, "learners", method="pca"
    )
    n_missing = int(pd.isna(seg).sum())
    assert m.files["png:segment"].exists() and m.coords["segment"].isna().sum() == n_missing > 0


def test_neighbour_figure_lists_the_nearest_by_cosine(courses, tmp_path):
    emb = courses["emb"]
    f = neighbour_figure(emb, 7, courses["titles"], courses["ids"], tmp_path, n=50, method="pca")
    t = f.table
    assert len(t) == 51 and t["rank"].tolist() == list(range(51))
    assert t["row"].iloc[0] == 7 and t["cosine"].iloc[0] == 1.0 and t["title"].iloc[0] == "Course 7"
    idx, cos = similar_by_cosine(emb, [7], 50)
    np.testing.assert_array_equal(t["row"].iloc[1:], idx[0])
    np.testing.assert_allclose(t["cosine"].iloc[1:], cos[0], rtol=1e-6)
    assert (np.diff(t["cosine"].iloc[1:]) <= 0).all()
    assert {p.name for p in f.files.values()} == {
        "neighbours_1007.png",
        "neighbours_1007.csv",
        "neighbours_1007.parquet",
    }
    pd.testing.assert_frame_equal(
        pd.read_csv(f.files["csv"])[["rank", "row", "id"]], t[["rank", "row", "id"]]
    )
    assert f.files["png"].read_bytes()[:8] == PNG_MAGIC


def test_neighbour_figure_reuses_a_map_and_keeps_the_neighbours_when_subsampling(courses, tmp_path):
    emb = courses["emb"]
    m = embedding_map(emb, {"language": courses["language"]}, tmp_path, "c", method="pca")
    f = neighbour_figure(emb, 3, courses["titles"], courses["ids"], tmp_path, n=10, coords=m.coords)
    xy = m.coords.set_index("row").loc[f.table["row"], ["x", "y"]].to_numpy()
    np.testing.assert_allclose(f.table[["x", "y"]].to_numpy(), xy)
    # a subsampled projection always includes the chosen item and its neighbours
    g = neighbour_figure(
        emb, 3, courses["titles"], courses["ids"], tmp_path, n=10, method="pca", max_points=40
    )
    assert np.isfinite(g.table[["x", "y"]].to_numpy()).all()
    sub = embedding_map(
        emb, {"language": courses["language"]}, tmp_path, "s", method="pca", max_points=40
    )
    with pytest.raises(ValueError, match="coords: no coordinates for"):
        neighbour_figure(
            emb, 3, courses["titles"], courses["ids"], tmp_path, n=10, coords=sub.coords
        )
    with pytest.raises(ValueError, match=r"item_index: must be in \[0, 300\)"):
        neighbour_figure(emb, 300, courses["titles"], courses["ids"], tmp_path)


def test_training_curves_handle_nan_interleaved_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(METRICS_CSV)
    c = training_curves(csv, tmp_path / "out")
    counts = c.tidy.groupby("metric").size().to_dict()
    assert counts == {
        "train_loss_epoch": 2,
        "train_loss_step": 4,
        "val_ndcg@10": 2,
        "val_recall@10": 2,
    }
    assert not c.tidy["value"].isna().any()
    ndcg = c.tidy[c.tidy["metric"] == "val_ndcg@10"]
    assert ndcg[["epoch", "step", "value"]].values.tolist() == [[0, 3, 0.138], [1, 7, 0.552]]
    pd.testing.assert_frame_equal(pd.read_csv(c.files["csv"]), c.tidy, check_dtype=False)
    assert c.files["png"].read_bytes()[:8] == PNG_MAGIC
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="expected a 'step' column"):
        training_curves(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="metrics_csv: no such file"):
        training_curves(tmp_path / "nope.csv", tmp_path)


def test_bad_input(courses, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"colour_by\['language'\]: expected one label per row of emb \(300\); got 299",
    ):
        embedding_map(
            courses["emb"], {"language": courses["language"][:-1]}, tmp_path, "c", method="pca"
        )
    with pytest.raises(ValueError, match="method: must be one of"):
        project_2d(courses["emb"], "tsne")
    bad = courses["emb"].copy()
    bad[9, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"emb: must be finite; 1 row\(s\) hold NaN/inf \(e.g. rows 9\)"
    ):
        project_2d(bad, "pca")


@pytest.mark.slow
def test_umap_is_reproducible_with_a_seed_and_keeps_clusters(courses):
    emb, lang = courses["emb"], courses["language"]
    a = project_2d(emb, "umap", seed=0)
    b = project_2d(emb, "umap", seed=0)
    np.testing.assert_array_equal(a, b)
    # the three language clusters stay apart in 2-D: 2-D neighbours share the language
    from evaluation import knn_label_agreement

    assert knn_label_agreement(a, lang, k=5, metric="euclidean")["agreement"] > 0.95


def test_file_names_are_safe_and_ids_of_any_kind_are_kept(courses, tmp_path):
    emb = courses["emb"]
    ids = pd.Series([f"c.{i}" for i in range(300)], dtype=object)
    ids[3] = 17  # mixed types: stored as strings
    f = neighbour_figure(emb, 5, courses["titles"], ids, tmp_path, n=3, method="pca", name="nb/x")
    assert {p.name for p in f.files.values()} == {
        "nb_x_c.5.png",
        "nb_x_c.5.csv",
        "nb_x_c.5.parquet",
    }
    m = embedding_map(
        emb, {"lang/uage": courses["language"]}, tmp_path, "a b", method="pca", ids=ids
    )
    assert m.files["png:lang/uage"].name == "a_b_pca_lang_uage.png"
    assert pd.read_parquet(m.files["parquet"])["id"].iloc[3] == "17"
    with pytest.raises(ValueError, match="clash with the coordinate columns"):
        embedding_map(emb, {"x": courses["language"]}, tmp_path, "c", method="pca")
