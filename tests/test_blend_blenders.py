"""blend.blenders and blend.selection on tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blend import (
    LabelledPoint,
    LinearBlender,
    LogisticBlender,
    PersonalizedBlender,
    RankFusionBlender,
    make_variants,
)
from blend.blenders import ranks_within_learner
from blend.selection import Variant, best_by_kind, compare, compare_draws, label_draws

pytestmark = pytest.mark.usefixtures("one_thread")


def _two_tastes(n_learners=300, n_cand=30, seed=0):
    """Half the learners engage with what feature `a` ranks high, half with `b`; a third
    feature is noise. Segments are the tastes."""
    rng = np.random.default_rng(seed)
    n = n_learners * n_cand
    learner = np.repeat(np.arange(n_learners), n_cand)
    taste = learner % 2
    a, b, noise = rng.normal(size=(3, n))
    utility = np.where(taste == 0, 2.0 * a, 2.0 * b) + 0.5 * rng.normal(size=n)
    # each learner engages with its 2 best candidates
    order = np.lexsort((-utility, learner))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(np.arange(n_learners) * n_cand, n_cand)
    y = (rank < 2).astype(np.int8)
    table = pd.DataFrame(
        {
            "learner_id": pd.array([f"u{i}" for i in learner], dtype="str"),
            "course_id": np.tile(np.arange(n_cand), n_learners),
            "a": a,
            "b": b,
            "noise": noise,
            "segment": pd.array(np.where(taste == 0, "A", "B"), dtype="str"),
        }
    )
    return table, y


def _mean_top1_hit(table, y, scores):
    t = table.assign(s=scores, y=y)
    best = t.loc[t.groupby("learner_id", sort=False)["s"].idxmax()]
    return float(best["y"].mean())


def test_logistic_blender_finds_the_informative_features():
    table, y = _two_tastes()
    b = LogisticBlender(["a", "b", "noise"], l2=1.0).fit(table, y)
    w = b.coefficients()
    assert w["a"] > 0.3 and w["b"] > 0.3 and abs(w["noise"]) < 0.15
    assert b.score(table).shape == (len(table),)


def test_personalized_blender_learns_each_learners_taste_and_beats_the_global_one():
    table, y = _two_tastes(seed=1)
    fresh, y_fresh = _two_tastes(seed=2)  # same learners and tastes, new candidates
    glob = LogisticBlender(["a", "b", "noise"], l2=1.0).fit(table, y)
    pers = PersonalizedBlender(["a", "b", "noise"], learner_l2=10.0, segment_l2=10.0).fit(table, y)
    hit_g = _mean_top1_hit(fresh, y_fresh, glob.score(fresh))
    hit_p = _mean_top1_hit(fresh, y_fresh, pers.score(fresh))
    assert hit_p > hit_g + 0.2, (hit_p, hit_g)
    # a learner it never saw gets the global + segment weights: still its segment's taste
    stranger = fresh.assign(
        learner_id=pd.array(["new" + s for s in fresh["learner_id"]], dtype="str")
    )
    assert not pers.known_learners(stranger["learner_id"]).any()
    hit_s = _mean_top1_hit(stranger, y_fresh, pers.score(stranger))
    assert hit_s > hit_g + 0.15, (hit_s, hit_g)


def test_personalized_blender_without_segments_still_personalizes():
    table, y = _two_tastes(seed=3)
    fresh, y_fresh = _two_tastes(seed=4)
    pers = PersonalizedBlender(["a", "b"], segment_column=None, learner_l2=3.0).fit(table, y)
    glob = LogisticBlender(["a", "b"]).fit(table, y)
    assert _mean_top1_hit(fresh, y_fresh, pers.score(fresh)) > _mean_top1_hit(
        fresh, y_fresh, glob.score(fresh)
    )


def test_linear_and_rank_fusion_blenders_compute_what_they_say():
    table, _ = _two_tastes(n_learners=4, n_cand=5)
    lin = LinearBlender({"a": 2.0, "b": -1.0}).fit(table)
    z = (table[["a", "b"]] - table[["a", "b"]].mean()) / table[["a", "b"]].std(ddof=0)
    np.testing.assert_allclose(lin.score(table), 2.0 * z["a"] - z["b"])
    rrf = RankFusionBlender(["a", "b"], k=10.0).fit(table)
    ra, rb = ranks_within_learner(table, "a"), ranks_within_learner(table, "b")
    np.testing.assert_allclose(rrf.score(table), 1 / (10 + ra) + 1 / (10 + rb))
    first = table.iloc[:5]["a"].to_numpy()
    assert ra[:5].tolist() == (np.argsort(np.argsort(-first)) + 1).tolist()


def test_blenders_name_bad_features_and_labels():
    table, y = _two_tastes(n_learners=10, n_cand=5)
    bad = table.copy()
    bad.loc[[3, 7], "a"] = np.nan
    with pytest.raises(ValueError, match=r"feature 'a': 2 of 50 candidates are NaN"):
        LogisticBlender(["a", "b"]).fit(bad, y)
    with pytest.raises(KeyError, match=r"\['zz'\] are not columns"):
        LogisticBlender(["a", "zz"]).fit(table, y)
    with pytest.raises(ValueError, match="labels: expected shape"):
        LogisticBlender(["a"]).fit(table, y[:-1])
    with pytest.raises(ValueError, match="need positives and negatives"):
        LogisticBlender(["a"]).fit(table, np.zeros(len(table)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticBlender(["a"]).score(table)


class _Log:
    """The two attributes of an EventLog that LabelledPoint's judging reads."""

    def __init__(self, table):
        from watchlog.idmap import IdMap

        self.learner_ids = IdMap(table["learner_id"].unique(), "learner_id")
        self.course_ids = IdMap(np.unique(table["course_id"]), "course_id")


