"""A saved GLMix that scores (learner id, course id) pairs from the learner and course tables.

`GLMixScorer` bundles a fitted `GLMix` with the fitted `EntityFeaturizer` that builds its
designs (encoders, design layout, label factors keyed by ids), so nothing else is needed:

    scorer = GLMixScorer.load("run/glmix/model")
    table = scorer.score_table(learner_ids, course_ids, learners=log.learners,
                               courses=log.courses)
    # learner_id, course_id, glmix_logit, glmix_<coordinate>..., one row per pair, in order
    frame = scorer.score_candidates(candidates, learners=..., courses=...)  # columns added
    scorer.known("learner", ids)  # (n,) bool: has coefficients in the learner coordinate(s)

Pairs are scored in chunks of `chunk_pairs` (memory bounded); the table rows of the entities
the pairs name are encoded once per call (entity level) and gathered per chunk; rows no pair
names are not read (nor checked beyond the id column). No Python loop per pair or entity.

Unknowns are scored, not dropped, and counted in the result's `attrs["glmix_unknown"]`
({"learners": n, "courses": n, "<coordinate>": n, ...}, in pairs):
- an id absent from its table (`<table>` counts): with unknown="missing" (the default) it
  is scored as an entity whose every feature is missing (categorical all-zero or
  `<missing>`, numeric at the training mean, label factors 0); unknown="raise" raises;
- an entity without coefficients in a random-effect coordinate (`<coordinate>` counts):
  that coordinate gives 0, as GLMix does.

Feature values are counted too, in `attrs["glmix_features"]` ({table: {column: {rows,
missing, values, rare, unseen, distinct_unseen, unseen_examples}}}, over the entities the
pairs name): an unseen category encodes as unknown and is logged. A text column none of
whose values (two distinct or more) was seen in training raises: that is another encoding of
the column (codes for labels, another case), which would move every score silently. Ids must
be of one kind on all sides (integers or strings: pairs, the tables' id columns, the model's
id maps); categorical and object columns are read as their values.

`trained_through`: the end of the events the model was fitted on (`glmix.fit_on_split` sets
it on a temporal split: the cutoff of its training rows' window), or None when unknown. The
blend refuses to score a window whose cutoff is before it (`blend.check_serves_fold`): the
model would have learned that window's labels.

Folder (`save`, atomic; no pickle, read with allow_pickle=False): model.json + arrays.npz
(`GLMix.save`'s files, so `GLMix.load` reads the model alone), scorer.json (format version,
featurizer state, trained_through: absent in folders written before it was recorded, which
load as None) and, with label factors, factors.npz (learner_ids, learner, course_ids,
course).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmix.entity_features import ID_COLUMNS, TABLE_NAMES, check_entity_table, rows_of
from glmix.featurizer import EntityFeaturizer
from glmix.io import CorruptFolderError, ids_array, load_model, write_model_files
from glmix.model import GLMix
from glmix.random_effect import RandomEffect
from watchlog.eventlog import utc_timestamp
from watchlog.idmap import id_kind
from watchlog.io import atomic_directory, read_folder_json, to_jsonable

__all__ = [
    "GLMixScorer",
    "MissingColumnError",
    "UnknownEntityError",
    "SCORER_FORMAT",
    "UNKNOWN_MODES",
]

_log = logging.getLogger(__name__)

SCORER_FORMAT = 1
UNKNOWN_MODES = ("missing", "raise")
PREFIX = "glmix_"
_N_EXAMPLES = 5


class UnknownEntityError(KeyError):
    """Pairs name an id absent from its entity table (score_table(..., unknown="raise"))."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class MissingColumnError(KeyError):
    """An entity table lacks a column the model's features read."""

    def __str__(self) -> str:
        return self.args[0]


def _id_series(ids: Any, what: str) -> pd.Series:
    """Ids as a Series of an integer or string dtype (pandas infers `str` from Python
    strings; a pandas input keeps its dtype; categoricals and object columns of one kind are
    read as their values); missing or mixed ids raise."""
    s = ids.reset_index(drop=True) if isinstance(ids, pd.Series) else pd.Series(ids)
    if s.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of ids")
    missing = s.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{what}: ids must not be missing; {int(missing.sum()):,} of {len(s):,} are "
            f"(e.g. positions {np.flatnonzero(missing)[:_N_EXAMPLES].tolist()})"
        )
    kind = id_kind(s.dtype, s)
    if kind is None and len(s):
        raise TypeError(
            f"{what}: ids must be integers or strings (one kind), got dtype {s.dtype} "
            f"(e.g. {s.head(_N_EXAMPLES).tolist()})"
        )
    if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(s.dtype):
        s = s.astype("int64" if kind == "int" else "str")
    return s


