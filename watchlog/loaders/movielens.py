"""MovieLens loaders: 100K (u.data/u.item/u.user), 1M/10M (*.dat, "::"), and the CSV
releases (latest, latest-small, 20M, 25M, 32M: ratings.csv/movies.csv).

Every rating becomes one impression event (see `watchlog.loaders.ratings`); movies
become courses (title, genres as skills, first genre as category, release year) and
users become learners. Nothing is dropped: movies without a release date or genres
are kept with missing values, and every such gap is noted in the report. Ratings are
checked (present, finite, on the release's scale) and every problem names its file and
line (`watchlog.loaders._ml_checks`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from watchlog.eventlog import EventLog
from watchlog.loaders._ml_checks import (
    SourceFile,
    check_ratings,
    occupation_names,
    parse_release_dates,
    validate,
)
from watchlog.loaders._read import read_delimited
from watchlog.loaders.ratings import (
    DEFAULT_CLICK_THRESHOLD,
    DEFAULT_CONSTANT_SECONDS,
    DEFAULT_SECONDS_PER_STAR,
    RatingProxy,
    ratings_to_events,
)
from watchlog.report import DataReport

__all__ = [
    "ML1M_OCCUPATIONS",
    "load_movielens",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_csv",
]

# Occupation codes of users.dat, as listed in the MovieLens 1M README.
ML1M_OCCUPATIONS = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
# The genre list of the CSV releases uses this instead of an empty field.
_NO_GENRES = "(no genres listed)"
# "Toy Story (1995)", "Babylon 5 (1994-1998)", "Fight Club (1999) " -> the first year.
_TITLE_YEAR = r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$"
_RATING_TYPES = {"user": pa.int32(), "item": pa.int32(), "rating": pa.float32(), "ts": pa.int64()}
# Rating scales of the releases' READMEs: 100K and 1M whole stars 1-5; 10M (read by the 1M
# loader) and the CSV releases half stars 0.5-5.
_SCALE_100K = (1.0, 5.0)
_SCALE_HALF_STARS = (0.5, 5.0)


def load_movielens(
    path: str | os.PathLike,
    *,
    watch: str = "rating",
    seconds_per_star: float = DEFAULT_SECONDS_PER_STAR,
    seconds: float = DEFAULT_CONSTANT_SECONDS,
    min_rating: float | None = None,
    click_threshold: float = DEFAULT_CLICK_THRESHOLD,
    segment_column: str | None = "occupation",
    duplicates: str = "error",
    report: DataReport | None = None,
) -> EventLog:
    """Any MovieLens release directory, recognised by its ratings file.

    u.data -> `load_movielens_100k`; ratings.dat -> `load_movielens_1m`; ratings.csv ->
    `load_movielens_csv` (which has no users, so `segment_column` does not apply).
    """
    path = Path(path)
    proxy_kw = dict(
        watch=watch,
        seconds_per_star=seconds_per_star,
        seconds=seconds,
        min_rating=min_rating,
        click_threshold=click_threshold,
        duplicates=duplicates,
        report=report,
    )
    if (path / "u.data").is_file():
        return load_movielens_100k(path, segment_column=segment_column, **proxy_kw)
    if (path / "ratings.dat").is_file():
        return load_movielens_1m(path, segment_column=segment_column, **proxy_kw)
    if (path / "ratings.csv").is_file():
        return load_movielens_csv(path, **proxy_kw)
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else "not a directory"
    raise FileNotFoundError(
        f"{path}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv); found {found}"
    )


def load_movielens_100k(
    path: str | os.PathLike,
    *,
    watch: str = "rating",
    seconds_per_star: float = DEFAULT_SECONDS_PER_STAR,
    seconds: float = DEFAULT_CONSTANT_SECONDS,
    min_rating: float | None = None,
    click_threshold: float = DEFAULT_CLICK_THRESHOLD,
    segment_column: str | None = "occupation",
    duplicates: str = "error",
    report: DataReport | None = None,
) -> EventLog:
    """MovieLens 100K: u.data (ratings), u.item + u.genre (movies), u.user (users).

    Courses: course_id, title, published_at (release date, NaT where missing),
    release_year, genres ('|'-joined), category (first genre), skills (= genres),
    language (missing). Learners: learner_id, age, gender, occupation, zip, segment
    (= `segment_column`; None leaves it 'unknown').
    """
    path = Path(path)
    report = report if report is not None else DataReport()
    proxy = RatingProxy(watch, seconds_per_star, seconds, min_rating, click_threshold)

    files = {
        "events": SourceFile(path / "u.data", 1),
        "courses": SourceFile(path / "u.item", 1),
        "learners": SourceFile(path / "u.user", 1),
    }
    ratings = _read(
        path / "u.data", report, delimiter="\t", names=list(_RATING_TYPES), types=_RATING_TYPES
    )
    events = _ratings_frame(ratings, proxy, report, files["events"], _SCALE_100K)

    genre_table = _read(path / "u.genre", report, delimiter="|", names=["genre", "code"])
    genre_names = genre_table.sort_values("code")["genre"].tolist()
    flag_cols = [f"g{i}" for i in range(len(genre_names))]
    item_names = ["course_id", "title", "release_date", "video_release_date", "url", *flag_cols]
    items = _read(
        path / "u.item",
        report,
        delimiter="|",
        names=item_names,
        types={"course_id": pa.int32(), "release_date": pa.string(), "title": pa.string()},
        encoding="latin-1",
    )
    genres, first = _join_flags(items[flag_cols].to_numpy(dtype=bool), genre_names)
    published = parse_release_dates(items["release_date"], files["courses"])
    courses = pd.DataFrame(
        {
            "course_id": items["course_id"],
            "title": items["title"].astype("string"),
            "published_at": published,
            "release_year": published.dt.year.astype(np.float32),
        }
    )
    _add_genres(courses, genres, first, report, why="no genre flag set")
    _note_missing(report, courses, "published_at", "no release date in u.item")

    users = _read(
        path / "u.user",
        report,
        delimiter="|",
        names=["learner_id", "age", "gender", "occupation", "zip"],
        types={"learner_id": pa.int32(), "age": pa.int16(), "zip": pa.string()},
    )
    learners = users.assign(
        gender=users["gender"].astype("category"),
        occupation=users["occupation"].astype("category"),
        zip=users["zip"].astype("string"),
    )
    learners = _with_segment(learners, segment_column, report)
    return validate(events, learners, courses, files, duplicates=duplicates, report=report)


def load_movielens_1m(
    path: str | os.PathLike,
    *,
    watch: str = "rating",
    seconds_per_star: float = DEFAULT_SECONDS_PER_STAR,
    seconds: float = DEFAULT_CONSTANT_SECONDS,
    min_rating: float | None = None,
    click_threshold: float = DEFAULT_CLICK_THRESHOLD,
    segment_column: str | None = "occupation",
    duplicates: str = "error",
    report: DataReport | None = None,
) -> EventLog:
    """MovieLens 1M (and 10M, which has no users.dat): '::'-separated .dat files.

    Courses: course_id, title, release_year (from the title), genres, category (first
    genre), skills (= genres), language (missing). Learners (users.dat): learner_id,
    gender, age (the README's age-group code: 1, 18, 25, 35, 45, 50, 56), occupation
    (code mapped to its README name), zip, segment (= `segment_column`). Without
    users.dat, learners are derived from the ratings with segment 'unknown'.
    """
    path = Path(path)
    report = report if report is not None else DataReport()
    proxy = RatingProxy(watch, seconds_per_star, seconds, min_rating, click_threshold)

    files = {
        "events": SourceFile(path / "ratings.dat", 1),
        "courses": SourceFile(path / "movies.dat", 1),
    }
    ratings = _read(
        path / "ratings.dat",
        report,
        delimiter="::",
        names=list(_RATING_TYPES),
        types=_RATING_TYPES,
    )
    events = _ratings_frame(ratings, proxy, report, files["events"], _SCALE_HALF_STARS)
    movies = _read(
        path / "movies.dat",
        report,
        delimiter="::",
        names=["course_id", "title", "genres"],
        types={"course_id": pa.int32(), "title": pa.string(), "genres": pa.string()},
        encoding="latin-1",
    )
    courses = _movies_to_courses(movies, report)

    learners = None
    if (path / "users.dat").is_file():
        users_file = files["learners"] = SourceFile(path / "users.dat", 1)
        users = _read(
            path / "users.dat",
            report,
            delimiter="::",
            names=["learner_id", "gender", "age", "occupation", "zip"],
            types={
                "learner_id": pa.int32(),
                "gender": pa.string(),
                "age": pa.int16(),
                "occupation": pa.int16(),
                "zip": pa.string(),
            },
        )
        learners = users.assign(
            gender=users["gender"].astype("category"),
            occupation=occupation_names(users["occupation"], users_file, ML1M_OCCUPATIONS),
            zip=users["zip"].astype("string"),
        )
        learners = _with_segment(learners, segment_column, report)
    else:
        report.note(f"{path}: no users.dat, learners derived from ratings (segment 'unknown')")
    return validate(events, learners, courses, files, duplicates=duplicates, report=report)


def load_movielens_csv(
    path: str | os.PathLike,
    *,
    watch: str = "rating",
    seconds_per_star: float = DEFAULT_SECONDS_PER_STAR,
    seconds: float = DEFAULT_CONSTANT_SECONDS,
    min_rating: float | None = None,
    click_threshold: float = DEFAULT_CLICK_THRESHOLD,
    duplicates: str = "error",
    report: DataReport | None = None,
) -> EventLog:
    """MovieLens CSV releases (latest-small, latest, 20M, 25M, 32M).

    ratings.csv (userId, movieId, rating, timestamp) is read with pyarrow's
    multi-threaded reader, only those four columns, straight to int32/float32/int64.
    Courses from movies.csv as in `load_movielens_1m`; there is no user table, so
    learners are derived from the ratings with segment 'unknown' (noted).
    """
    path = Path(path)
    report = report if report is not None else DataReport()
    proxy = RatingProxy(watch, seconds_per_star, seconds, min_rating, click_threshold)
    source = ["userId", "movieId", "rating", "timestamp"]
    ratings = _read(
        path / "ratings.csv",
        report,
        delimiter=",",
        types=dict(zip(source, _RATING_TYPES.values(), strict=True)),
        include=source,
    )
    ratings.columns = list(_RATING_TYPES)
    files = {
        "events": SourceFile(path / "ratings.csv", 2),
        "courses": SourceFile(path / "movies.csv", 2),
    }
    events = _ratings_frame(ratings, proxy, report, files["events"], _SCALE_HALF_STARS)
    movies = _read(
        path / "movies.csv",
        report,
        delimiter=",",
        types={"movieId": pa.int32(), "title": pa.string(), "genres": pa.string()},
        include=["movieId", "title", "genres"],
    ).rename(columns={"movieId": "course_id"})
    courses = _movies_to_courses(movies, report)
    return validate(events, None, courses, files, duplicates=duplicates, report=report)


# ---- helpers ------------------------------------------------------------------------


def _read(
    path: Path,
    report: DataReport,
    *,
    delimiter: str,
    names: list[str] | None = None,
    types: dict[str, pa.DataType] | None = None,
    include: list[str] | None = None,
    encoding: str = "utf8",
) -> pd.DataFrame:
    """One source file to pandas, its row count noted in the report."""
    table = read_delimited(
        path,
        delimiter=delimiter,
        names=names,
        types=types,
        include=include,
        encoding=encoding,
        quoting=delimiter == ",",  # only the CSV releases quote titles
    )
    report.note(f"read {table.num_rows:,} rows from {path.name} ({path})")
    # self_destruct frees each Arrow column once converted: one copy of a 20M-row file, not two.
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _ratings_frame(
    ratings: pd.DataFrame,
    proxy: RatingProxy,
    report: DataReport,
    source: SourceFile,
    scale: tuple[float, float],
) -> pd.DataFrame:
    check_ratings(ratings["rating"], source, scale)
    return ratings_to_events(
        ratings["user"], ratings["item"], ratings["rating"], ratings["ts"], proxy, report
    )


def _join_flags(flags: np.ndarray, names: list[str]) -> tuple[pd.Series, pd.Series]:
    """(n, k) genre flags -> ('|'-joined names, first name), both <NA> where none is set."""
    if flags.shape[1] != len(names):
        raise ValueError(f"u.item has {flags.shape[1]} genre flags but u.genre {len(names)} names")
    # One vectorized pass per genre column (19), never per movie.
    joined = pd.Series("", index=range(len(flags)), dtype="string")
    for j, name in enumerate(names):
        joined = joined + pd.Series(np.where(flags[:, j], name + "|", ""), dtype="string")
    joined = joined.str.rstrip("|").replace("", pd.NA)
    has_any = flags.any(axis=1)
    first = pd.Series(np.asarray(names, dtype=object)[flags.argmax(axis=1)], dtype="string")
    return joined, first.where(has_any)


def _movies_to_courses(movies: pd.DataFrame, report: DataReport) -> pd.DataFrame:
    """movies.dat / movies.csv (course_id, title, genres) -> courses table."""
    title = movies["title"].astype("string")
    year = title.str.extract(_TITLE_YEAR, expand=False)
    courses = pd.DataFrame(
        {
            "course_id": movies["course_id"],
            "title": title,
            "release_year": pd.to_numeric(year).to_numpy(dtype=np.float32, na_value=np.nan),
        }
    )
    genres = movies["genres"].astype("string")
    genres = genres.mask(genres == _NO_GENRES)
    first = genres.str.extract(r"^([^|]+)", expand=False)
    _add_genres(courses, genres, first, report, why=f"listed as {_NO_GENRES!r}")
    _note_missing(report, courses, "release_year", "no (year) at the end of the title")
    return courses


def _add_genres(
    courses: pd.DataFrame, genres: pd.Series, first: pd.Series, report: DataReport, *, why: str
) -> None:
    """genres, category (first genre), skills (= genres), language (missing); noted."""
    courses["genres"] = genres.astype("string").array  # positional: no index alignment
    courses["category"] = pd.Categorical(first)
    courses["skills"] = courses["genres"]
    courses["language"] = pd.Series(pd.NA, index=courses.index, dtype="string").astype("category")
    report.note(
        "courses: category = first genre, skills = genres ('|'-joined), "
        "language missing (MovieLens has none)"
    )
    _note_missing(report, courses, "genres", why)


def _note_missing(report: DataReport, courses: pd.DataFrame, column: str, why: str) -> None:
    missing = int(courses[column].isna().sum())
    if missing:
        ids = courses.loc[courses[column].isna(), "course_id"].head(5).tolist()
        report.note(f"courses: {column} missing for {missing:,} movie(s) ({why}; kept), e.g. {ids}")


def _with_segment(
    learners: pd.DataFrame, segment_column: str | None, report: DataReport
) -> pd.DataFrame:
    """segment = a copy of `segment_column` (None: left to validation's 'unknown')."""
    if segment_column is None:
        report.note("learners: segment 'unknown' (segment_column=None)")
        return learners
    if segment_column not in learners.columns:
        raise ValueError(
            f"segment_column {segment_column!r} is not a learners column; "
            f"available: {list(learners.columns)}"
        )
    report.note(f"learners: segment = {segment_column}")
    return learners.assign(segment=learners[segment_column].astype("string"))