def _labelled_point(table, labels, log) -> LabelledPoint:
    """The candidates `table` labelled by `labels` (1 = watched), a truth matrix over `log`."""
    import scipy.sparse as sp

    li = log.learner_ids.to_index(table["learner_id"])
    ci = log.course_ids.to_index(table["course_id"])
    truth = sp.csr_matrix(
        (labels.astype(float), (li, ci)), shape=(len(log.learner_ids), len(log.course_ids))
    )
    truth.eliminate_zeros()
    return LabelledPoint.from_table(table, log, truth)


def test_compare_fits_on_one_window_and_keeps_the_best_on_the_other():

    table, y = _two_tastes(seed=5)
    fresh, y_fresh = _two_tastes(seed=6)
    log = _Log(table)

    fit, judge = _labelled_point(table, y, log), _labelled_point(fresh, y_fresh, log)
    assert fit.fit_rows()[1]["learners_with_labels"] == 300
    variants = make_variants(
        context=["b", "noise"], normalizations=(), kinds=("rrf",), rrf_columns=["a", "b"]
    )
    from blend.selection import Variant

    variants += [
        Variant("logistic", "global", LogisticBlender(["a", "b", "noise"])),
        Variant("personalized", "l2=10", PersonalizedBlender(["a", "b", "noise"], learner_l2=10.0)),
        Variant("personalized", "l2=1e6", PersonalizedBlender(["a", "b", "noise"], learner_l2=1e6, segment_l2=1e6)),
    ]  # fmt: skip
    results = compare(variants, fit, judge)
    ndcg = [r.valid["ndcg@10"] for r in results]
    assert ndcg == sorted(ndcg, reverse=True)
    best = best_by_kind(results)
    assert best["personalized"].variant.name == "l2=10"
    assert results[0].variant.kind == "personalized"


def test_split_labels_divides_the_labelled_pairs_between_fit_and_judge():

    table, y = _two_tastes(n_learners=200, n_cand=10, seed=7)
    log = _Log(table)
    point = _labelled_point(table, y, log)
    truth = point.truth
    fit, judge = point.split_labels(0.25, seed=1)
    assert fit.truth.multiply(judge.truth).nnz == 0
    assert fit.truth.nnz + judge.truth.nnz == truth.nnz
    assert abs(judge.truth.nnz / truth.nnz - 0.25) < 0.06
    np.testing.assert_array_equal(fit.labels + judge.labels, point.labels)
    with pytest.raises(ValueError, match="fraction"):
        point.split_labels(1.0)


def _top2_labels(table: pd.DataFrame, column: str) -> np.ndarray:
    """1 on each learner's two candidates highest on `column`."""
    rank = table.groupby("learner_id", sort=False)[column].rank(ascending=False, method="first")
    return (rank <= 2).to_numpy(np.int8)


