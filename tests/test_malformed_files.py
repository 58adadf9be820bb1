"""Malformed files, loaded the way a user does (`data=tables` through Hydra): each gets one
error naming the file, the line (1-based, header = line 1), the rule and the fix.

The table of docs/data_contract.md ("file -> message") is rendered from these messages;
`test_the_contract_document_shows_the_actual_messages` fails when it drifts. Regenerate it
with `NCF_GLMIX_WRITE_DOCS=1 python -m pytest tests/test_malformed_files.py`.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from experiments.schemas import check_config
from watchlog import DataReport, EventLog, SchemaError
from watchlog.cleaning import clean
from watchlog.loaders import DataFileError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data_contract.md"
BEGIN, END = "<!-- malformed-files:begin -->", "<!-- malformed-files:end -->"

HEADER = "learner_id,course_id,ts,watch_seconds,clicked,impression\n"
ROWS = (
    "a,c1,2024-01-01T10:00:00Z,120,1,true\n"
    "b,c2,2024-01-02T10:00:00Z,30,0,true\n"
    "a,c2,2024-01-03T10:00:00Z,600,,false\n"
)


def load(tmp_path: Path, name: str, *overrides: str, report: DataReport | None = None):
    """The events file `name` through the `data=tables` config, as `make run ARGS=...` does."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "pipeline",
            overrides=["data=tables", f"data.source.events.path={tmp_path / name}", *overrides],
        )
    check_config(cfg)  # only documented keys: nothing added with `+`
    report = report if report is not None else DataReport()
    log = instantiate(cfg.data.source, _partial_=True)(report=report)
    return cfg, log, report


@dataclass(frozen=True)
class Case:
    """A malformed file, the overrides it is loaded with, and what its message must say."""

    name: str
    content: bytes
    overrides: tuple[str, ...]
    error: type[Exception]
    line: str  # how the message names the line
    rule: str
    fix: str


CASES = [
    Case(
        "empty.csv",
        b"",
        (),
        DataFileError,
        "line 1",
        "the file is empty",
        "check the path, or export the table again",
    ),
    Case(
        "header_only.csv",
        HEADER.encode(),
        (),
        DataFileError,
        "line 2",
        "no data rows: the file has a header line only",
        "point data.source.events.path at the full file",
    ),
    Case(
        "ragged.csv",
        (HEADER + ROWS + "c,c1,2024-01-04T10:00:00Z,60,1,true,home,extra\n").encode(),
        (),
        DataFileError,
        "line 5",
        "row has 8 fields, the header has 6",
        "quote the fields that contain ','",
    ),
    Case(
        "stray_quote.csv",
        (HEADER + ROWS.replace("b,c2,", 'b,"c2,')).encode(),
        (),
        DataFileError,
        "line 3",
        "a quoted field opens on this line",
        "set data.source.events.quoting=false",
    ),
    Case(
        "repeated_header.csv",
        (HEADER.replace("impression", "ts") + ROWS).encode(),
        (),
        DataFileError,
        "line 1",
        "column names must be distinct; repeated: 'ts' (2 times)",
        "rename the repeated columns in the file",
    ),
    Case(
        "latin1.csv",
        (HEADER + ROWS + "c,caf\u00e9,2024-01-04T10:00:00Z,60,1,true\n").encode("latin-1"),
        (),
        DataFileError,
        "line 5",
        "not UTF-8: byte 0xe9 cannot be decoded",
        "set data.source.events.encoding=latin-1",
    ),
    Case(
        "utf16.csv",
        (HEADER + ROWS).encode("utf-16"),
        (),
        DataFileError,
        "line 1",
        "not UTF-8 (UTF-16 byte-order mark)",
        "set data.source.events.encoding=utf-16",
    ),
    Case(
        "semicolon.csv",
        (HEADER + ROWS).replace(",", ";").encode(),
        ("data.source.events.delimiter=','",),
        DataFileError,
        "line 1",
        "the header is one column 'learner_id;course_id;ts;watch_seconds;clicked;impression' "
        "that contains ';': the file is not ','-delimited",
        "set data.source.events.delimiter=';' (or null to detect it from the header)",
    ),
    Case(
        "tabs.csv",
        (HEADER + ROWS).replace(",", "\t").encode(),
        ("data.source.events.delimiter=';'",),
        DataFileError,
        "line 1",
        "the file is not ';'-delimited",
        "set data.source.events.delimiter=tab",
    ),
    Case(
        "bad_values.csv",
        (HEADER + ROWS.replace("30,0,true", "-30,2,true")).encode(),
        (),
        SchemaError,
        "line 3",
        "events.watch_seconds (file bad_values.csv): must be >= 0 (missing allowed)",
        "events.clicked (file bad_values.csv): must be 0 or 1 (missing allowed)",
    ),
    Case(
        "duplicates.csv",
        (HEADER + ROWS + ROWS.splitlines(keepends=True)[0]).encode(),
        (),
        SchemaError,
        "line 2",  # both copies: lines 2 and 5
        "duplicate event",
        "set data.cleaning.duplicates to first, last or max_watch",
    ),
]


