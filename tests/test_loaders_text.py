"""Delimited text read by `load_tables`: quoting, physical line numbers, what each text
value becomes. Every case here is a file a user could hand the toolkit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from watchlog import DataReport, SchemaError
from watchlog.loaders import DataFileError, load_tables

H = "learner_id,course_id,ts,watch_seconds\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- quoting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        'b,"c2,2024-01-02,60\n',  # a stray quote in a middle column
        'b,c2,2024-01-02,"60\n',  # in the last column: the row count would silently shrink
    ],
)
def test_a_stray_quote_is_an_error_naming_the_line_it_opens_on(tmp_path, row):
    rest = "c,c3,2024-01-03,60\nd,c4,2024-01-04,60\n"
    path = write(tmp_path, "q.csv", H + "a,c1,2024-01-01,60\n" + row + rest)
    with pytest.raises(DataFileError) as err:
        load_tables(path)
    assert err.value.line == 3
    assert "a quoted field opens on this line" in err.value.rule
    assert "quoting=false" in err.value.fix and "multiline=true" in err.value.fix


def test_a_stray_quote_after_a_blank_line_names_the_physical_line(tmp_path):
    text = H + 'a,c1,2024-01-01,60\n\n\nb,c2,2024-01-02,60\nc,c3,2024-01-03,"60\ne,c,1,1\n'
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(DataFileError) as err:
        load_tables(path)
    assert err.value.line == 6


@pytest.mark.parametrize("extra", [None, []], ids=["every column", "only mapped columns"])
def test_a_stray_quote_in_a_column_not_read_is_still_found(tmp_path, extra):
    """The check read the loaded columns only: with `extra: []` the stray quote in `comment`
    swallowed two rows without a word."""
    rows = ["L1,c1,2024-01-01,x", 'L2,c2,2024-01-02,"oops', "L3,c3,2024-01-03,y",
            'L4,c4,2024-01-04,z"', "L5,c5,2024-01-05,w"]  # fmt: skip
    path = write(tmp_path, "q.csv", "learner_id,course_id,ts,comment\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFileError, match="a quoted field opens on this line") as err:
        load_tables({"path": path, "fill": {"watch_seconds": 600}, "extra": extra})
    assert err.value.line == 3


def test_a_stray_quote_in_a_file_with_carriage_return_line_ends_is_found(tmp_path):
    """Old Mac exports end lines with a lone CR; the check looked for LF only."""
    rows = ["learner_id,course_id,ts,watch_seconds", "a,c1,2024-01-08,60", 'b,c2,2024-01-09,"60',
            "c,c3,2024-01-10,60", "d,c4,2024-01-11,60"]  # fmt: skip
    path = tmp_path / "cr.csv"
    path.write_bytes("\r".join(rows).encode() + b"\r")
    with pytest.raises(DataFileError, match="a quoted field opens on this line") as err:
        load_tables(path)
    assert err.value.line == 3
    path.write_bytes("\r".join(rows[:2] + rows[3:]).encode() + b"\r")  # no stray quote
    assert len(load_tables(path).events) == 3


def test_quoting_off_reads_quotes_as_text(tmp_path):
    text = H.strip() + ',title\na,c1,2024-01-01,60,x\nb,c2,2024-01-02,60,"12 inch\n'
    path = write(tmp_path, "q.csv", text + "c,c3,2024-01-03,60,y\n")
    log = load_tables({"path": path, "quoting": False})
    assert len(log.events) == 3
    assert log.events.set_index("learner_id").loc["b", "title"] == '"12 inch'


def test_multiline_opts_into_quoted_line_breaks(tmp_path):
    text = H.strip() + ',title\na,c1,2024-01-01,60,"two\nlines"\nb,c2,2024-01-02,60,y\n'
    path = write(tmp_path, "m.csv", text)
    with pytest.raises(DataFileError) as err:
        load_tables(path)
    assert err.value.line == 2
    log = load_tables({"path": path, "multiline": True})
    assert sorted(log.events["title"].astype(str)) == ["two\nlines", "y"]


def test_quoted_fields_lose_their_quotes_when_quoting_is_on(tmp_path):
    # Documented CSV behaviour: a field that opens with '"' is quoted, so its quotes go.
    text = H.strip() + ',title\na,c1,2024-01-01,60,"Weird Al" Yankovic\nb,c2,2024-01-02,60,"a, b"\n'
    log = load_tables(write(tmp_path, "w.csv", text))
    assert sorted(log.events["title"].astype(str)) == ["Weird Al Yankovic", "a, b"]


def test_the_quoting_keys_must_be_booleans(tmp_path):
    path = write(tmp_path, "e.csv", H + "a,c1,2024-01-01,60\n")
    with pytest.raises(ValueError, match="quoting must be true or false"):
        load_tables({"path": path, "quoting": "false"})


def test_utf16_without_a_byte_order_mark_is_named_by_its_nul_bytes(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes((H + "a,c1,2024-01-01,60\n").encode("utf-16-le"))
    with pytest.raises(DataFileError, match="NUL bytes") as err:
        load_tables(path)
    assert err.value.line == 1 and "encoding=utf-16-le" in err.value.fix


# ---- physical lines -------------------------------------------------------------------


def test_a_ragged_row_after_a_blank_line_names_its_physical_line(tmp_path):
    text = H + "a,c1,2024-01-01,60\n\nb,c1,2024-01-02,60\nc,c1,2024-01-03,60,X\n"
    with pytest.raises(DataFileError) as err:
        load_tables(write(tmp_path, "r.csv", text))
    assert err.value.line == 5
    assert "row has 5 fields" in err.value.rule


def test_a_ragged_row_after_a_multiline_field_names_its_physical_line(tmp_path):
    text = H.strip() + ',title\na,c1,2024-01-01,60,"x\ny\nz"\nb,c1,2024-01-02,60,t,X\n'
    with pytest.raises(DataFileError) as err:
        load_tables({"path": write(tmp_path, "r.csv", text), "multiline": True})
    assert err.value.line == 5


def test_validation_examples_name_physical_lines(tmp_path):
    text = H.strip() + ',title\na,c1,2024-01-01,60,"two\nlines"\n\n\nb,c1,2024-01-02,-5,t\n'
    with pytest.raises(SchemaError) as err:
        load_tables({"path": write(tmp_path, "v.csv", text), "multiline": True})
    (problem,) = err.value.problems
    assert (problem.column, problem.examples) == ("watch_seconds", [(6, -5)])


# ---- timestamps in text -----------------------------------------------------------------


def dates(log) -> list[str]:
    return [str(t.date()) for t in log.events.sort_values("learner_id")["ts"]]


def test_non_iso_dates_are_read_in_one_explicit_format_for_the_column(tmp_path):
    # Month first cannot read 13/1/24, so the whole column is day first: 1/8/24 is 1 August.
    text = H + "a,c1,1/8/24,60\nb,c1,13/1/24,60\nc,c1,2/1/24,60\n"
    assert dates(load_tables(write(tmp_path, "t.csv", text))) == [
        "2024-08-01",
        "2024-01-13",
        "2024-01-02",
    ]


def test_dates_no_one_format_reads_are_reported_with_their_lines(tmp_path):
    text = H + "a,c1,01/08/2024,60\nb,c1,15/01/2024,60\nc,c1,13/13/2024,60\n"
    with pytest.raises(SchemaError) as err:
        load_tables(write(tmp_path, "t.csv", text))
    (problem,) = err.value.problems
    assert (problem.column, problem.count, problem.examples) == ("ts", 1, [(4, "13/13/2024")])


def test_a_value_in_another_format_than_the_columns_iso_is_unparseable(tmp_path):
    text = H + "a,c1,2024-01-08,60\nb,c1,02/03/2024,60\n"
    with pytest.raises(SchemaError) as err:
        load_tables(write(tmp_path, "m.csv", text))
    (problem,) = err.value.problems
    assert "timestamp must be parseable" in problem.rule
    assert problem.examples == [(3, "02/03/2024")]


# ---- what text values become ---------------------------------------------------------


def test_ids_spelled_like_nulls_are_ids_and_an_empty_id_shows_as_empty(tmp_path):
    rows = [f"{i},c1,2024-01-0{d},60\n" for d, i in enumerate(["NA", "null", "nan", "N/A"], 1)]
    log = load_tables(write(tmp_path, "n.csv", H + "".join(rows)))
    assert sorted(log.learner_ids.index) == ["N/A", "NA", "nan", "null"]
    with pytest.raises(SchemaError) as err:
        load_tables(write(tmp_path, "e.csv", H + "a,c1,2024-01-01,60\n,c1,2024-01-02,60\n"))
    (problem,) = err.value.problems
    assert (problem.rule, problem.examples) == ("id must not be missing", [(3, "")])


def test_a_missing_id_among_integer_ids_is_named_not_a_crash(tmp_path):
    text = H + "7,c1,2024-01-01,60\n,c1,2024-01-02,60\n"
    with pytest.raises(SchemaError, match="id must not be missing -- 1 row.*line 3: ''"):
        load_tables(write(tmp_path, "e.csv", text))


def test_text_columns_are_read_as_written_like_parquet(tmp_path):
    events = write(
        tmp_path,
        "s.csv",
        H.strip() + ",channel\na,c1,2024-01-01,NA,007\nb,c1,2024-01-02,60,7\n",
    )
    learners = write(tmp_path, "l.csv", "learner_id,segment,zip\na,01,02134\nb,1,NA\n")
    courses = write(tmp_path, "c.csv", "course_id,title,duration_seconds\nc1,NA,0600\n")
    log = load_tables(events, learners=learners, courses=courses)
    ev = log.events.set_index("learner_id")
    assert ev["channel"].astype(str).to_dict() == {"a": "007", "b": "7"}
    assert ev["watch_seconds"].isna().tolist() == [True, False]  # numbers: NA is missing
    profile = log.learners.set_index("learner_id")
    assert profile["segment"].astype(str).to_dict() == {"a": "01", "b": "1"}
    assert profile.loc["a", "zip"] == "02134" and pd.isna(profile.loc["b", "zip"])
    assert log.courses["title"].tolist() == ["NA"]  # a title, not a missing one
    assert log.courses["duration_seconds"].tolist() == [600.0]
    pd.read_csv(learners, dtype=str, keep_default_na=False).to_parquet(tmp_path / "l.parquet")
    from_parquet = load_tables(events, learners=tmp_path / "l.parquet").learners
    assert from_parquet["segment"].astype(str).tolist() == profile["segment"].astype(str).tolist()


def test_epochs_in_another_unit_say_which_unit_fits(tmp_path):
    path = write(tmp_path, "ms.csv", H + "a,c1,1704708000000,60\nb,c1,1704708060000,60\n")
    with pytest.raises(SchemaError) as err:
        load_tables(path, ts_unit="s")
    (problem,) = err.value.problems
    assert problem.count == 2
    assert "ts_unit=ms reads 1704708000000 as 2024-01-08 10:00:00+00:00" in problem.fix


def test_text_epochs_with_one_bad_value_report_that_value_only(tmp_path):
    text = H + "a,c1,1704708000,60\nb,c1,x,60\nc,c1,1704708060,60\n"
    with pytest.raises(SchemaError) as err:
        load_tables(write(tmp_path, "e.csv", text), ts_unit="s")
    (problem,) = err.value.problems
    assert (problem.count, problem.examples) == (1, [(3, "x")])


@pytest.mark.parametrize("name", ["Impression", " impression"])
def test_clicked_without_an_impression_column_warns_naming_near_misses(tmp_path, name, caplog):
    text = H.strip() + f",clicked,{name}\na,c1,2024-01-01,60,1,true\n"
    report = DataReport()
    with caplog.at_level("WARNING"):
        log = load_tables(write(tmp_path, "e.csv", text), report=report)
    assert log.events["clicked"].isna().all()  # organic: as documented, but warned
    warned = [n for n in report.notes if "a clicked column but no impression column" in n]
    assert len(warned) == 1 and repr(name) in warned[0]
    assert "a clicked column but no impression column" in caplog.text