def test_compare_draws_chooses_on_the_mean_over_draws_not_on_the_first():
    """Two fixed-weight variants, `a` alone and `b` alone. The first draw's judging labels
    follow `a`, the two others' follow `b`: the first draw alone chooses `a`, the mean over
    the three `b`; each draw's figures are kept, `valid` is their mean, and one draw is
    `compare` itself."""
    table, _ = _two_tastes(n_learners=120, n_cand=20, seed=8)
    log = _Log(table)
    by_a, by_b = (_labelled_point(table, _top2_labels(table, c), log) for c in ("a", "b"))
    variants = [Variant("fixed", "a", LinearBlender({"a": 1.0})),
                Variant("fixed", "b", LinearBlender({"b": 1.0}))]  # fmt: skip
    draws = [(by_a, by_a), (by_a, by_b), (by_a, by_b)]

    first = compare(variants, *draws[0])
    assert first[0].variant.name == "a"
    one = compare_draws(variants, draws[:1])
    assert [(r.variant.name, r.valid) for r in one] == [(r.variant.name, r.valid) for r in first]

    results = compare_draws(variants, draws)
    assert [r.variant.name for r in results] == ["b", "a"]
    assert best_by_kind(results)["fixed"].variant.name == "b"
    for r in results:
        each = [next(x.valid for x in compare(variants, f, j) if x.variant.name == r.variant.name)
                for f, j in draws]  # fmt: skip
        assert r.draws == each
        for key in r.valid:
            assert r.valid[key] == pytest.approx(np.mean([d[key] for d in each]))
    with pytest.raises(ValueError, match="at least one"):
        compare_draws(variants, [])


def test_label_draws_first_is_one_split_and_the_others_differ():
    table, y = _two_tastes(n_learners=200, n_cand=10, seed=7)
    point = _labelled_point(table, y, _Log(table))
    draws = label_draws(point, 0.5, 3, seed=4)
    assert len(draws) == 3
    fit0, judge0 = point.split_labels(0.5, seed=4)
    np.testing.assert_array_equal(draws[0][1].labels, judge0.labels)
    np.testing.assert_array_equal(draws[0][0].labels, fit0.labels)
    judged = [j.labels for _, j in draws]
    assert not np.array_equal(judged[0], judged[1]) and not np.array_equal(judged[1], judged[2])
    for fit, judge in draws:  # every draw divides the same labels
        np.testing.assert_array_equal(fit.labels + judge.labels, point.labels)
    for fit, judge in draws:  # one copy of the table's judging keys, shared by every part
        assert fit._judge_keys is point._judge_keys and judge._judge_keys is point._judge_keys
    again = label_draws(point, 0.5, 3, seed=4)  # the same seed, the same draws
    np.testing.assert_array_equal(again[2][1].labels, judged[2])
    with pytest.raises(ValueError, match="at least 1"):
        label_draws(point, 0.5, 0, seed=4)


def test_points_with_more_draws_need_the_window_to_refit_on_and_choice_reports_the_spread():
    from blend.study import choose_blenders
    from blend.workflow import Points

    table, _ = _two_tastes(n_learners=60, n_cand=10, seed=9)
    log = _Log(table)
    by_a, by_b = (_labelled_point(table, _top2_labels(table, c), log) for c in ("a", "b"))
    with pytest.raises(ValueError, match="refit_on"):
        Points(by_a, by_a, by_a, more_draws=[(by_a, by_b)])
    points = Points(by_a, by_a, by_a, refit_on=by_a, more_draws=[(by_a, by_b)])
    assert points.draws == [(by_a, by_a), (by_a, by_b)]
    variants = [Variant("fixed", "a", LinearBlender({"a": 1.0}))]
    choice = choose_blenders(variants, points.draws)
    assert choice.n_draws == 2
    (row,) = choice.table()
    assert row["draws"] == 2
    figures = [d["ndcg@10"] for d in choice.results[0].draws]
    assert row["ndcg@10_sd"] == pytest.approx(np.std(figures, ddof=1)) and row["ndcg@10_sd"] > 0
    single = choose_blenders(variants, points.draws[:1]).table()[0]
    assert "draws" not in single and "ndcg@10_sd" not in single


