"""Loaders: files -> validated `EventLog`, with what was read and filled in a `DataReport`.

MovieLens (ratings become impression events through an explicit watch proxy):
    load_movielens(path, ...)        any release directory, recognised by its ratings file
    load_movielens_100k(path, ...)   u.data / u.item / u.user
    load_movielens_1m(path, ...)     ratings.dat / movies.dat / users.dat ('::'), also 10M
    load_movielens_csv(path, ...)    ratings.csv / movies.csv: latest(-small), 20M, 25M, 32M
Generic:
    load_tables(events, learners=None, courses=None, ...)   Parquet/CSV with a column mapping

Loaders never drop rows; filters belong to cleaning. A file that cannot be read as it is
raises `DataFileError` (the file, the line, the rule, the fix).
"""

from watchlog.loaders._errors import DataFileError
from watchlog.loaders.movielens import (
    ML1M_OCCUPATIONS,
    load_movielens,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_csv,
)
from watchlog.loaders.ratings import WATCH_PROXIES, RatingProxy, ratings_to_events
from watchlog.loaders.tabular import CONTRACT_COLUMNS, FORMATS, TableSpec, load_tables, read_table

__all__ = [
    "CONTRACT_COLUMNS",
    "DataFileError",
    "FORMATS",
    "ML1M_OCCUPATIONS",
    "WATCH_PROXIES",
    "RatingProxy",
    "TableSpec",
    "load_movielens",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_csv",
    "load_tables",
    "ratings_to_events",
    "read_table",
]
