"""Loaders: real MovieLens 100K / latest-small (skipped without NCF_GLMIX_DATA_ROOT), and small
synthetic files in the ML-1M, ML CSV and generic Parquet/CSV formats written to tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from watchlog import DataReport, EventLog, SchemaError
from watchlog.loaders import (
    ML1M_OCCUPATIONS,
    RatingProxy,
    TableSpec,
    load_movielens,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_csv,
    load_tables,
    read_table,
)

# ---- synthetic files in the MovieLens formats -----------------------------------------

ML1M_RATINGS = """\
1::1::5::978300760
1::2::3::978302109
2::1::4::978301968
2::3::1::978300275
3::2::2::978824291
"""
ML1M_MOVIES = """\
1::Toy Story (1995)::Animation|Children's|Comedy
2::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi
3::Cit\u00e9 des enfants perdus, La (1995)::Adventure|Sci-Fi
4::Never "Rated" (2000)::Drama
"""
ML1M_USERS = """\
1::F::1::10::48067
2::M::56::16::70072
3::M::25::15::55117
"""
ML_CSV_RATINGS = """\
userId,movieId,rating,timestamp
1,1,4.0,964982703
1,3,0.5,964981247
2,1,3.5,964982224
2,2,3.0,964983815
3,4,5.0,1537109082
"""
ML_CSV_MOVIES = """\
movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,Babylon 5,Sci-Fi
4,Some Show (2006\u20132007),(no genres listed)
5,Unrated (2001),Drama
"""


def write_ml1m(root: Path, ratings: str = ML1M_RATINGS, users: bool = True) -> Path:
    """An ML-1M-format directory; movies.dat in Latin-1 like the real one."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text(ratings)
    (root / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))
    if users:
        (root / "users.dat").write_text(ML1M_USERS)
    return root