def test_choice_margin_is_the_paired_lead_over_the_best_other_kind_on_each_draw():
    """`fixed` (weights on `a`) against `logistic` (a fixed-weight blend on `b`, given the
    kind logistic here): the first draw judges by `a`, the two others by `b`."""
    from blend.study import choose_blenders

    table, _ = _two_tastes(n_learners=120, n_cand=20, seed=8)
    log = _Log(table)
    by_a, by_b = (_labelled_point(table, _top2_labels(table, c), log) for c in ("a", "b"))
    variants = [Variant("fixed", "a", LinearBlender({"a": 1.0})),
                Variant("logistic", "b", LinearBlender({"b": 1.0})),
                Variant("logistic", "noise", LinearBlender({"noise": 1.0}))]  # fmt: skip
    choice = choose_blenders(variants, [(by_a, by_a), (by_a, by_b), (by_a, by_b)])
    a, b = choice.best["fixed"], choice.best["logistic"]
    assert b.variant.name == "b"
    diff = [x["ndcg@10"] - y["ndcg@10"] for x, y in zip(a.draws, b.draws, strict=True)]
    m = choice.margin("fixed")
    assert m["runner_up"] == "logistic" and m["runner_up_variant"] == "b"
    assert m["ndcg@10_diff"] == pytest.approx(np.mean(diff)) and m["ndcg@10_diff"] < 0
    assert m["ndcg@10_diff_sd"] == pytest.approx(np.std(diff, ddof=1))
    assert (m["draws"], m["draws_ahead"]) == (3, 1)  # ahead where `a` judges only
    assert choice.margin("logistic")["draws_ahead"] == 2
    assert choice.margin("rank") is None  # a kind not tried
    alone = choose_blenders(variants[:1], [(by_a, by_a)])
    assert alone.margin("fixed") is None  # no other kind


def test_metric_curves_match_the_judged_figures_and_reach_full_recall():

    from blend.study import metric_curves

    table, y = _two_tastes(n_learners=100, n_cand=30, seed=3)
    log = _Log(table)
    point = _labelled_point(table, y, log)
    scores = {"a": table["a"].to_numpy(), "noise": table["noise"].to_numpy()}
    curves = metric_curves(point, scores, ks=range(1, 31))
    assert list(curves.columns) == ["system", "k", "ndcg", "recall", "learners"]
    assert len(curves) == 2 * 30
    for name, s in scores.items():
        c = curves[curves["system"] == name].set_index("k")
        at10 = point.judge(s, k=10).summary()
        assert c.loc[10, "ndcg"] == pytest.approx(at10["ndcg@10"])
        assert c.loc[10, "recall"] == pytest.approx(at10["recall@10"])
        assert (np.diff(c["recall"].to_numpy()) >= 0).all()
        assert c.loc[30, "recall"] == pytest.approx(1.0)  # every candidate listed
    a, noise = (curves[curves["system"] == n].set_index("k") for n in ("a", "noise"))
    assert a.loc[5, "ndcg"] > noise.loc[5, "ndcg"]  # `a` is half the learners' taste


def test_judge_equals_list_metrics_of_the_top_k_table_ties_included():
    """LabelledPoint.judge ranks with keys it computed once (learner groups, course order,
    the ids mapped to indices): the same metrics as top_k's table through list_metrics,
    with many tied scores too (ties go to the lower course id)."""

    from blend.evaluate import list_metrics
    from blend.lists import top_k

    table, y = _two_tastes(n_learners=120, n_cand=30, seed=5)
    log = _Log(table)
    point = _labelled_point(table, y, log)
    truth = point.truth
    rng = np.random.default_rng(0)
    for scores in (table["a"].to_numpy(), rng.integers(0, 3, len(table)).astype(float)):
        for ks in ((10,), (1, 5, 30)):
            want = list_metrics(
                top_k(table.assign(_s=scores), "_s", max(ks)), log, truth, ks=ks
            ).summary()
            assert point.judge(scores, ks=ks).summary() == want
    with pytest.raises(ValueError, match="one per candidate"):
        point.judge(np.zeros(len(table) - 1))


def test_rank_fusion_gives_tied_rows_their_mean_rank_whatever_the_row_order():
    table = pd.DataFrame(
        {
            "learner_id": ["u"] * 4 + ["v"] * 2,
            "course_id": ["x", "y", "z", "w", "x", "y"],
            "a": [0.5, 0.5, 0.9, -0.0, 0.0, 0.0],  # u: x and y tie; v: -0.0 and 0.0 tie
            "b": [1.0, 1.0, 0.0, 2.0, 3.0, 1.0],
        }
    )
    np.testing.assert_array_equal(ranks_within_learner(table, "a"), [2.5, 2.5, 1, 4, 1.5, 1.5])
    rrf = RankFusionBlender(["a", "b"], k=10.0).fit(table)
    swapped = table.iloc[[1, 0, 2, 3, 5, 4]].reset_index(drop=True)

    def by_pair(t: pd.DataFrame, s: np.ndarray) -> dict:
        return dict(zip(zip(t["learner_id"], t["course_id"], strict=True), s, strict=True))

    assert by_pair(table, rrf.score(table)) == by_pair(swapped, rrf.score(swapped))
    s = rrf.score(table)
    assert s[0] == s[1]  # x and y tie on both columns
