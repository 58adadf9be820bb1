"""watchlog: the event schema and its validation, loaders, cleaning, leakage-free splits,
co-watch similarity and GLMix feature encoding. Imports no model package."""

from watchlog.eventlog import DUPLICATE_POLICIES, EventLog
from watchlog.idmap import IdMap, UnknownIdError
from watchlog.report import DataReport
from watchlog.schema import Problem, SchemaError

__all__ = [
    "DUPLICATE_POLICIES",
    "DataReport",
    "EventLog",
    "IdMap",
    "Problem",
    "SchemaError",
    "UnknownIdError",
]
