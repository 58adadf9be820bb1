"""export gates and the row contract: each bad input fails with the gate (or column), the
count and examples, and publishes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from export import (
    COLUMNS,
    EmptyInputError,
    GateConfig,
    GateError,
    ParquetSink,
    RowError,
    WatchedPairs,
    current_version,
    publish,
    rows_checksum,
)
from export.synthetic import SyntheticLists
from tests.export_fakes import PROVENANCE


def lists(**kw) -> SyntheticLists:
    return SyntheticLists(**{"n_learners": 60, "k": 5, "n_courses": 40, "chunk_learners": 25, **kw})


def run(rows, data: SyntheticLists, root, **kw):
    args = {
        "sink": ParquetSink(root),
        "gates": GateConfig(k=data.k),
        "learners": data.learner_ids,
        "catalogue": data.course_ids,
        "manifest": PROVENANCE,
        "chunk_learners": data.chunk_learners,
    }
    return publish(rows, **{**args, **kw})


def failed_gate(rows, data, root, name, **kw):
    """Run, expect GateError, check nothing was published, return the named gate's result."""
    with pytest.raises(GateError) as info:
        run(rows, data, root, **kw)
    assert not (root / "current").exists()
    assert [p.name for p in (root / "versions").iterdir()] == []  # staging removed
    failed = {r.name: r for r in info.value.failed}
    assert name in failed, str(info.value)
    assert name in str(info.value)
    return failed[name], info.value


def test_clean_lists_pass_every_gate_and_the_manifest_records_them(tmp_path):
    data = lists(watched_per_learner=3)
    result = run(data.chunks(), data, tmp_path / "out", watched=data.watched())
    gates = {r["name"]: r for r in result.manifest["gates"]["results"]}
    assert result.manifest["gates"]["passed"] is True
    assert all(g["passed"] for g in gates.values()), gates
    assert gates["not_watched"]["counts"]["watched_pairs_given"] == 60 * 3
    assert gates["complete_lists"]["counts"]["complete"] == 60
    assert 0 < gates["coverage"]["value"] <= 1
    counts = result.manifest["counts"]
    assert counts["rows"] == 300 and counts["learners"] == 60 and counts["chunks"] == 3
    assert sum(counts["rows_per_source"].values()) == 300
    assert set(counts["rows_per_source"]) <= {"blend", "popular_global"}
    assert counts["rows_per_model_version"] == {"synthetic-v1": 300}
    assert current_version(tmp_path / "out").name == result.version