def _check_id_kinds(pairs: pd.Series, table: pd.DataFrame, side: str, model_kinds) -> None:
    """The pairs' ids, the table's id column and the model's id maps are all integers or
    all strings: 1 never matches "1", so a mismatch would score every pair as unknown."""
    col, name = ID_COLUMNS[side], TABLE_NAMES[side]
    want = id_kind(pairs.dtype)
    others = [(f"{name}.{col}", id_kind(table[col].dtype, table[col]))] if len(table) else []
    others += [(f"the model's {side} ids ({c})", k) for c, k in model_kinds.items()]
    odd = [(what, k) for what, k in others if k is not None and k != want]
    if len(pairs) and odd:
        raise TypeError(
            f"{side}_ids are {want} ids but "
            + ", ".join(f"{what} are {k}" for what, k in odd)
            + f" (e.g. {pairs.head(3).tolist()}): no id would match; convert one side "
            "(.astype(str) or .astype(int))"
        )


class GLMixScorer:
    """A fitted GLMix plus the fitted featurizer of its designs (see the module docstring).

    model: a fitted GLMix whose random effects are keyed by "learner" and/or "course";
    featurizer: the fitted EntityFeaturizer its designs came from; chunk_pairs: pairs
    scored at a time; trained_through: the end of the events it was fitted on (a time; a
    naive one is UTC), None if unknown (see the module docstring).
    """

    def __init__(
        self,
        model: GLMix,
        featurizer: EntityFeaturizer,
        *,
        chunk_pairs: int = 1_000_000,
        trained_through: Any = None,
    ):
        model._check_fitted()
        featurizer._check_fitted()
        if int(chunk_pairs) < 1:
            raise ValueError(f"GLMixScorer.chunk_pairs: must be >= 1; got {chunk_pairs!r}")
        keys = {c: est.key for c, est in model.coordinates_.items() if _is_random(est)}
        odd = {c: k for c, k in keys.items() if k not in ID_COLUMNS}
        if odd:
            raise ValueError(
                f"GLMixScorer: coordinates {odd} are keyed by something other than 'learner' / "
                "'course'; the scorer builds keys from learner and course ids only"
            )
        self.model = model
        self.featurizer = featurizer
        self.chunk_pairs = int(chunk_pairs)
        self.trained_through = None if trained_through is None else utc_timestamp(trained_through)
        # (table, column)s whose unseen values were logged: a caller scoring chunk by chunk
        # (the blend) gets one warning per column, not one per chunk
        self._warned_unseen: set[tuple[str, str]] = set()

    @property
    def coordinates(self) -> list[str]:
        return list(self.model.coordinates_)

    @property
    def score_columns(self) -> list[str]:
        """glmix_logit, then glmix_<coordinate> for every coordinate."""
        return [f"{PREFIX}logit", *(PREFIX + c for c in self.coordinates)]

    # ---- scoring ------------------------------------------------------------------------------
    def score_table(
        self,
        learner_ids,
        course_ids,
        *,
        learners: pd.DataFrame,
        courses: pd.DataFrame,
        unknown: str = "missing",
    ) -> pd.DataFrame:
        """DataFrame learner_id, course_id, glmix_logit, glmix_<coordinate>... (float64), one
        row per pair (learner_ids[i], course_ids[i]) in the given order; ids keep their dtype.
        learners / courses: entity tables with learner_id / course_id columns, any row order.
        unknown: "missing" | "raise" for ids absent from their table (module docstring).
        attrs["glmix_unknown"]: counts of unknowns per table and per coordinate;
        attrs["glmix_features"]: per table and encoded column, the counts over the entities
        the pairs name (module docstring)."""
        lid = _id_series(learner_ids, "learner_ids")
        cid = _id_series(course_ids, "course_ids")
        if len(lid) != len(cid):
            raise ValueError(
                f"learner_ids and course_ids: one of each per pair; got {len(lid):,} learner ids "
                f"and {len(cid):,} course ids"
            )
        scores, counts, features = self._score(lid, cid, learners, courses, unknown)
        out = pd.DataFrame({ID_COLUMNS["learner"]: lid, ID_COLUMNS["course"]: cid, **scores})
        out.attrs["glmix_unknown"] = counts
        out.attrs["glmix_features"] = features
        return out

    def score_candidates(
        self,
        frame: pd.DataFrame,
        *,
        learners: pd.DataFrame,
        courses: pd.DataFrame,
        unknown: str = "missing",
    ) -> pd.DataFrame:
        """A candidate table (`watchlog.candidates`) with glmix_logit and glmix_<coordinate>
        added, rows in their order (a copy; the input is not changed). Columns of those names
        already present raise. attrs["glmix_unknown"] and ["glmix_features"] as in
        score_table."""
        from watchlog.candidates import validate_candidates

        validate_candidates(frame)
        clash = [c for c in self.score_columns if c in frame.columns]
        if clash:
            raise ValueError(
                f"score_candidates: the candidate table already has column(s) {clash}; drop or "
                "rename them first (scores are never overwritten silently)"
            )
        lid = _id_series(frame[ID_COLUMNS["learner"]], "candidates.learner_id")
        cid = _id_series(frame[ID_COLUMNS["course"]], "candidates.course_id")
        scores, counts, features = self._score(lid, cid, learners, courses, unknown)
        out = frame.assign(**scores)  # a copy: same index, same row order
        out.attrs = {**frame.attrs, "glmix_unknown": counts, "glmix_features": features}
        return out

    def known(self, key: str, ids) -> np.ndarray:
        """(n,) bool: the entity has coefficients in every random-effect coordinate keyed by
        `key` ("learner" or "course"); an unknown one gets 0 from them."""
        coords = [est for est in self.model.coordinates_.values() if _is_random(est)]
        coords = [est for est in coords if est.key == key]
        if not coords:
            have = sorted({est.key for est in self.model.coordinates_.values() if _is_random(est)})
            raise KeyError(
                f"known({key!r}): no random-effect coordinate is keyed by it; keys: {have}"
            )
        s = _id_series(ids, f"known({key!r}) ids")
        out = np.ones(len(s), dtype=bool)
        for est in coords:
            out &= est.codes_of(s, f"known({key!r}) ids") >= 0
        return out

    def _score(self, lid: pd.Series, cid: pd.Series, learners, courses, unknown: str):
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown: must be one of {UNKNOWN_MODES}; got {unknown!r}")
        # every look-up runs once per distinct entity, then is gathered per pair:
        # inv (n,) pair -> distinct entity, uni (u,) the distinct ids
        inv, uni = {}, {}
        for side, ids in (("learner", lid), ("course", cid)):
            codes, uniques = pd.factorize(ids)
            inv[side], uni[side] = codes.astype(np.int64), pd.Index(uniques)
        # the table rows of those entities only, encoded once per call (row-wise encoding:
        # a subset encodes as it would in the whole table); the id columns checked whole
        full = {"learner": learners, "course": courses}
        for side, ids in (("learner", lid), ("course", cid)):
            check_entity_table(full[side], side)
            _check_id_kinds(ids, full[side], side, self._model_id_kinds(side))
        tables = {side: rows_of(full[side], side, uni[side]) for side in full}
        try:
            enc = self.featurizer.encode(tables["learner"], tables["course"])
        except (ValueError, KeyError, TypeError) as err:  # counts are the subset's: say so
            raise _encode_error(self.featurizer, err, tables, full) from err
        features = _feature_counts(self.featurizer, enc, self._warned_unseen)
        pos, absent = {}, {}
        for side in ("learner", "course"):
            p, a = enc.positions(side, uni[side])  # (u,) block rows, (u,) not in the table
            pos[side], absent[side] = p[inv[side]], a[inv[side]]
            if unknown == "raise" and a.any():
                mask, ex = absent[side], uni[side][a][:_N_EXAMPLES].tolist()
                raise UnknownEntityError(
                    f"{side}_ids: {int(mask.sum()):,} of {len(mask):,} pairs have an id that "
                    f"is not in the {TABLE_NAMES[side]} table (e.g. {ex}); pass "
                    "unknown='missing' to score them with missing features"
                )
        entity = self.model.entity_codes(uni)  # {coordinate: (u,) index in its id map}
        keyed = {c: est.key for c, est in self.model.coordinates_.items() if _is_random(est)}
        codes = {c: entity[c][inv[k]] for c, k in keyed.items()}  # (n,) each
        n = len(lid)
        cols = {c: np.empty(n) for c in self.score_columns}  # (n,) float64 each
        counts: dict[str, int] = {
            TABLE_NAMES["learner"]: int(absent["learner"].sum()),
            TABLE_NAMES["course"]: int(absent["course"].sum()),
            **{c: 0 for c in keyed},
        }
        for lo in range(0, n, self.chunk_pairs):
            sl = slice(lo, min(n, lo + self.chunk_pairs))
            designs = self.featurizer.designs(enc, pos["learner"][sl], pos["course"][sl])
            if lo == 0:
                self._check_layout(designs)
            sc = self.model.score_components(
                designs, None, codes={c: v[sl] for c, v in codes.items()}
            )
            cols[f"{PREFIX}logit"][sl] = sc.total
            for c, s in sc.components.items():
                cols[PREFIX + c][sl] = s
            for c, k in sc.n_unknown.items():
                counts[c] += k
        return cols, counts, features

    def _model_id_kinds(self, side: str) -> dict[str, str | None]:
        """{coordinate: "int" | "str" | None} of the random effects keyed by `side`."""
        return {
            c: id_kind(est.ids_.index.dtype, est.ids_.index)
            for c, est in self.model.coordinates_.items()
            if _is_random(est) and est.key == side
        }

    def _check_layout(self, designs) -> None:
        """The featurizer's designs have the model's feature names (else: mismatched files)."""
        for c, est in self.model.coordinates_.items():
            got = tuple(designs[c].names) if c in designs else None
            want = tuple(est.feature_names_[: est.n_features_in_])
            if got != want:
                wanted = set(want)
                diff = None if got is None else [g for g in got if g not in wanted][:_N_EXAMPLES]
                raise ValueError(
                    f"GLMixScorer: coordinate {c!r}: the featurizer's design "
                    f"({'absent' if got is None else f'{len(got)} features'}) is not the one the "
                    f"model was fitted on ({len(want)} features); e.g. unexpected {diff}"
                )

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the scorer folder (module docstring), replacing `path` atomically."""
        path = Path(path)
        state = {
            "type": "GLMixScorer",
            "format_version": SCORER_FORMAT,
            "chunk_pairs": self.chunk_pairs,
            "featurizer": self.featurizer.to_dict(),
            "trained_through": None
            if self.trained_through is None
            else self.trained_through.isoformat(),
        }
        factors = self.featurizer.factor_arrays()
        with atomic_directory(path) as tmp:
            write_model_files(self.model, tmp)
            (tmp / "scorer.json").write_text(json.dumps(to_jsonable(state), indent=2) + "\n")
            if factors is not None:
                arrays = {
                    k: ids_array(v, f"label factor {k}") if k.endswith("_ids") else v
                    for k, v in factors.items()
                }
                np.savez(tmp / "factors.npz", **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> GLMixScorer:
        """Read a folder written by `save`."""
        path = Path(path)
        if not (path / "scorer.json").is_file():
            what = "a bare GLMix (GLMix.load reads it)" if (path / "model.json").is_file() else (
                "no GLMix at all"
            )  # fmt: skip
            raise FileNotFoundError(
                f"{path}: no scorer.json, so not a GLMixScorer folder ({what}); write one with "
                "GLMixScorer.save"
            )
        state = read_folder_json(path / "scorer.json")
        if state.get("type") != "GLMixScorer" or state.get("format_version") != SCORER_FORMAT:
            raise ValueError(
                f"{path}/scorer.json: expected a GLMixScorer of format {SCORER_FORMAT}; got type "
                f"{state.get('type')!r}, format {state.get('format_version')!r}"
            )
        factors = None
        if (path / "factors.npz").is_file():
            try:
                with np.load(path / "factors.npz", allow_pickle=False) as z:
                    factors = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile) as err:
                raise CorruptFolderError(f"{path}/factors.npz: unreadable ({err})") from err
        model = load_model(path)
        try:
            featurizer = EntityFeaturizer.from_dict(state["featurizer"], factors)
            chunk_pairs = state["chunk_pairs"]
        except KeyError as err:
            raise CorruptFolderError(
                f"{path}: incomplete GLMixScorer folder: scorer.json / factors.npz lack {err}"
            ) from err
        try:  # absent from folders written before it was recorded: unknown, not checked
            trained_through = state.get("trained_through")
            return cls(model, featurizer, chunk_pairs=chunk_pairs, trained_through=trained_through)
        except ValueError as err:  # not a time
            raise CorruptFolderError(f"{path}/scorer.json: trained_through: {err}") from err


def _feature_counts(
    featurizer: EntityFeaturizer, enc, warned: set[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """{table: {column: counts}} of the entities encoded; a text column none of whose present
    values (two distinct or more) was seen in training raises: another encoding of the
    column (codes for labels, another case), not new categories; unseen values are logged,
    as a warning the first time for a column (`warned`, added to), at DEBUG after."""
    out = {}
    for side, cols in enc.counts.items():
        name = TABLE_NAMES[side]
        out[name] = {c: dict(cnt) for c, cnt in cols.items()}
        for col, cnt in cols.items():
            if not cnt.get("unseen"):
                continue
            seen = cnt["values"] - cnt["unseen"] - cnt["rare"]
            vocab = featurizer.encoders_[side].encoder_.columns_[col]["categories"]
            if seen == 0 and cnt["distinct_unseen"] >= 2:
                raise ValueError(
                    f"GLMixScorer: {name}.{col}: none of its {cnt['values']:,} values among the "
                    f"{cnt['rows']:,} {side}s the pairs name was seen in training "
                    f"({cnt['distinct_unseen']:,} distinct, e.g. {cnt['unseen_examples']}; "
                    f"training values e.g. {vocab[:_N_EXAMPLES]}): the column holds another "
                    "encoding (codes instead of labels, another case or type?)"
                )
            first = (name, col) not in warned
            warned.add((name, col))
            _log.log(
                logging.WARNING if first else logging.DEBUG,
                "GLMixScorer: %s.%s: %s of %s values are unseen in training (e.g. %s); they "
                "encode as unknown (glmix_features in the result's attrs%s)",
                name, col, f"{cnt['unseen']:,}", f"{cnt['values']:,}", cnt["unseen_examples"],
                "; later calls of this scorer log this column at DEBUG" if first else "",
            )  # fmt: skip
    return out


def _encode_error(
    featurizer: EntityFeaturizer,
    err: Exception,
    tables: dict[str, pd.DataFrame],
    full: dict[str, Any],
) -> ValueError:
    """The encoder's error about the rows of the entities the pairs name (`tables`, a subset
    of the caller's `full` tables) restated for the caller: which table, that its row numbers
    and counts are among those rows only, and the ids at the rows it names (else the first
    ids of the subset). The failing table is found by encoding each alone (error path only)."""
    failing = [side for side in tables if _fails(featurizer, side, tables[side])]
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    rows = getattr(err, "rows", [])  # TableRowsError: the rows it names, else none
    parts = []
    for side in failing or list(tables):  # neither fails alone: name both
        sub, name, col = tables[side], TABLE_NAMES[side], ID_COLUMNS[side]
        ids = pd.Index(sub[col]) if col in sub.columns else pd.Index([])
        named = sorted({r for r in rows if r < len(ids)})[:_N_EXAMPLES]
        at = ids[named].tolist()  # plain Python ids: their repr is the caller's value
        which = (
            f"row {', row '.join(f'{r} = {col} {i!r}' for r, i in zip(named, at, strict=True))}"
            if named
            else f"{col}s e.g. {ids[:_N_EXAMPLES].tolist()}"
        )
        among = (
            f"all {len(sub):,} rows of the {name} table"
            if sub is full[side]
            else f"the {len(sub):,} of its {len(full[side]):,} rows whose {side}s the pairs name"
            " (in table order), not the whole table"
        )
        parts.append(f"{name}: the row numbers and counts below are among {among}; {which}")
    text = f"GLMixScorer: the entities the pairs name do not encode ({'; '.join(parts)}): {msg}"
    return MissingColumnError(text) if isinstance(err, KeyError) else type(err)(text)


def _fails(featurizer: EntityFeaturizer, side: str, table: pd.DataFrame) -> bool:
    """Whether `table` alone fails to encode as the `side` table."""
    try:
        check_entity_table(table, side)
        featurizer.encoders_[side].encode(table)
    except (ValueError, KeyError, TypeError):
        return True
    return False


def _is_random(est) -> bool:
    return isinstance(est, RandomEffect)
