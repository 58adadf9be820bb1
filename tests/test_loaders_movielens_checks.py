"""MovieLens loaders on broken files: ratings are checked, and every problem names the file
and its line as an editor counts it (.dat files have no header: data row i is line i + 1;
CSV files: i + 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchlog import SchemaError
from watchlog.loaders import load_movielens_1m, load_movielens_csv

RATINGS = "1::1::5::978300760\n1::2::3::978302109\n2::1::4::978301968\n"
MOVIES = "1::Toy Story (1995)::Animation\n2::Heat (1995)::Action\n"
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"
CSV_RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,1,3.5,964982224\n"
CSV_MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation\n"


def ml1m(root: Path, ratings: str = RATINGS, users: str = USERS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text(ratings)
    (root / "movies.dat").write_text(MOVIES)
    (root / "users.dat").write_text(users)
    return root


def ml_csv(root: Path, ratings: str = CSV_RATINGS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(ratings)
    (root / "movies.csv").write_text(CSV_MOVIES)
    return root


def problems(err) -> dict[str, object]:
    return {p.rule: p for p in err.value.problems}


def test_missing_non_finite_and_off_scale_ratings_are_named_by_line(tmp_path):
    bad = RATINGS + "2::2::::978301968\n1::3::nan::1\n2::3::inf::1\n1::4::6::1\n2::4::0::1\n"
    with pytest.raises(SchemaError) as err:
        load_movielens_1m(ml1m(tmp_path / "ml", bad))
    found = problems(err)
    missing = found["rating must not be missing"]  # "nan" is one of pyarrow's null spellings
    assert (missing.source, missing.unit) == ("ratings.dat", "line")
    assert [r for r, _ in missing.examples] == [4, 5]
    assert found["rating must be a finite number"].examples == [(6, float("inf"))]
    off = found["rating must be on the data set's scale 0.5..5"]
    assert off.examples == [(7, 6.0), (8, 0.0)]
    assert "ratings.dat" in str(err.value) and "line 7: 6.0" in str(err.value)


def test_a_missing_rating_is_not_a_watch_under_the_constant_proxy(tmp_path):
    with pytest.raises(SchemaError, match="rating must not be missing"):
        load_movielens_1m(ml1m(tmp_path / "ml", RATINGS + "2::2::::978301968\n"), watch="constant")


def test_csv_ratings_name_lines_after_the_header(tmp_path):
    with pytest.raises(SchemaError) as err:
        load_movielens_csv(ml_csv(tmp_path / "ml", CSV_RATINGS + "3,1,5.5,964982224\n"))
    (problem,) = err.value.problems
    assert (problem.source, problem.examples) == ("ratings.csv", [(4, 5.5)])


def test_validation_problems_name_the_ratings_file_and_line(tmp_path):
    root = ml_csv(tmp_path / "ml", CSV_RATINGS + "3,9,4.0,964982224\n1,1,4.0,964982703\n")
    with pytest.raises(SchemaError) as err:
        load_movielens_csv(root)
    found = {p.column: p for p in err.value.problems}
    unknown = found["course_id"]  # movie 9 is not in movies.csv
    assert (unknown.source, unknown.unit, unknown.examples) == ("ratings.csv", "line", [(4, 9)])
    dup = found["learner_id+course_id+ts+impression"]
    assert dup.source == "ratings.csv" and [r for r, _ in dup.examples] == [2, 5]


def test_an_unknown_occupation_code_names_its_users_dat_line(tmp_path):
    with pytest.raises(SchemaError) as err:
        load_movielens_1m(ml1m(tmp_path / "ml", users=USERS.replace("::16::", "::21::")))
    (problem,) = err.value.problems
    assert (problem.source, problem.unit, problem.examples) == ("users.dat", "line", [(2, 21)])