def test_unknown_learner_fails_learners_known(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[frame.learner_id == 7, "learner_id"] = 10**9
    gate, err = failed_gate(frame, data, tmp_path / "out", "learners_known")
    assert gate.counts == {"unknown_learners": 1, "rows": 5}
    assert gate.examples == [10**9]
    # learner 7 has no list now: the completeness gate says so too
    complete = next(r for r in err.failed if r.name == "complete_lists")
    assert complete.counts["missing"] == 1 and complete.examples[0] == {"learner_id": 7, "rows": 0}


def test_course_missing_from_the_catalogue_fails_courses_known(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[[3, 11], "course_id"] = 999_999
    gate, _ = failed_gate(frame, data, tmp_path / "out", "courses_known")
    assert gate.counts == {"rows": 2, "unknown_courses": 1}
    assert gate.examples == [(0, 999_999), (2, 999_999)]


def test_nan_and_infinite_scores_fail_scores(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[2, "score"] = np.nan
    frame.loc[9, "score"] = -np.inf  # the last row of learner 1: nothing below it rises
    gate, _ = failed_gate(frame, data, tmp_path / "out", "scores")
    assert gate.counts["not_finite_rows"] == 2
    assert [e[:2] for e in gate.examples] == [(0, 3), (1, 5)]
    assert np.isnan(gate.examples[0][2]) and gate.examples[1][2] == -np.inf


def test_rising_scores_fail_scores(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[6, "score"] = 100.0  # learner 1, rank 2 above its rank 1
    gate, _ = failed_gate(frame, data, tmp_path / "out", "scores")
    assert gate.counts == {"not_finite_rows": 0, "increasing_rows": 1}


def test_a_repeated_course_fails_unique_pairs(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[1, "course_id"] = frame.loc[0, "course_id"]
    gate, _ = failed_gate(frame, data, tmp_path / "out", "unique_pairs")
    assert gate.counts == {"repeated_rows": 1}
    assert gate.examples == [(0, int(frame.loc[0, "course_id"]))]


@pytest.mark.parametrize("form", ["csr", "csr bool", "csr in other id maps", "pairs"])
def test_an_already_watched_course_fails_not_watched(tmp_path, form):
    data = lists()
    frame = data.frame()
    pairs = frame.loc[[0, 17], ["learner_id", "course_id"]].reset_index(drop=True)
    if form.startswith("csr"):
        learners = pd.Index(data.learner_ids)
        courses = pd.Index(data.course_ids)
        if form == "csr in other id maps":  # other order, an extra learner: remapped
            learners = pd.Index([10**9, *learners[::-1]])
            courses = courses[np.random.default_rng(0).permutation(len(courses))]
        dtype = bool if form == "csr bool" else np.float32  # bool: used without a copy
        matrix = np.zeros((len(learners), len(courses)), dtype=dtype)
        matrix[learners.get_indexer(pairs.learner_id), courses.get_indexer(pairs.course_id)] = 1
        import scipy.sparse as sp

        watched = WatchedPairs(sp.csr_matrix(matrix), learners, courses)
    else:
        watched = pd.concat([pairs, pd.DataFrame({"learner_id": [10**9], "course_id": [7]})])
    gate, _ = failed_gate(data.chunks(), data, tmp_path / "out", "not_watched", watched=watched)
    assert gate.counts["watched_rows"] == 2
    assert gate.examples == list(pairs.itertuples(index=False, name=None))


def test_ranks_must_run_one_to_k_in_row_order(tmp_path):
    data = lists()
    frame = data.frame()
    frame.loc[[0, 1], "rank"] = np.array([2, 1], dtype=np.int32)  # swapped
    frame.loc[9, "rank"] = 7  # a gap, beyond K
    gate, _ = failed_gate(frame, data, tmp_path / "out", "ranks")
    assert gate.counts == {"rows": 4}  # rows 0, 1, 2 (follows 1) and 9
    assert gate.examples[0] == (0, 2, int(frame.loc[0, "course_id"]))


def test_short_and_missing_lists_fail_complete_lists_unless_not_eligible(tmp_path):
    data = lists()
    frame = data.frame()
    frame = frame[(frame.learner_id != 3) & ~((frame.learner_id == 8) & (frame["rank"] == 5))]
    gate, _ = failed_gate(frame, data, tmp_path / "out", "complete_lists")
    assert gate.counts["missing"] == 1 and gate.counts["short"] == 1
    assert gate.examples == [{"learner_id": 3, "rows": 0}, {"learner_id": 8, "rows": 4}]
    # the same lists pass when learners 3 and 8 are not eligible; 8's short list is counted
    eligible = [i for i in data.learner_ids if i not in (3, 8)]
    result = run(frame, data, tmp_path / "ok", eligible_learners=eligible)
    gate = next(r for r in result.manifest["gates"]["results"] if r["name"] == "complete_lists")
    assert gate["passed"] and gate["counts"]["not_eligible_with_rows"] == 1


def test_low_coverage_and_high_fallback_share_fail_on_their_thresholds(tmp_path):
    data = lists(n_courses=400, fallback_share=0.5)
    gates = GateConfig(k=5, min_coverage=0.9, max_fallback_share=0.1)
    with pytest.raises(GateError) as info:
        run(data.chunks(), data, tmp_path / "out", gates=gates)
    failed = {r.name: r for r in info.value.failed}
    assert set(failed) == {"coverage", "fallback_share"}
    assert failed["coverage"].value < 0.9 and failed["coverage"].threshold == 0.9
    assert failed["coverage"].counts["catalogue_courses"] == 400
    assert failed["fallback_share"].value > 0.1
    frame = data.frame()
    personal = frame[~frame.source.isin(gates.fallback_sources)].learner_id.unique()
    fallback_only = [i for i in frame.learner_id.unique().tolist() if i not in set(personal)]
    assert failed["fallback_share"].examples == fallback_only[:5]
    assert f"e.g. {fallback_only[:5]}" in str(info.value)
    assert "value" in str(info.value)
    manifest = info.value.manifest  # every gate's result travels with the error
    assert len(manifest["gates"]["results"]) == 9 and manifest["gates"]["passed"] is False


def test_not_watched_is_skipped_and_said_so_without_pairs(tmp_path):
    data = lists()
    result = run(data.chunks(), data, tmp_path / "out")
    gate = next(r for r in result.manifest["gates"]["results"] if r["name"] == "not_watched")
    assert gate["passed"] is None and "skipped" in gate["rule"]


def test_string_ids_are_checked_the_same_way(tmp_path):
    data = lists(string_ids=True)
    frame = data.frame()
    frame.loc[4, "course_id"] = "nope"
    gate, _ = failed_gate(frame, data, tmp_path / "out", "courses_known")
    assert gate.examples == [("L0000000", "nope")]


def test_a_failing_gate_stops_loading_the_sink_but_counts_to_the_end(tmp_path):
    data = lists()

    class Recording:
        kind = "recording"
        writes = 0
        aborted = False

        def describe(self):
            return {"kind": self.kind}

        def open(self, version, schema):
            sink = self

            class Staging:
                def write(self, table):
                    sink.writes += 1

                def commit(self, manifest):  # pragma: no cover - must not be reached
                    raise AssertionError

                def abort(self):
                    sink.aborted = True

            return Staging()

    frame = data.frame()
    frame.loc[0, "score"] = np.nan  # in the first chunk
    sink = Recording()
    with pytest.raises(GateError) as info:
        run(frame, data, tmp_path, sink=sink, write_ahead=0)
    assert sink.writes == 0 and sink.aborted
    assert info.value.manifest["counts"]["rows"] == 300  # the whole stream was still counted


# --- the row contract: RowError at once ------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="source"), r"missing \['source'\]"),
        (lambda f: f.assign(extra=1.0), r"unexpected \['extra'\]"),
        (
            lambda f: f.assign(source=f.source.astype(object).where(f.index % 100 > 0, 7)),
            r"rows\.source: an object column must hold strings only.*3 of 300 rows hold other "
            r"values \(e\.g\. rows \[0, 100, 200\]: \[7, 7, 7\]\).*astype\('string'\)",
        ),
        (lambda f: f.assign(rank=f["rank"].astype(float)), "ranks must be integers"),
        (lambda f: f.assign(learner_id=f.learner_id.astype("str")), "learner table's ids"),
        (lambda f: f.assign(score=f.score.astype(int)), "floating point"),
        (
            lambda f: f.assign(
                rank=f["rank"].astype("int64").where(f.index % 100 > 0, 3_000_000_000)
            ),
            r"rows\.rank: values must fit int32 \(-2,147,483,648 to 2,147,483,647\); 3 of 300 "
            r"rows do not \(e\.g\. rows \[0, 100, 200\]: \[3000000000, 3000000000, 3000000000\]\)",
        ),
        (lambda f: f.assign(model_version=pd.array([None] * len(f), "string")), "missing"),
        (
            lambda f: f.assign(source=f.source.where(f.index % 7 > 0, "bl\x00end")),
            r"rows\.source: values must not contain a NUL.*43 of 300 rows.*rows \[0, 7, 14",
        ),
    ],
)
def test_a_chunk_breaking_the_row_contract_raises_row_error(tmp_path, change, message):
    data = lists()
    with pytest.raises(RowError, match=message):
        run(change(data.frame()), data, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out" / "versions").iterdir()] == []


def test_learner_rows_must_be_contiguous_and_in_one_chunk(tmp_path):
    data = lists()
    frame = data.frame()
    split = pd.concat([frame.iloc[:3], frame.iloc[5:10], frame.iloc[3:5], frame.iloc[10:]])
    with pytest.raises(RowError, match=r"contiguous.*e\.g\. \[0\]"):
        run([split], data, tmp_path / "a")
    with pytest.raises(RowError, match="earlier chunk"):
        run([frame.iloc[:3], frame.iloc[3:]], data, tmp_path / "b")


@pytest.mark.parametrize("empty", [[], "frame", "chunks", "untyped", "untyped chunks"])
def test_empty_input_is_an_error_and_publishes_nothing(tmp_path, empty):
    data = lists()
    frame = data.frame()
    rows = {
        "frame": frame.iloc[:0],
        "chunks": [frame.iloc[:0], pa.Table.from_pandas(frame.iloc[:0])],
        # no dtypes at all: object columns, Arrow `null` (was a RowError about the rank dtype)
        "untyped": pd.DataFrame(columns=list(COLUMNS)),
        "untyped chunks": [pd.DataFrame(columns=list(COLUMNS))],
    }
    with pytest.raises(EmptyInputError, match="no rows"):
        run(rows.get(empty, []) if empty != [] else [], data, tmp_path / "out")
    assert not (tmp_path / "out" / "current").exists()


def test_setup_errors_name_the_argument(tmp_path):
    data = lists()
    with pytest.raises(ValueError, match="eligible_learners: 1 of 2 ids are not in the learner"):
        run(data.chunks(), data, tmp_path, eligible_learners=[1, 10**9])
    with pytest.raises(ValueError, match="provenance keys \\['code_version'\\]"):
        run(data.chunks(), data, tmp_path, manifest={"config": {}, "data_fingerprint": "x"})
    with pytest.raises(
        RowError,
        match=r"learners: ids must not be missing; 2 of 5 are "
        r"\(e\.g\. positions \[1, 3\]\)",
    ):
        run(data.chunks(), data, tmp_path, learners=[1.0, np.nan, 3.0, None, 5.0])
    with pytest.raises(ValueError, match="GateConfig.k"):
        GateConfig(k=0)
    with pytest.raises(ValueError, match="min_coverage"):
        GateConfig(k=3, min_coverage=1.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": "3"}, r"GateConfig.k: must be an integer >= 1, got '3'"),
        ({"k": 3.7}, r"GateConfig.k: must be an integer >= 1, got 3.7"),
        ({"k": True}, r"GateConfig.k: must be an integer >= 1, got True"),
        ({"k": 3, "min_coverage": "0.2"}, r"GateConfig.min_coverage: must be a number in \[0, 1\]"),
        ({"k": 3, "max_fallback_share": float("nan")}, r"GateConfig.max_fallback_share: must be"),
        ({"k": 3, "n_examples": -1}, r"GateConfig.n_examples: must be an integer >= 0, got -1"),
        ({"k": 3, "n_examples": 2.5}, r"GateConfig.n_examples: must be an integer >= 0"),
    ],
)
def test_gate_config_refuses_values_of_the_wrong_kind_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateConfig(**kwargs)


def test_gate_config_stores_plain_int_and_float(tmp_path):
    config = GateConfig(k=np.int64(5), min_coverage=np.float32(0.25), n_examples=3.0)
    assert type(config.k) is int and config.k == 5
    assert type(config.min_coverage) is float and config.min_coverage == 0.25
    assert type(config.max_fallback_share) is float and type(config.n_examples) is int
    data = lists()
    result = run(data.chunks(), data, tmp_path, gates=config)
    assert result.manifest["gates"]["config"]["k"] == 5


@pytest.mark.parametrize("string_ids", [False, True])
def test_object_columns_of_strings_are_taken(tmp_path, string_ids):
    # what pandas 2 gives for every string column of an ordinary DataFrame
    data = lists(string_ids=string_ids)
    frame = data.frame()
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c].dtype)]
    objects = frame.assign(**{c: frame[c].astype(object) for c in text})
    assert len(text) == (4 if string_ids else 2) and all(
        pd.api.types.is_object_dtype(objects[c]) for c in text
    )
    result = run(objects, data, tmp_path)
    assert result.manifest["checksum"]["hex"] == rows_checksum(frame)


