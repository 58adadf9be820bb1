"""Feature encoding for GLMix: encoder, crosses, design matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.preprocessing import StandardScaler

from watchlog.design import design_matrices, face_split
from watchlog.features import FeatureBlock, FeatureEncoder
from watchlog.report import DataReport


def dense(m) -> np.ndarray:
    return np.asarray(m.toarray())


@pytest.fixture
def courses() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "category": ["Data", "Web", "Data", None, "Design", "Data"],
            "skills": ["Python|SQL", "JS", "", "Python | Python", None, "SQL|Rust"],
            "duration_seconds": [600.0, 1200.0, np.nan, 300.0, 900.0, 600.0],
        }
    )


def test_one_hot_and_multi_hot_by_hand(courses):
    enc = FeatureEncoder(categorical=["category"], multi_hot=["skills"]).fit(courses)
    assert enc.feature_names_ == (
        "category=Data",
        "category=Design",
        "category=Web",
        "skills=JS",
        "skills=Python",
        "skills=Rust",
        "skills=SQL",
    )
    x = enc.transform(courses)
    assert x.format == "csr" and x.dtype == np.float32 and x.shape == (6, 7)
    expected = np.array(
        [
            [1, 0, 0, 0, 1, 0, 1],
            [0, 0, 1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0],  # empty skills: missing
            [0, 0, 0, 0, 1, 0, 0],  # missing category; "Python | Python" -> one Python
            [0, 1, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(dense(x), expected)
    assert enc.feature_groups_ == {"category": (0, 3), "skills": (3, 7)}
    assert enc.fit_counts_["category"]["missing"] == 1
    assert enc.fit_counts_["skills"]["missing"] == 2
    assert x.has_canonical_format


def test_blank_is_missing_not_a_category(courses):
    table = courses.assign(category=["Data", " ", "", None, "Web", "Data"])
    enc = FeatureEncoder(categorical=["category"], missing_indicator=True).fit(table)
    assert enc.feature_names_ == ("category=Data", "category=Web", "category=<missing>")
    assert enc.fit_counts_["category"]["missing"] == 3
    assert enc.fit_counts_["category"]["rare_categories"] == 0
    np.testing.assert_array_equal(dense(enc.transform(table))[:, 2], [0, 1, 1, 1, 0, 0])


def test_pandas_categorical_and_string_dtypes_agree(courses):
    as_cat = courses.assign(category=courses["category"].astype("category"))
    enc = FeatureEncoder(categorical=["category"]).fit(courses)
    np.testing.assert_array_equal(dense(enc.transform(as_cat)), dense(enc.transform(courses)))


def test_unseen_and_missing_are_counted(courses):
    enc = FeatureEncoder(categorical=["category"], multi_hot=["skills"]).fit(courses)
    new = pd.DataFrame(
        {"category": ["Data", "Cooking", None, "Cooking"], "skills": ["Go|SQL", None, "Go", "Go"]}
    )
    report = DataReport()
    x = enc.transform(new, report=report)
    # unseen -> all zeros for that column (no <other> without min_frequency)
    np.testing.assert_array_equal(dense(x)[1], 0)
    np.testing.assert_array_equal(dense(x)[0], [1, 0, 0, 0, 0, 0, 1])
    c = enc.transform_counts_
    assert c["category"] == {
        "rows": 4,
        "missing": 1,
        "values": 3,
        "rare": 0,
        "unseen": 2,
        "distinct_unseen": 1,
        "unseen_examples": ["Cooking"],
    }
    assert c["skills"]["unseen"] == 3 and c["skills"]["missing"] == 1
    assert c["skills"]["values"] == 4 and c["skills"]["distinct_unseen"] == 1  # (row, token)
    step = report.steps[-1]
    assert step["category.unseen"] == 2 and step["skills.missing"] == 1


def test_min_frequency_groups_rare_and_unseen_into_other(courses):
    enc = FeatureEncoder(
        categorical=["category"], multi_hot=["skills"], min_frequency=2, missing_indicator=True
    ).fit(courses)
    assert enc.feature_names_ == (
        "category=Data",
        "category=<other>",
        "category=<missing>",
        "skills=Python",
        "skills=SQL",
        "skills=<other>",
        "skills=<missing>",
    )
    assert enc.fit_counts_["category"]["rare_categories"] == 2  # Design, Web
    assert enc.fit_counts_["skills"]["rare_rows"] == 2  # JS, Rust
    new = pd.DataFrame({"category": ["Web", "Cooking", None], "skills": ["JS|Go|SQL", "", "Rust"]})
    x = dense(enc.transform(new))
    np.testing.assert_array_equal(
        x,
        [
            [0, 1, 0, 0, 1, 1, 0],  # rare Web -> other; JS and Go -> ONE <other>
            [0, 1, 0, 0, 0, 0, 1],  # unseen Cooking -> other; empty skills -> missing
            [0, 0, 1, 0, 0, 1, 0],
        ],
    )
    c = enc.transform_counts_
    assert (c["category"]["rare"], c["category"]["unseen"], c["category"]["missing"]) == (1, 1, 1)
    assert (c["skills"]["rare"], c["skills"]["unseen"]) == (2, 1)
    # a share of rows: 0.3 * 6 rows -> at least 2 rows, same grouping
    enc_share = FeatureEncoder(categorical=["category"], min_frequency=0.3).fit(courses)
    assert enc_share.feature_names_ == ("category=Data", "category=<other>")


def test_standardization_matches_standard_scaler():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"a": rng.normal(5, 3, 200), "b": rng.exponential(100, 200), "c": np.full(200, 7.0)}
    )
    enc = FeatureEncoder(numeric=["a", "b", "c"]).fit(table)
    ref = StandardScaler().fit(table.to_numpy())
    test = table.iloc[:50] * 1.5
    np.testing.assert_allclose(
        dense(enc.transform(test)), ref.transform(test.to_numpy()), rtol=1e-5, atol=1e-5
    )
    assert enc.feature_names_ == ("a", "b", "c")


def test_numeric_missing_and_indicator(courses):
    enc = FeatureEncoder(numeric=["duration_seconds"], missing_indicator=True).fit(courses)
    present = courses["duration_seconds"].dropna()
    mean, std = present.mean(), present.std(ddof=0)
    x = dense(enc.transform(courses))
    assert enc.feature_names_ == ("duration_seconds", "duration_seconds=<missing>")
    np.testing.assert_allclose(x[0, 0], (600 - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(x[2], [0, 1])  # missing -> 0, indicator 1
    np.testing.assert_array_equal(x[:, 1], [0, 0, 1, 0, 0, 0])
    assert enc.fit_counts_["duration_seconds"]["missing"] == 1


def test_datetime_numeric_and_intercept():
    t = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-03", None], utc=True))
    enc = FeatureEncoder(numeric=["t"], intercept=True).fit(pd.DataFrame({"t": t}))
    x = dense(enc.transform(pd.DataFrame({"t": t})))
    assert enc.feature_names_ == ("intercept", "t")
    np.testing.assert_array_equal(x[:, 0], 1)
    np.testing.assert_allclose(x[:, 1], [-1, 1, 0], atol=1e-6)  # days 0 and 2: mean 1, std 1


def test_bad_input(courses):
    with pytest.raises(KeyError, match=r"1 column\(s\) missing.*\['nope'\]"):
        FeatureEncoder(categorical=["nope"]).fit(courses)
    with pytest.raises(ValueError, match="given twice"):
        FeatureEncoder(categorical=["skills"], multi_hot=["skills"]).fit(courses)
    with pytest.raises(ValueError, match="min_frequency"):
        FeatureEncoder(categorical=["category"], min_frequency=1.5).fit(courses)
    with pytest.raises(ValueError, match="0 rows"):
        FeatureEncoder(categorical=["category"]).fit(courses.iloc[:0])
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureEncoder(categorical=["category"]).transform(courses)
    bad = courses.assign(duration_seconds=["1", "x", None, "3", "inf", "2"])
    with pytest.raises(ValueError, match=r"'duration_seconds'.*2 of 6 rows.*row 1: 'x'"):
        FeatureEncoder(numeric=["duration_seconds"]).fit(bad)


def test_json_round_trip_gives_identical_transforms(courses):
    enc = FeatureEncoder(
        categorical=["category"],
        multi_hot=["skills"],
        numeric=["duration_seconds"],
        min_frequency=2,
        missing_indicator=True,
        intercept=True,
    ).fit(courses)
    state = json.loads(json.dumps(enc.to_dict()))
    again = FeatureEncoder.from_dict(state)
    assert again.feature_names_ == enc.feature_names_
    assert again.get_params() == enc.get_params()
    new = courses.assign(category=["Web", "Cooking", None, "Data", "Data", "Design"])
    a, b = enc.transform(new), again.transform(new)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="expected type"):
        FeatureEncoder.from_dict({"type": "x"})


def test_face_split_against_row_kron():
    rng = np.random.default_rng(1)
    a = sp.random(40, 5, density=0.4, random_state=rng, format="csr", dtype=np.float32)
    b = sp.random(40, 7, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    a = a.tolil()
    a[3] = 0  # an empty row
    a = a.tocsr()
    out, names = face_split(a, b, [f"a{i}" for i in range(5)], [f"b{j}" for j in range(7)])
    assert out.shape == (40, 35) and out.dtype == np.float32 and out.format == "csr"
    ref = np.stack([np.kron(a[i].toarray()[0], b[i].toarray()[0]) for i in range(40)])
    np.testing.assert_allclose(dense(out), ref, rtol=1e-6)
    assert names[0] == "a0*b0" and names[8] == "a1*b1" and len(names) == 35
    assert out.has_canonical_format
    tmp = out.copy()
    tmp.sort_indices()
    np.testing.assert_array_equal(tmp.indices, out.indices)
    assert face_split(a, b)[1] is None
    with pytest.raises(ValueError, match=r"same rows, got a \(40, 5\) and b \(3, 7\)"):
        face_split(a, b[:3])


def test_face_split_leaves_the_callers_unsorted_matrix_as_it_was():
    # A float32 CSR with unsorted columns and a duplicate: to_csr32 shares its arrays, so
    # summing the duplicates in place would rewrite the caller's matrix.
    a = sp.csr_matrix(
        (np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([2, 0, 2, 1]), np.array([0, 3, 4])),
        shape=(2, 3),
    )
    b = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 5.0]], np.float32))
    before = (a.indptr.copy(), a.indices.copy(), a.data.copy())
    out, _ = face_split(a, b)
    np.testing.assert_array_equal(a.indptr, before[0])
    np.testing.assert_array_equal(a.indices, before[1])
    np.testing.assert_array_equal(a.data, before[2])
    ref = np.stack([np.kron(a[i].toarray()[0], b[i].toarray()[0]) for i in range(2)])
    np.testing.assert_array_equal(dense(out), ref)  # the duplicate summed: 1 + 3 at column 2


@pytest.fixture(scope="module")
def platform():
    from watchlog.synthetic import generate_platform

    return generate_platform(n_learners=500, n_courses=100, n_days=120, seed=1)


@pytest.fixture(scope="module")
def encoders(platform):
    log = platform.log
    learner_enc = FeatureEncoder(
        categorical=["segment", "industry", "seniority"], multi_hot=["languages", "skills"]
    ).fit(log.learners)
    course_enc = FeatureEncoder(
        categorical=["language", "category", "difficulty"],
        multi_hot=["skills"],
        numeric=["duration_seconds", "published_at"],
    ).fit(log.courses)
    return learner_enc, course_enc


def test_design_matrices_on_the_synthetic_platform(platform, encoders):
    log = platform.log
    learner_enc, course_enc = encoders
    lb, cb = learner_enc.encode(log.learners), course_enc.encode(log.courses)
    ev = log.events
    li, ci = ev["learner_idx"].to_numpy(), ev["course_idx"].to_numpy()
    d = design_matrices(
        li,
        ci,
        lb,
        cb,
        crosses=[
            ("learner.languages", "course.language"),
            ("course.category", "course.difficulty"),
        ],
    )
    n = len(ev)
    p, q = lb.shape[1], cb.shape[1]
    n_lang, n_clang = 6, 6
    g = d["global"]
    groups = course_enc.feature_groups_
    n_cat = groups["category"][1] - groups["category"][0]
    n_dif = groups["difficulty"][1] - groups["difficulty"][0]
    assert g.shape == (n, 1 + p + q + n_lang * n_clang + n_cat * n_dif)
    assert d["per_learner"].shape == (n, 1 + q)
    assert d["per_course"].shape == (n, 1 + p)
    for block in d.values():
        assert block.matrix.dtype == np.float32 and block.matrix.format == "csr"
        assert len(set(block.names)) == len(block.names)
    # row contents: per_learner row r = [1 | course features of course ci[r]]
    rows = np.array([0, 7, n // 2, n - 1])
    np.testing.assert_array_equal(
        dense(d["per_learner"].matrix[rows])[:, 1:], dense(cb.matrix[ci[rows]])
    )
    np.testing.assert_array_equal(
        dense(d["per_course"].matrix[rows])[:, 1:], dense(lb.matrix[li[rows]])
    )
    lo, hi = g.groups["learner"]
    np.testing.assert_array_equal(dense(g.matrix[rows, lo:hi]), dense(lb.matrix[li[rows]]))
    assert g.names[lo] == "learner." + learner_enc.feature_names_[0]
    lo, hi = g.groups["course"]
    np.testing.assert_array_equal(dense(g.matrix[rows, lo:hi]), dense(cb.matrix[ci[rows]]))
    # the language cross is 1 exactly where a learner's spoken languages include the course's
    # random (learner, course) pairs: events almost never leave the learner's languages
    rng = np.random.default_rng(0)
    li = rng.integers(0, log.n_learners, 3000)
    ci = rng.integers(0, log.n_courses, 3000)
    g = design_matrices(li, ci, lb, cb, crosses=[("learner.languages", "course.language")])[
        "global"
    ]
    lo, hi = g.groups["learner.languages*course.language"]
    cross = dense(g.matrix[:, lo:hi])
    names = g.names[lo:hi]
    pairs = [nm.split("*") for nm in names]
    match = [
        i
        for i, (a, b) in enumerate(pairs)
        if a.removeprefix("learner.languages=") == b.removeprefix("course.language=")
    ]
    assert len(match) == 6  # one (language, language) pair per language
    assert names[0].startswith("learner.languages=") and "*course.language=" in names[0]
    spoken = log.learners["languages"].to_numpy()[li]
    course_lang = log.courses["language"].astype(str).to_numpy()[ci]
    expect = np.array([cl in s.split("|") for s, cl in zip(spoken, course_lang, strict=True)])
    assert 0 < expect.mean() < 1
    np.testing.assert_array_equal(cross[:, match].sum(axis=1) == 1, expect)
    # within-table cross equals the per-row kron of the course's category and difficulty
    g, li, ci = d["global"], ev["learner_idx"].to_numpy(), ev["course_idx"].to_numpy()
    lo, hi = g.groups["course.category*course.difficulty"]
    cat, dif = cb.select("category").matrix, cb.select("difficulty").matrix
    for r in rows:
        c = ci[r]
        np.testing.assert_array_equal(
            dense(g.matrix[r, lo:hi])[0], np.kron(dense(cat[c])[0], dense(dif[c])[0])
        )


def test_design_matrices_generic_coordinates_and_errors(platform, encoders):
    log = platform.log
    learner_enc, course_enc = encoders
    lb, cb = learner_enc.encode(log.learners), course_enc.encode(log.courses)
    li = np.array([0, 1, 2, 499])
    ci = np.array([5, 5, 0, 99])
    d = design_matrices(
        li,
        ci,
        lb,
        cb,
        global_terms=("course.category",),
        coordinates={"per_segment": ("course", ("course.language", "course.difficulty"))},
        intercept=False,
    )
    assert set(d) == {"global", "per_segment"}
    assert d["global"].names[0].startswith("course.category=")
    assert d["per_segment"].shape[0] == 4
    # plain matrices work too (names x0, x1, ...)
    plain = design_matrices(li, ci, lb.matrix, cb.matrix)
    assert plain["per_course"].names[:2] == ("intercept", "learner.x0")
    with pytest.raises(IndexError, match=r"learner_idx: indices must be in \[0, 500\).*1 of 4"):
        design_matrices(np.array([0, 1, 2, 500]), ci, lb, cb)
    with pytest.raises(ValueError, match="same length"):
        design_matrices(li[:3], ci, lb, cb)
    with pytest.raises(ValueError, match="no group 'colour'"):
        design_matrices(li, ci, lb, cb, crosses=[("learner.industry", "course.colour")])
    with pytest.raises(ValueError, match="must start with one of"):
        design_matrices(li, ci, lb, cb, global_terms=("segment",))
    with pytest.raises(ValueError, match="duplicate feature name"):
        design_matrices(li, ci, lb, cb, global_terms=("course", "course"))
    with pytest.raises(TypeError, match="encode"):
        design_matrices(li, ci, learner_enc, cb)


def test_feature_block_checks():
    m = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="2 columns but 1 names"):
        FeatureBlock(m, ("a",))
    with pytest.raises(TypeError, match="float32"):
        FeatureBlock(m.astype(np.float64), ("a", "b"))
    assert FeatureBlock(m, ("a", "b"), {"g": (1, 2)}).select("g").names == ("b",)


def test_list_cells_in_a_text_column_name_the_column(courses):
    enc = FeatureEncoder(multi_hot=["skills"]).fit(courses)
    bad = courses.assign(skills=courses["skills"].str.split("|"))
    with pytest.raises(TypeError, match="multi_hot column 'skills' must hold text values"):
        enc.transform(bad)