def write_ml_csv(root: Path, ratings: str = ML_CSV_RATINGS) -> Path:
    """A directory in the format of ml-latest(-small) / ml-20m."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(ratings)
    (root / "movies.csv").write_text(ML_CSV_MOVIES, encoding="utf-8")
    return root


def course(log: EventLog, course_id) -> pd.Series:
    return log.courses.set_index("course_id").loc[course_id]


def learner(log: EventLog, learner_id) -> pd.Series:
    return log.learners.set_index("learner_id").loc[learner_id]


def check_event_dtypes(log: EventLog) -> None:
    ev = log.events
    assert ev["learner_id"].dtype == np.int32 and ev["course_id"].dtype == np.int32
    assert str(ev["ts"].dtype) == "datetime64[ns, UTC]"
    assert ev["watch_seconds"].dtype == np.float32
    assert ev["clicked"].dtype == "Int8" and ev["position"].dtype == "Int16"
    assert ev["impression"].dtype == bool and ev["impression"].all()
    assert ev["position"].isna().all()
    assert list(ev["channel"].cat.categories) == ["rating"]
    assert ev["rating"].dtype == np.float32


# ---- ML-1M format ---------------------------------------------------------------------


def test_ml1m_tables(tmp_path):
    report = DataReport()
    log = load_movielens_1m(write_ml1m(tmp_path / "ml-1m"), report=report)
    assert (len(log), log.n_learners, log.n_courses) == (5, 3, 4)
    check_event_dtypes(log)
    # '::' split does not cut titles with ':' ; Latin-1 decoded; quotes kept verbatim.
    assert course(log, 2)["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert course(log, 3)["title"] == "Cit\u00e9 des enfants perdus, La (1995)"
    assert course(log, 4)["title"] == 'Never "Rated" (2000)'  # never rated: kept
    assert course(log, 1)["genres"] == "Animation|Children's|Comedy"
    assert course(log, 1)["category"] == "Animation"
    assert course(log, 1)["skills"] == course(log, 1)["genres"]
    assert course(log, 2)["release_year"] == 1977
    assert log.courses["language"].isna().all()
    u1, u2 = learner(log, 1), learner(log, 2)
    assert (u1["gender"], u1["age"], u1["occupation"], u1["zip"]) == (
        "F",
        1,
        "K-12 student",
        "48067",
    )
    assert u2["occupation"] == ML1M_OCCUPATIONS[16] == "self-employed"
    assert u2["segment"] == "self-employed"
    assert log.events["ts"].min() == pd.Timestamp(978300275, unit="s", tz="UTC")
    assert any("read 5 rows from ratings.dat" in n for n in report.notes)


def test_ml1m_without_users_derives_learners(tmp_path):
    report = DataReport()
    log = load_movielens(write_ml1m(tmp_path / "ml-10m", users=False), report=report)
    assert log.n_learners == 3 and (log.learners["segment"] == "unknown").all()
    assert any("no users.dat" in n for n in report.notes)


def test_ml1m_bad_values_reported_with_count_and_examples(tmp_path):
    bad = ML1M_RATINGS.replace("978302109", "yesterday").replace("978824291", "soon")
    with pytest.raises(SchemaError) as err:
        load_movielens_1m(write_ml1m(tmp_path / "bad", ratings=bad))
    (problem,) = err.value.problems
    assert (problem.table, problem.column, problem.count) == ("ratings.dat", "ts", 2)
    # ratings.dat has no header: data row i is file line i + 1
    assert problem.unit == "line" and problem.examples == [(2, "yesterday"), (5, "soon")]


def test_ml1m_unknown_occupation_code_is_an_error(tmp_path):
    root = write_ml1m(tmp_path / "ml-1m")
    (root / "users.dat").write_text(ML1M_USERS.replace("::16::", "::21::"))
    with pytest.raises(SchemaError, match="occupation code must be 0..20"):
        load_movielens_1m(root)


# ---- ML CSV format (latest, 20M) and the watch proxy ---------------------------------------


def test_ml_csv_tables(tmp_path):
    report = DataReport()
    log = load_movielens_csv(write_ml_csv(tmp_path / "ml-20m"), report=report)
    assert (len(log), log.n_learners, log.n_courses) == (5, 3, 5)
    check_event_dtypes(log)
    assert (log.learners["segment"] == "unknown").all()
    assert any("no learners table" in n for n in report.notes)
    assert course(log, 2)["title"] == "American President, The (1995)"
    assert np.isnan(course(log, 3)["release_year"])  # no year in the title: kept
    assert course(log, 4)["release_year"] == 2006  # a year range: its first year
    assert pd.isna(course(log, 4)["genres"]) and pd.isna(course(log, 4)["category"])
    assert course(log, 1)["category"] == "Adventure"
    assert sorted(log.events["rating"]) == [0.5, 3.0, 3.5, 4.0, 5.0]
    assert any("'(no genres listed)'" in n for n in report.notes)


def by_rating(log: EventLog, column: str) -> dict[float, float]:
    ev = log.events.sort_values("rating")
    return dict(zip(ev["rating"].tolist(), ev[column].astype(float).tolist(), strict=True))


def test_watch_proxy_rating_default(tmp_path):
    log = load_movielens_csv(write_ml_csv(tmp_path / "ml"))
    assert by_rating(log, "watch_seconds") == {0.5: 300, 3.0: 1800, 3.5: 2100, 4.0: 2400, 5.0: 3000}
    assert by_rating(log, "clicked") == {0.5: 0, 3.0: 0, 3.5: 1, 4.0: 1, 5.0: 1}


def test_watch_proxy_options(tmp_path):
    root = write_ml_csv(tmp_path / "ml")
    log = load_movielens_csv(root, seconds_per_star=60, min_rating=3.5, click_threshold=2.5)
    assert by_rating(log, "watch_seconds") == {0.5: 0, 3.0: 0, 3.5: 210, 4.0: 240, 5.0: 300}
    assert by_rating(log, "clicked") == {0.5: 0, 3.0: 1, 3.5: 1, 4.0: 1, 5.0: 1}
    log = load_movielens_csv(root, watch="constant", seconds=1.0)
    assert set(log.events["watch_seconds"]) == {1.0}
    log = load_movielens_csv(root, watch="constant", seconds=1.0, min_rating=4)
    assert by_rating(log, "watch_seconds") == {0.5: 0, 3.0: 0, 3.5: 0, 4.0: 1, 5.0: 1}


def test_watch_proxy_validates_and_describes():
    with pytest.raises(ValueError, match="watch must be one of"):
        RatingProxy(watch="minutes")
    with pytest.raises(ValueError, match="seconds_per_star"):
        RatingProxy(seconds_per_star=-1)
    text = RatingProxy(watch="constant", seconds=5, min_rating=3).describe()
    assert "5 s for every rating" in text and "0 below rating 3" in text
    assert "clicked = rating > 3" in text
    clicked = RatingProxy().clicked(np.array([3.0, 3.5, np.nan]))
    assert clicked.tolist() == [0, 1, pd.NA]


def test_duplicate_ratings_follow_the_duplicates_policy(tmp_path):
    root = write_ml_csv(tmp_path / "ml", ML_CSV_RATINGS + "1,1,4.0,964982703\n")
    with pytest.raises(SchemaError, match="duplicate event"):
        load_movielens_csv(root)
    assert len(load_movielens_csv(root, duplicates="first")) == 6  # left for cleaning


def test_hydra_instantiate_with_plain_arguments(tmp_path):
    instantiate = pytest.importorskip("hydra.utils").instantiate
    cfg = {
        "_target_": "watchlog.loaders.load_movielens",
        "path": str(write_ml_csv(tmp_path / "ml")),
        "watch": "constant",
        "seconds": 30,
        "click_threshold": 4,
    }
    log = instantiate(cfg)
    assert set(log.events["watch_seconds"]) == {30.0}
    assert int(log.events["clicked"].sum()) == 1


def test_unknown_directory_is_a_clear_error(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no MovieLens ratings file.*x\.txt"):
        load_movielens(tmp_path)


# ---- generic Parquet / CSV ------------------------------------------------------------


def platform_events(n: int = 6) -> pd.DataFrame:
    """Events as a partner might export them: their own column names."""
    return pd.DataFrame(
        {
            "user": np.arange(n, dtype=np.int64) % 3,
            "item": [f"c{i % 2}" for i in range(n)],
            "time": pd.date_range("2024-01-01", periods=n, freq="h"),
            "secs": np.linspace(0, 500, n),
            "click": [1, 0, 1, 0, 1, 0][:n],
            "device": ["ios", "web", "web", "ios", "web", "ios"][:n],
        }
    )


EVENT_COLUMNS_MAP = {
    "learner_id": "user",
    "course_id": "item",
    "ts": "time",
    "watch_seconds": "secs",
    "clicked": "click",
}


def test_generic_parquet_with_mapping_and_fill(tmp_path):
    platform_events().to_parquet(tmp_path / "events.parquet")
    pd.DataFrame({"uid": [0, 1, 2], "plan": ["free", "pro", "free"]}).to_parquet(
        tmp_path / "learners.pq"
    )
    pd.DataFrame({"course_id": ["c0", "c1"], "lang": ["en", "fr"]}).to_csv(
        tmp_path / "courses.csv", index=False
    )
    report = DataReport()
    log = load_tables(
        events={
            "path": tmp_path / "events.parquet",
            "columns": EVENT_COLUMNS_MAP,
            "fill": {"impression": True, "channel": "home"},
        },
        learners={
            "path": tmp_path / "learners.pq",
            "columns": {"learner_id": "uid", "segment": "plan"},
        },
        courses={"path": tmp_path / "courses.csv", "columns": {"language": "lang"}},
        report=report,
    )
    ev = log.events
    assert len(ev) == 6 and ev["learner_id"].dtype == np.int32  # int ids narrowed
    assert ev["device"].tolist() == ["ios", "web", "web", "ios", "web", "ios"]  # extra kept
    assert "user" not in ev and "position" not in ev  # mapped source renamed; absent stays absent
    assert ev["impression"].all() and set(ev["channel"]) == {"home"}
    assert ev["watch_seconds"].max() == 500
    assert list(log.learners["segment"]) == ["free", "pro", "free"]
    assert "plan" not in log.learners and set(log.courses["language"]) == {"en", "fr"}
    assert "events.impression filled with True for all 6 rows (not in source)" in report.notes
    assert any("read 6 rows from" in n and "(parquet)" in n for n in report.notes)


def test_generic_csv_formats_and_extra_selection(tmp_path):
    frame = platform_events().assign(
        impression=True, time=lambda f: f["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    spec = {"columns": EVENT_COLUMNS_MAP, "extra": []}
    frame.to_csv(tmp_path / "events.csv.gz", index=False)
    frame.to_csv(tmp_path / "events.tsv", index=False, sep="\t")
    frame.to_csv(tmp_path / "events.txt", index=False, sep=";")
    logs = [
        load_tables({"path": tmp_path / "events.csv.gz", **spec}),
        load_tables({"path": tmp_path / "events.tsv", **spec}),
        load_tables({"path": tmp_path / "events.txt", "format": "csv", "delimiter": ";", **spec}),
    ]
    for log in logs:
        assert len(log) == 6 and "device" not in log.events  # extra: [] keeps none
        assert log.events["impression"].all()  # contract-named source column taken as is
        assert log.events["ts"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    pd.testing.assert_frame_equal(logs[0].events, logs[1].events)
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_tables(tmp_path / "events.txt")


def test_csv_ids_are_kept_exactly_as_written(tmp_path):
    """Id columns are read as text: "007", "7" and "0007" stay three learners, a 23-digit id
    is not rounded; a column of plain integers loads as integers; a learners table with a
    text id makes the events' integer ids text, so both tables name the same learners."""
    rows = "learner_id,course_id,ts,watch_seconds\n"
    (tmp_path / "z.csv").write_text(
        rows + "007,12345678901234567890123,2024-01-01,100\n7,12345678901234567890124,"
        "2024-01-02,100\n0007,1e3,2024-01-03,100\n7,1000,2024-01-04,100\n"
    )
    report = DataReport()
    log = load_tables(tmp_path / "z.csv", report=report)
    assert sorted(log.learners["learner_id"]) == ["0007", "007", "7"]
    assert sorted(log.courses["course_id"]) == [
        "1000", "12345678901234567890123", "12345678901234567890124", "1e3"
    ]  # fmt: skip
    assert any("learner_id: read as text, not numbers" in n for n in report.notes)
    (tmp_path / "zeros.csv").write_text(rows + "0,c,2024-01-01,100\n-0,c,2024-01-02,100\n")
    assert sorted(load_tables(tmp_path / "zeros.csv").learners["learner_id"]) == ["-0", "0"]
    (tmp_path / "ints.csv").write_text(rows + "1,10,2024-01-01,100\n2,11,2024-01-02,100\n")
    ints = load_tables(tmp_path / "ints.csv")
    assert ints.learners["learner_id"].dtype.kind == "i" and list(ints.courses["course_id"]) == [
        10, 11
    ]  # fmt: skip
    (tmp_path / "learners.csv").write_text("learner_id,segment\n1,a\n2,b\nguest,c\n")
    both = load_tables(tmp_path / "ints.csv", tmp_path / "learners.csv", report=report)
    assert sorted(both.learners["learner_id"]) == ["1", "2", "guest"] and len(both) == 2
    assert any("events.learner_id: integers read as text" in n for n in report.notes)