@pytest.mark.parametrize("string_ids", [False, True])
def test_categorical_id_sets_are_taken_as_their_values(tmp_path, string_ids):
    # categorical row columns are accepted, so categorical learner / course tables must be too
    data = lists(string_ids=string_ids)
    result = run(
        data.chunks(),
        data,
        tmp_path,
        learners=pd.Series(data.learner_ids, dtype="category"),
        catalogue=pa.array(data.course_ids).dictionary_encode(),
    )
    assert result.manifest["counts"]["learners"] == len(data.learner_ids)
    assert result.manifest["schema"]["learner_id"] == ("string" if string_ids else "int64")


@pytest.mark.parametrize("write_ahead", [-1, 0.5])
def test_write_ahead_must_be_a_count_of_chunks(tmp_path, write_ahead):
    data = lists()
    with pytest.raises(ValueError, match=r"write_ahead: .*integer >= 0.*got"):
        run(data.chunks(), data, tmp_path / "out", write_ahead=write_ahead)
    assert not (tmp_path / "out").exists()  # refused before the sink was opened


def test_watched_pairs_already_canonical_are_used_without_a_copy():
    import scipy.sparse as sp

    from export.view import IdLookup
    from export.watched import watched_matrix

    learners, courses = IdLookup([5, 6, 7], "learners"), IdLookup([10, 11], "catalogue")
    canonical = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1]], dtype=bool))
    on_tables = watched_matrix(WatchedPairs(canonical, [5, 6, 7], [10, 11]), learners, courses)
    assert on_tables.matrix is canonical and on_tables.counts()["watched_pairs_checked"] == 4
    # a stored False is not a watched pair: such a matrix is copied, the caller's left as is
    stored_false = sp.csr_matrix(
        (np.array([True, False]), np.array([0, 1]), np.array([0, 2, 2, 2])), shape=(3, 2)
    )
    got = watched_matrix(WatchedPairs(stored_false, [5, 6, 7], [10, 11]), learners, courses).matrix
    assert got is not stored_false and got.nnz == 1 and stored_false.nnz == 2
    assert got.toarray().tolist() == [[True, False], [False, False], [False, False]]