def message_of(tmp_path: Path, case: Case) -> str:
    (tmp_path / case.name).write_bytes(case.content)
    with pytest.raises(case.error) as err:
        load(tmp_path, case.name, *case.overrides)
    return str(err.value)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_malformed_file_names_file_line_rule_and_fix(tmp_path, case):
    message = message_of(tmp_path, case)
    for part in (case.name, case.line, case.rule, case.fix):
        assert part in message, f"{part!r} not in {message!r}"


def test_the_ragged_line_is_the_editors_line_and_others_are_counted(tmp_path):
    bad = HEADER + ROWS + "c,c1,2024-01-04T10:00:00Z,60\n" + ROWS + "d,c1,x,1,1,true,y\n"
    (tmp_path / "ragged.csv").write_text(bad)
    with pytest.raises(DataFileError) as err:
        load(tmp_path, "ragged.csv")
    assert err.value.line == 5
    assert "row has 4 fields, the header has 6" in err.value.rule
    assert "1 more such line(s), e.g. line(s) 9" in err.value.rule


def test_the_encoding_named_loads_the_utf16_file(tmp_path):
    case = next(c for c in CASES if c.name == "utf16.csv")
    (tmp_path / case.name).write_bytes(case.content)
    _, log, _ = load(tmp_path, case.name, "data.source.events.encoding=utf-16")
    assert len(log.events) == 3


def test_the_right_encoding_loads_the_latin1_file(tmp_path):
    case = next(c for c in CASES if c.name == "latin1.csv")
    (tmp_path / case.name).write_bytes(case.content)
    _, log, _ = load(tmp_path, case.name, "data.source.events.encoding=latin-1")
    assert "caf\u00e9" in set(log.course_ids.index)


@pytest.mark.parametrize(
    ("name", "sep", "shown"), [("semi.csv", ";", "';'"), ("t.tsv", "\t", "'\\t'")]
)
def test_an_unset_delimiter_is_detected_and_reported(tmp_path, name, sep, shown):
    (tmp_path / name).write_text((HEADER + ROWS).replace(",", sep))
    _, log, report = load(tmp_path, name)
    assert len(log.events) == 3
    assert any(f"delimiter {shown} (detected from the header line)" in n for n in report.notes)


def test_a_tab_can_be_named_in_an_override(tmp_path):
    (tmp_path / "tabs.txt").write_text((HEADER + ROWS).replace(",", "\t"))
    _, log, report = load(
        tmp_path, "tabs.txt", "data.source.events.format=csv", "data.source.events.delimiter=tab"
    )
    assert len(log.events) == 3 and any("delimiter '\\t' (given)" in n for n in report.notes)


def test_parquet_without_rows_is_an_error(tmp_path):
    import pandas as pd

    frame = pd.read_csv(io.StringIO(HEADER + ROWS)).iloc[:0]
    frame.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataFileError, match=r"empty\.parquet: no data rows\. Fix: check"):
        load(tmp_path, "empty.parquet")


# ---- clicked on organic events, and one key for duplicates ------------------------------


def test_clicked_everywhere_without_impressions_loads_with_documented_keys(tmp_path):
    """A Last.fm-like log: every row clicked = 1, no impression column, plays as watch time."""
    rows = "".join(f"u{i % 7},a{i % 5},2011-01-01,{10 + i},1\n" for i in range(40))
    (tmp_path / "plays.csv").write_text("user,artist,ts,plays,clicked\n" + rows)
    _, log, report = load(tmp_path, "plays.csv", *_lastfm_overrides())
    assert len(log.events) == 40 and not log.events["impression"].any()
    assert log.events["clicked"].isna().all()
    (step,) = [s for s in report.steps if s["step"] == "clicked_on_organic_to_missing"]
    assert step["set_missing"] == step["were_1"] == 40 and step["rows_after"] == 40
    assert "clicked_on_organic_to_missing" in str(report)  # the printed report has the line

    with pytest.raises(SchemaError, match="clicked is only defined on impressions"):
        load(tmp_path, "plays.csv", *_lastfm_overrides(), "data.source.strict_clicked=true")