def test_generic_numeric_epochs_need_ts_unit(tmp_path):
    epoch = pd.Timestamp("1970-01-01")
    frame = platform_events().assign(time=lambda f: (f["time"] - epoch) // pd.Timedelta("1s"))
    frame.to_parquet(tmp_path / "e.parquet")
    spec = {"path": tmp_path / "e.parquet", "columns": EVENT_COLUMNS_MAP, "fill": {"impression": 1}}
    with pytest.raises(SchemaError, match="give ts_unit"):
        load_tables(spec)
    log = load_tables(spec, ts_unit="s")
    assert log.events["ts"].iloc[-1] == pd.Timestamp("2024-01-01 05:00", tz="UTC")


def test_generic_bad_mapping_names_table_columns_and_available(tmp_path):
    platform_events().to_parquet(tmp_path / "events.parquet")
    spec = {"path": tmp_path / "events.parquet", "columns": {**EVENT_COLUMNS_MAP, "ts": "when"}}
    with pytest.raises(ValueError) as err:
        load_tables(spec)
    msg = str(err.value)
    assert "events table" in msg and "ts <- 'when'" in msg and "no source column 'when'" in msg
    assert "available columns: ['user', 'item', 'time', 'secs', 'click', 'device']" in msg


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"fill": {"clicked": 0}}, r"\['clicked'\] both mapped \(columns\) and filled"),
        ({"extra": ["nope"]}, r"extra column\(s\) \['nope'\] not in the source"),
        ({"colums": {}}, r"unknown spec key\(s\) \['colums'\]"),
        ({"format": "xlsx"}, "format must be one of"),
    ],
)
def test_generic_spec_errors(tmp_path, spec, message):
    platform_events().to_parquet(tmp_path / "events.parquet")
    full = {"path": tmp_path / "events.parquet", "columns": EVENT_COLUMNS_MAP, **spec}
    with pytest.raises(ValueError, match=message):
        load_tables(full)


def test_generic_fill_over_source_column_is_an_error(tmp_path):
    platform_events().assign(impression=True).to_parquet(tmp_path / "events.parquet")
    spec = {"path": tmp_path / "events.parquet", "fill": {"impression": False}}
    with pytest.raises(ValueError, match=r"\['impression'\] would be overwritten"):
        read_table(spec, "events")


def test_generic_missing_contract_column_named_by_validation(tmp_path):
    platform_events().to_parquet(tmp_path / "events.parquet")
    columns = {k: v for k, v in EVENT_COLUMNS_MAP.items() if k != "watch_seconds"}
    with pytest.raises(SchemaError) as err:
        load_tables({"path": tmp_path / "events.parquet", "columns": columns})
    rules = err.value.rules()
    assert ("watch_seconds", "required column is missing") in rules
    # no impression column: the log is read as organic watches (impression=false), not an error
    assert ("impression", "required column is missing") not in rules
    assert "Fix: map it (data.source.events.columns.watch_seconds=<column>) or fill" in str(
        err.value
    )


def test_impression_filled_false_is_an_organic_log_without_clicked(tmp_path):
    """The documented plays example: impression filled false, no clicked column."""
    (tmp_path / "plays.csv").write_text("user,artist,ts,plays\nu1,a1,2024-01-01,3\nu2,a1,"
                                        "2024-01-02,1\n")  # fmt: skip
    cols = {"learner_id": "user", "course_id": "artist", "watch_seconds": "plays"}
    report = DataReport()
    log = load_tables({"path": tmp_path / "plays.csv", "columns": cols,
                       "fill": {"impression": False}}, report=report)  # fmt: skip
    assert len(log) == 2 and log.events["clicked"].isna().all()
    assert not log.events["impression"].any()
    assert any("clicked is missing for all 2 (organic) events" in n for n in report.notes)