def test_a_log_without_impression_or_clicked_columns_is_read_as_organic_watches(tmp_path):
    """No impression and no clicked column (a plain play log): impression=false, clicked
    missing, one report note; not two "required column is missing" errors."""
    rows = "".join(f"u{i % 7}\ta{i % 5}\t{10 + i}\n" for i in range(40))
    (tmp_path / "plays.dat").write_text("user\tartist\tplays\n" + rows)
    _, log, report = load(
        tmp_path, "plays.dat", "data.source.events.format=csv",
        "data.source.events.columns.learner_id=user", "data.source.events.columns.course_id=artist",
        "data.source.events.columns.ts=null", "data.source.events.fill.ts=2011-01-01",
        "data.source.events.columns.watch_seconds=plays", "data.cleaning.duplicates=first",
    )  # fmt: skip
    assert not log.events["impression"].any() and log.events["clicked"].isna().all()
    assert "read as organic watches (impression=false, clicked missing)" in str(report)
    assert (log.events["ts"] == log.events["ts"].iloc[0]).all()  # one date for every row


def _lastfm_overrides() -> tuple[str, ...]:
    return (
        "data.source.events.columns.learner_id=user",
        "data.source.events.columns.course_id=artist",
        "data.source.events.columns.watch_seconds=plays",
        "data.source.events.fill.impression=false",
        "data.cleaning.duplicates=first",
    )


def test_one_key_sets_the_duplicates_policy_of_loader_and_cleaning(tmp_path):
    case = next(c for c in CASES if c.name == "duplicates.csv")
    (tmp_path / case.name).write_bytes(case.content)
    cfg, log, report = load(tmp_path, case.name, "data.cleaning.duplicates=first")
    assert cfg.data.source.duplicates == "first"
    cleaned = clean(log, instantiate(cfg.data.cleaning), report)
    assert len(log.events) == 4 and len(cleaned.events) == 3
    (step,) = [s for s in report.steps if s["step"] == "duplicates"]
    assert step["policy"] == "first" and step["removed"] == 1


def test_validation_examples_name_file_lines(tmp_path):
    case = next(c for c in CASES if c.name == "duplicates.csv")
    (tmp_path / case.name).write_bytes(case.content)
    with pytest.raises(SchemaError) as err:
        load(tmp_path, case.name)
    (problem,) = err.value.problems
    assert problem.unit == "line" and [r for r, _ in problem.examples] == [2, 5]
    assert problem.source == "duplicates.csv"


def test_a_python_caller_without_a_file_keeps_row_numbers():
    import pandas as pd

    events = pd.read_csv(io.StringIO(HEADER + ROWS.replace("30,0", "-30,0")))
    with pytest.raises(SchemaError) as err:
        EventLog.from_tables(events)
    (problem,) = err.value.problems
    assert problem.unit == "row" and problem.examples[0][0] == 1 and problem.source is None


# ---- the document -------------------------------------------------------------------------


def render_table(messages: dict[str, str]) -> str:
    lines = ["| file | loaded with | message |", "| --- | --- | --- |"]
    for case in CASES:
        how = " ".join(f"`{o}`" for o in case.overrides) or "defaults"
        text = messages[case.name].replace("|", "\\|").replace("\n", "<br>")
        lines.append(f"| `{case.name}` | {how} | {text} |")
    return "\n".join(lines)


def test_the_contract_document_shows_the_actual_messages(tmp_path):
    messages = {}
    for case in CASES:
        folder = tmp_path / case.name.replace(".", "_")
        folder.mkdir()
        messages[case.name] = re.sub(
            re.escape(str(folder)) + r"/?", "<dir>/", message_of(folder, case)
        )
    table = render_table(messages)
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    if os.environ.get("NCF_GLMIX_WRITE_DOCS") == "1":
        text = f"{head}{BEGIN}\n{table}\n{END}{tail}"
        DOC.write_text(text)
    current = text.split(BEGIN)[1].split(END)[0].strip()
    assert current == table, (
        "docs/data_contract.md is out of date; regenerate it with "
        "NCF_GLMIX_WRITE_DOCS=1 python -m pytest tests/test_malformed_files.py"
    )


def test_a_ragged_row_past_the_header_block_is_found_by_the_full_read(tmp_path):
    """The header read sees only pyarrow's first block (1 MiB); a later ragged row fails in
    the multi-threaded full read, whose error carries no line: the rescan finds it."""
    n = 60_000  # about 2.3 MB of rows
    body = "".join(f"l{i % 97},c{i % 13},2024-01-01T00:00:00Z,{i},1,true\n" for i in range(n))
    (tmp_path / "big.csv").write_text(HEADER + body + "x,c1,2024-01-02T00:00:00Z,1\n")
    with pytest.raises(DataFileError) as err:
        load(tmp_path, "big.csv")
    assert err.value.line == n + 2 and "row has 4 fields, the header has 6" in err.value.rule