def test_generic_unparseable_timestamp_reported(tmp_path):
    frame = platform_events().assign(
        time=["2024-01-01T00:00:00Z", "garbage", "2024-01-01T02:00:00Z", "", "31/02/2024", "x"]
    )
    frame.to_csv(tmp_path / "events.csv", index=False)
    spec = {"path": tmp_path / "events.csv", "columns": EVENT_COLUMNS_MAP}
    with pytest.raises(SchemaError) as err:
        load_tables({**spec, "fill": {"impression": True}})
    problems = {(p.column, p.rule): p for p in err.value.problems}
    bad = problems[("ts", "timestamp must be parseable (years 1678-2261)")]
    # file lines as an editor counts them: the header is line 1, data row i is line i + 2
    assert bad.count == 3 and bad.examples == [(3, "garbage"), (6, "31/02/2024"), (7, "x")]
    assert "events.ts (file events.csv): timestamp must be parseable" in str(err.value)
    assert "line 3: 'garbage'" in str(err.value)
    assert problems[("ts", "timestamp must not be missing")].count == 1  # the empty field


def test_non_iso_dates_are_read_in_one_format_for_the_whole_column(tmp_path):
    """dd/mm/yyyy: the column reads day first throughout (a guess per value read 08/01 as
    August and 15/01 as January); US dates read month first; a mix is an error."""
    rows = "learner_id,course_id,ts,watch_seconds\n"
    days = ["08/01/2024", "15/01/2024", "03/02/2024"]
    (tmp_path / "day.csv").write_text(rows + "".join(f"a,c{i},{d},100\n" for i, d in
                                                      enumerate(days)))  # fmt: skip
    ts = load_tables(tmp_path / "day.csv").events.sort_values("course_id")["ts"]
    assert list(ts.dt.strftime("%Y-%m-%d")) == ["2024-01-08", "2024-01-15", "2024-02-03"]
    us = ["01/08/2024", "01/15/2024", "02/03/2024"]
    (tmp_path / "us.csv").write_text(rows + "".join(f"a,c{i},{d},100\n" for i, d in
                                                     enumerate(us)))  # fmt: skip
    ts = load_tables(tmp_path / "us.csv").events.sort_values("course_id")["ts"]
    assert list(ts.dt.strftime("%Y-%m-%d")) == ["2024-01-08", "2024-01-15", "2024-02-03"]
    (tmp_path / "mix.csv").write_text(rows + "a,c0,15/01/2024,100\na,c1,01/20/2024,100\n")
    with pytest.raises(
        SchemaError, match=r"timestamp must be parseable \(years 1678-2261\) -- 1 row"
    ):
        load_tables(tmp_path / "mix.csv")


def test_generic_derives_missing_tables_and_accepts_hydra_config(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    platform_events().to_parquet(tmp_path / "events.parquet")
    cfg = omegaconf.OmegaConf.create(
        {
            "path": str(tmp_path / "events.parquet"),
            "columns": EVENT_COLUMNS_MAP,
            "fill": {"impression": True},
            "extra": ["device"],
        }
    )
    report = DataReport()
    log = load_tables(cfg, report=report)
    assert (log.n_learners, log.n_courses) == (3, 2)
    assert any("no courses table" in n for n in report.notes)
    assert TableSpec.parse("events", cfg).extra == ("device",)


# ---- real data --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k(shared_data) -> tuple[EventLog, DataReport]:
    report = DataReport()
    return load_movielens_100k(shared_data / "ml-100k", report=report), report


@pytest.fixture(scope="module")
def ml_small(shared_data) -> tuple[EventLog, DataReport]:
    report = DataReport()
    return load_movielens_csv(shared_data / "ml-latest-small", report=report), report


@pytest.mark.real_data
def test_ml100k_counts_and_dtypes(ml100k):
    log, report = ml100k
    assert (len(log), log.n_learners, log.n_courses) == (100_000, 943, 1_682)
    check_event_dtypes(log)
    counts = log.events["rating"].value_counts().sort_index()
    assert counts.tolist() == [6110, 11370, 27145, 34174, 21201]
    assert log.events["ts"].min().strftime("%Y-%m-%d") == "1997-09-20"
    assert log.events["ts"].max().strftime("%Y-%m-%d") == "1998-04-22"
    ev = log.events
    np.testing.assert_array_equal(ev["watch_seconds"], ev["rating"] * 600)
    assert int(ev["clicked"].sum()) == 34174 + 21201
    assert report.tables["events"]["rows"] == 100_000
    assert "read 100,000 rows from u.data" in " ".join(report.notes)


@pytest.mark.real_data
def test_ml100k_every_rating_kept(ml100k, shared_data):
    log, _ = ml100k
    raw = np.loadtxt(shared_data / "ml-100k" / "u.data", dtype=np.int64)
    ev = log.events
    got = np.column_stack(
        [ev["learner_id"], ev["course_id"], ev["rating"], ev["ts"].array.asi8 // 10**9]
    ).astype(np.int64)
    np.testing.assert_array_equal(np.unique(got, axis=0), np.unique(raw, axis=0))


@pytest.mark.real_data
def test_ml100k_courses(ml100k):
    log, report = ml100k
    toy = course(log, 1)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == toy["skills"] == "Animation|Children's|Comedy"
    assert toy["category"] == "Animation" and toy["release_year"] == 1995
    assert toy["published_at"] == pd.Timestamp("1995-01-01", tz="UTC")
    assert course(log, 2)["genres"] == "Action|Adventure|Thriller"
    assert course(log, 1373)["published_at"] == pd.Timestamp("1971-02-04", tz="UTC")  # 4-Feb-1971
    unknown = course(log, 267)  # no release date: kept with missing values
    assert unknown["title"] == "unknown" and pd.isna(unknown["published_at"])
    assert np.isnan(unknown["release_year"])
    assert log.courses["published_at"].isna().sum() == 1
    assert log.courses["release_year"].dtype == np.float32
    assert log.courses["language"].isna().all()
    assert log.courses["genres"].notna().all()
    assert any(re.search(r"published_at missing for 1 movie.*\[267\]", n) for n in report.notes)


@pytest.mark.real_data
def test_ml100k_learners_and_segment(ml100k, shared_data):
    log, _ = ml100k
    u1 = learner(log, 1)
    assert (u1["age"], u1["gender"], u1["occupation"], u1["zip"]) == (
        24,
        "M",
        "technician",
        "85711",
    )
    assert (log.learners["segment"].astype(str) == log.learners["occupation"].astype(str)).all()
    assert log.learners["segment"].nunique() == 21
    by_gender = load_movielens(shared_data / "ml-100k", segment_column="gender")
    assert set(by_gender.learners["segment"]) == {"F", "M"}
    with pytest.raises(ValueError, match="segment_column 'job'"):
        load_movielens_100k(shared_data / "ml-100k", segment_column="job")


@pytest.mark.real_data
def test_ml_latest_small(ml_small, shared_data):
    log, report = ml_small
    assert (len(log), log.n_learners, log.n_courses) == (100_836, 610, 9_742)
    check_event_dtypes(log)
    assert sorted(log.events["rating"].unique()) == [x / 2 for x in range(1, 11)]
    assert (log.learners["segment"] == "unknown").all()
    assert any("no learners table: 610 learners" in n for n in report.notes)
    toy = course(log, 1)
    assert toy["title"] == "Toy Story (1995)" and toy["release_year"] == 1995
    assert toy["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert course(log, 11)["title"] == "American President, The (1995)"
    assert np.isnan(course(log, 40697)["release_year"])  # "Babylon 5": no year, kept
    assert log.courses["genres"].isna().sum() == 34  # "(no genres listed)"
    assert log.courses["release_year"].isna().sum() == 12
    raw = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv")
    got = log.events.sort_values(["learner_id", "course_id"])
    np.testing.assert_array_equal(
        got["course_id"], raw.sort_values(["userId", "movieId"])["movieId"]
    )
    assert got["rating"].sum() == pytest.approx(raw["rating"].sum())
