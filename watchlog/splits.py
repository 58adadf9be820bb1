"""Leakage-free splits.

A `Fold` is what a model may see (`inputs`) and what it is judged on (`labels`).

- temporal (the default for the platform): global cutoffs; inputs strictly before the
  cutoff, labels in [cutoff, label_end). `rolling_folds` gives earlier cutoffs for training.
  An optional blend window before validation (train -> blend -> validation -> test) holds
  the labels a blender is fitted on; `Split.for_blend_models` is the same split moved back
  so that models trained on it see nothing at or after the blend window's start.
- per_learner (leave-latest-out): each learner's latest event(s) are labels. Events at one
  timestamp have no order in time: a learner whose labels would be chosen among tied events
  is an error unless `ties` states a rule ("order": the log's order, i.e. the source file's
  row order; "random": a seeded draw); the counts are in the report either way.
- random (stratified per learner or per course, or plain): only to reproduce published
  setups; the stratified one draws as the recommenders library does (`watchlog.stratify`).
  All events of one (learner, course) pair go to the same side.

`assert_no_leakage` checks each kind's rule and is called on every fold built here.
Folds hold row subsets of `log.events` with its index, which is the event's position
in the time-sorted log: a stable event id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from watchlog.eventlog import EventLog, ts_ns, utc_ns
from watchlog.report import DataReport
from watchlog.stratify import recommenders_parts

__all__ = [
    "Fold",
    "Split",
    "LeakageError",
    "assert_no_leakage",
    "temporal_split",
    "rolling_folds",
    "leave_latest_out",
    "TIE_RULES",
    "time_ties",
    "stratified_split",
    "STRATIFIED_DRAWS",
    "STRATIFY_BY",
    "random_split",
]


class LeakageError(AssertionError):
    """A label is not strictly after the inputs it is predicted from."""


@dataclass(frozen=True, eq=False)
class Fold:
    name: str
    kind: str  # "temporal" | "per_learner" | "random"
    inputs: pd.DataFrame
    labels: pd.DataFrame
    cutoff: pd.Timestamp | None = None  # temporal only
    label_end: pd.Timestamp | None = None  # temporal only
    # per_learner only: how events at one timestamp were ordered. "position": the log's order
    # (time, then source row), so a label is also after its inputs by position; "random": a
    # seeded draw, so a label is only never earlier in time than its learner's inputs.
    tie_rule: str = "position"

    def lookback(self, days: float | None) -> pd.DataFrame:
        """Inputs within `days` before the cutoff (all inputs when days is None); temporal folds only."""
        if days is None:
            return self.inputs
        if self.kind != "temporal":
            raise ValueError(
                f"fold {self.name!r}: a lookback window needs a temporal cutoff, this fold is {self.kind}"
            )
        start = utc_ns(self.cutoff - pd.Timedelta(days=days))
        return self.inputs.iloc[
            int(np.searchsorted(ts_ns(self.inputs["ts"]), start, side="left")) :
        ]

    def describe(self) -> dict[str, Any]:
        """Counts for the data report: rows, learners, cold-start learners and courses."""
        inp, lab = self.inputs, self.labels
        # Presence per index by bincount: linear in rows, no sort of tens of millions of ids.
        in_l, lab_l = _present(inp["learner_idx"], lab["learner_idx"])
        in_c, lab_c = _present(inp["course_idx"], lab["course_idx"])
        out: dict[str, Any] = {
            "input_events": len(inp),
            "label_events": len(lab),
            "label_learners": int(lab_l.sum()),
            "label_learners_without_inputs": int((lab_l & ~in_l).sum()),
            "label_courses_unseen_in_inputs": int((lab_c & ~in_c).sum()),
        }
        if "watched" in lab.columns:
            out["label_watches"] = int(lab["watched"].sum())
            out["input_watches"] = int(inp["watched"].sum())
        if "impression" in lab.columns:
            out["label_impressions"] = int(lab["impression"].sum())
        if self.cutoff is not None:
            out["cutoff"] = str(self.cutoff)
            out["label_end"] = str(self.label_end)
        return out


@dataclass(frozen=True, eq=False)
class Split:
    kind: str
    test: Fold
    valid: Fold | None = None
    params: dict[str, Any] = field(default_factory=dict)
    blend: Fold | None = None  # temporal only: labels in [blend_start, valid_start)

    def folds(self) -> list[Fold]:
        return [f for f in (self.blend, self.valid, self.test) if f is not None]

    def for_blend_models(self) -> Split:
        """The split that models feeding the blender are trained on: every window moved back
        so that its test window is the blend window. Its validation window has the length of
        this split's, ending at the blend start; its events are this split's before the
        validation start. So a model fitted (and refitted) on it sees no event at or after the
        blend start, and its test snapshot is what the blender is fitted on."""
        if self.kind != "temporal" or self.blend is None or self.valid is None:
            raise ValueError(
                f"for_blend_models: needs a temporal split with blend and validation windows; "
                f"this {self.kind} split has blend={self.blend is not None}, "
                f"valid={self.valid is not None}"
            )
        blend_start, valid_start = self.blend.cutoff, self.valid.cutoff
        valid_len = self.test.cutoff - valid_start
        events = self.valid.inputs  # every selected event before the validation start
        if events["ts"].iloc[0] >= blend_start - valid_len:
            raise ValueError(
                f"for_blend_models: no events before {blend_start - valid_len} (the blend start "
                f"{blend_start} minus the validation length {valid_len}); shorten the windows"
            )
        valid = _temporal_fold(events, "valid", blend_start - valid_len, blend_start)
        test = _temporal_fold(events, "test", blend_start, valid_start)
        # The windows' own params, as temporal_split would give them for these cutoffs: the
        # events at or after the shifted end are this split's validation and test labels
        # and whatever was after its end.
        after = (
            self.params.get("events_after_end", 0) + len(self.valid.labels) + len(self.test.labels)
        )
        params = {
            **self.params,
            "blend_start": None,
            "valid_start": valid.cutoff,
            "test_start": test.cutoff,
            "end": test.label_end,
            "events_after_end": int(after),
            "shifted_to": "blend",
        }
        return Split("temporal", test, valid, params)

    def earliest_cutoff(self) -> pd.Timestamp | None:
        """The earliest time from which any fold of this split holds labels: its first cutoff,
        or with a blend window, the validation cutoff of `for_blend_models` (the blend start
        minus the validation length). None for splits without cutoffs (not temporal). Data
        choices made before the split (e.g. cleaning's activity filters) may only look at
        events before it."""
        if self.kind != "temporal":
            return None
        cutoffs = [fold.cutoff for fold in self.folds()]
        if self.blend is not None and self.valid is not None:
            cutoffs.append(self.blend.cutoff - (self.test.cutoff - self.valid.cutoff))
        return min(cutoffs)

    def report(self, report: DataReport) -> None:
        for fold in self.folds():
            report.add_split(fold.name, kind=fold.kind, **fold.describe())


# ---- leakage ------------------------------------------------------------------------------
def assert_no_leakage(fold: Fold) -> None:
    """Raise LeakageError unless the fold obeys its kind's rule (see module doc)."""
    inp, lab = fold.inputs, fold.labels
    if fold.kind == "temporal":
        its, lts = ts_ns(inp["ts"]), ts_ns(lab["ts"])
        cut, end = utc_ns(fold.cutoff), utc_ns(fold.label_end)
        late = its >= cut
        early = (lts < cut) | (lts >= end)
        if late.any() or early.any():
            raise LeakageError(
                f"fold {fold.name!r}: {int(late.sum()):,} input events at or after the cutoff {fold.cutoff} "
                f"(e.g. rows {inp.index[late][:5].tolist()}), {int(early.sum()):,} label events outside "
                f"[{fold.cutoff}, {fold.label_end}) (e.g. rows {lab.index[early][:5].tolist()})"
            )
    elif fold.kind == "per_learner":
        # Per learner: last input position < first label position, and never a later timestamp.
        li, ll = inp["learner_idx"].to_numpy(), lab["learner_idx"].to_numpy()
        n = int(max(li.max(initial=-1), ll.max(initial=-1))) + 1
        last_ts = np.full(n, np.iinfo(np.int64).min)
        np.maximum.at(last_ts, li, ts_ns(inp["ts"]))
        bad = ts_ns(lab["ts"]) < last_ts[ll]
        if fold.tie_rule == "position":
            last_pos = np.full(n, -1, dtype=np.int64)
            np.maximum.at(last_pos, li, inp.index.to_numpy())
            bad |= lab.index.to_numpy() <= last_pos[ll]
        else:  # ties were drawn: same-time labels may precede inputs by position, never share one
            bad |= np.isin(lab.index.to_numpy(), inp.index.to_numpy())
        if bad.any():
            raise LeakageError(
                f"fold {fold.name!r}: {int(bad.sum()):,} label events are not after all of their learner's inputs "
                f"(e.g. rows {lab.index[bad][:5].tolist()})"
            )
    elif fold.kind == "random":
        shared_rows = inp.index.intersection(lab.index)
        ip = _pair_key(inp)
        shared_pairs = np.isin(_pair_key(lab), ip)
        if len(shared_rows) or shared_pairs.any():
            raise LeakageError(
                f"fold {fold.name!r}: {len(shared_rows):,} rows and {int(shared_pairs.sum()):,} (learner, course) pairs "
                f"are in both inputs and labels (e.g. rows {lab.index[shared_pairs][:5].tolist()})"
            )
    else:
        raise ValueError(f"unknown fold kind {fold.kind!r}")


def _present(*columns: pd.Series) -> list[np.ndarray]:
    """For each column of dense indices, a boolean 'occurs' array over a common range."""
    arrays = [c.to_numpy() for c in columns]
    n = max((int(a.max()) + 1 for a in arrays if len(a)), default=0)
    return [np.bincount(a, minlength=n) > 0 for a in arrays]


def _pair_key(ev: pd.DataFrame) -> np.ndarray:
    return ev["learner_idx"].to_numpy(np.int64) << 32 | ev["course_idx"].to_numpy(np.int64)


def _checked(fold: Fold) -> Fold:
    assert_no_leakage(fold)
    return fold


# ---- ties in time ---------------------------------------------------------------------------
FEW_TIMESTAMPS_SHARE = 0.9  # this share of events at TOP_TIMESTAMPS instants: no usable order
TOP_TIMESTAMPS = 3


def time_ties(events: pd.DataFrame) -> dict[str, Any]:
    """How much order in time time-sorted `events` carry: distinct timestamps, the share of
    events at the `TOP_TIMESTAMPS` most common ones, and `few_timestamps` when that share is at
    least `FEW_TIMESTAMPS_SHARE` (e.g. every event stamped with one load date)."""
    ts = ts_ns(events["ts"])
    if len(ts) == 0:
        return {"distinct": 0, "top_n": 0, "top_share": 0.0, "few_timestamps": False}
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    runs = np.sort(np.diff(np.r_[starts, len(ts)]))[::-1]  # events per distinct timestamp
    top = runs[:TOP_TIMESTAMPS]
    share = float(top.sum() / len(ts))
    few = share >= FEW_TIMESTAMPS_SHARE and len(ts) > TOP_TIMESTAMPS
    return {"distinct": len(runs), "top_n": len(top), "top_share": share, "few_timestamps": few}


# ---- temporal -----------------------------------------------------------------------------
def _temporal_fold(events: pd.DataFrame, name: str, cutoff, label_end) -> Fold:
    ts = ts_ns(events["ts"])
    cut = int(np.searchsorted(ts, utc_ns(cutoff), side="left"))
    stop = int(np.searchsorted(ts, utc_ns(label_end), side="left"))
    return _checked(
        Fold(
            name,
            "temporal",
            events.iloc[:cut],
            events.iloc[cut:stop],
            pd.Timestamp(cutoff),
            pd.Timestamp(label_end),
        )
    )


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def temporal_split(
    log: EventLog,
    events: pd.DataFrame | None = None,
    *,
    valid_start=None,
    test_start=None,
    end=None,
    valid_days: float | None = None,
    test_days: float | None = None,
    blend_start=None,
    blend_days: float | None = None,
    report: DataReport | None = None,
) -> Split:
    """Global cutoffs: train [.., valid_start), valid [valid_start, test_start), test [test_start, end).

    Give dates, or `test_days` / `valid_days` counted back from `end` (default: the
    midnight after the last event). valid_days=0 and no valid_start means no validation fold.
    The valid fold's inputs are the training window; the test fold's inputs are
    training + validation windows (a model may be refitted on them). `events`
    (default: all of the log's) must be a time-ordered subset of `log.events`.

    blend_start / blend_days (counted back from valid_start) add a blend window
    [blend_start, valid_start) before validation: `split.blend` has the events before
    blend_start as inputs and the window as labels (train -> blend -> valid -> test). It
    needs a validation window. The model folds are unchanged by it.
    """
    ev = log.events if events is None else events
    if len(ev) == 0:
        raise ValueError("temporal_split: the event log is empty")
    # Default end: the midnight (UTC) after the last event, so cutoffs fall on day boundaries.
    end = _utc(end) if end is not None else ev["ts"].iloc[-1].floor("D") + pd.Timedelta(days=1)
    if test_start is None:
        if test_days is None:
            raise ValueError("temporal_split: give test_start or test_days")
        test_start = end - pd.Timedelta(days=test_days)
    test_start = _utc(test_start)
    if valid_start is None and valid_days:
        valid_start = test_start - pd.Timedelta(days=valid_days)
    if blend_start is None and blend_days:
        if valid_start is None:
            raise ValueError("temporal_split: a blend window needs a validation window")
        blend_start = _utc(valid_start) - pd.Timedelta(days=blend_days)
    first = ev["ts"].iloc[0]
    ties = time_ties(ev)
    if ties["few_timestamps"]:
        raise ValueError(
            f"temporal_split: the events carry (almost) no order in time: {ties['top_share']:.0%} "
            f"of the {len(ev):,} events share {ties['top_n']} timestamp(s) "
            f"({ties['distinct']:,} distinct in all, from {first} to {ev['ts'].iloc[-1]}), so "
            "cutoffs in time cannot separate inputs from labels. Use a split that does not need "
            "time: split=stratified (per learner, the recommenders library's draw) or "
            "split=random; split=leave_latest needs an order within each learner too"
        )
    cuts = [c for c in (blend_start, valid_start, test_start) if c is not None]
    if (
        any(_utc(c) <= first for c in cuts)
        or test_start > end
        or (valid_start is not None and _utc(valid_start) >= test_start)
        or (
            blend_start is not None
            and (valid_start is None or _utc(blend_start) >= _utc(valid_start))
        )
    ):
        raise ValueError(
            f"temporal_split: need first event ({first}) < blend_start ({blend_start}) < "
            f"valid_start ({valid_start}) < test_start ({test_start}) <= end ({end}); "
            "blend_start is optional, and needs valid_start. Shorter windows fit shorter "
            "data (split.fn.valid_days / test_days / blend_days; blend_days=0: no blend window); "
            f"the events span {ev['ts'].iloc[-1] - first}. Data whose timestamps carry little "
            "order fits split=stratified or split=random"
        )
    valid = (
        _temporal_fold(ev, "valid", _utc(valid_start), test_start)
        if valid_start is not None
        else None
    )
    blend = (
        _temporal_fold(ev, "blend", _utc(blend_start), _utc(valid_start))
        if blend_start is not None
        else None
    )
    test = _temporal_fold(ev, "test", test_start, end)
    empty = [f for f in (blend, valid, test) if f is not None and len(f.labels) == 0]
    if empty:
        windows = ", ".join(f"{f.name} [{f.cutoff.date()}, {f.label_end.date()})" for f in empty)
        raise ValueError(
            f"temporal_split: no events in the window(s) {windows}: a window without labels "
            f"can neither choose nor judge a model. The {len(ev):,} events span {first} to "
            f"{ev['ts'].iloc[-1]}; move the windows into the data (split.fn.end, "
            "split.fn.test_days / valid_days / blend_days)"
        )
    after = int((ts_ns(ev["ts"]) >= utc_ns(end)).sum())
    split = Split(
        "temporal",
        test,
        valid,
        params={
            "blend_start": blend_start,
            "valid_start": valid_start,
            "test_start": test_start,
            "end": end,
            "events_after_end": after,
        },
        blend=blend,
    )
    if report is not None:
        split.report(report)
        if after:
            report.note(f"temporal split: {after:,} events at or after end={end} are in no window")
    return split


def rolling_folds(
    log: EventLog,
    *,
    before,
    n_cutoffs: int,
    horizon_days: float,
    spacing_days: float | None = None,
    events: pd.DataFrame | None = None,
) -> list[Fold]:
    """Training folds at cutoffs before `before`: labels [c, c + horizon) never reach `before`.

    Cutoffs are `before - horizon - k * spacing` for k = 0 .. n_cutoffs - 1 (spacing
    defaults to the horizon), latest first; each fold is leakage-checked.
    """
    if n_cutoffs < 1 or horizon_days <= 0:
        raise ValueError(
            f"rolling_folds: need n_cutoffs >= 1 and horizon_days > 0, got {n_cutoffs}, {horizon_days}"
        )
    ev = log.events if events is None else events
    before = _utc(before)
    horizon = pd.Timedelta(days=horizon_days)
    spacing = pd.Timedelta(days=spacing_days if spacing_days is not None else horizon_days)
    first = ev["ts"].iloc[0]
    folds = []
    for k in range(n_cutoffs):  # a handful of cutoffs, each a searchsorted slice
        cutoff = before - horizon - k * spacing
        if cutoff <= first:
            raise ValueError(
                f"rolling_folds: cutoff {k} ({cutoff}) is not after the first event ({first}); use fewer or closer cutoffs"
            )
        folds.append(_temporal_fold(ev, f"train_{k}", cutoff, cutoff + horizon))
    return folds


# ---- per learner ----------------------------------------------------------------------------
TIE_RULES = ("error", "order", "random")


def leave_latest_out(
    log: EventLog,
    events: pd.DataFrame | None = None,
    *,
    n_test: int = 1,
    n_valid: int = 1,
    min_inputs: int = 1,
    ties: str = "error",
    seed: int = 0,
    report: DataReport | None = None,
) -> Split:
    """Each learner's latest `n_test` events are test labels, the `n_valid` before them validation.

    A learner gets test labels only with at least n_test + min_inputs events, and
    validation labels only with n_test + n_valid + min_inputs; otherwise those events
    stay in the inputs (counted in the report, never dropped).

    ties: what decides between events at one timestamp where a label is chosen among them
    (a learner's test label tied with the event before it, or its validation label with the
    latest input). "error" (default): raise, with the counts, examples and the fix; "order":
    the log's order, i.e. the source file's row order (what earlier versions did, silently);
    "random": a draw seeded by `seed`, independent of the input's row order (the uniforms are
    drawn in the events' (learner, time, course, impression) order). The tied learners are
    counted in `params` and the report.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"leave_latest_out: ties must be one of {TIE_RULES}, got {ties!r}")
    ev = log.events if events is None else events
    li = ev["learner_idx"].to_numpy()
    ts = ts_ns(ev["ts"])
    pos = ev.index.to_numpy()  # the log's order: time, then the source file's row order
    tiebreak = _content_uniforms(ev, seed) if ties == "random" else pos
    order = np.lexsort((tiebreak, ts, li))
    counts = np.bincount(li, minlength=log.n_learners)
    sorted_l = li[order]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    from_end = np.empty(len(ev), dtype=np.int64)
    from_end[order] = first[sorted_l] + counts[sorted_l] - np.arange(len(ev))  # 1 = latest
    n = counts[li]
    is_test = (from_end <= n_test) & (n >= n_test + min_inputs)
    is_valid = (
        (from_end > n_test) & (from_end <= n_test + n_valid) & (n >= n_test + n_valid + min_inputs)
    )
    tied = _tied_boundaries(ts[order], from_end[order], sorted_l,
                            {"test": (n_test, is_test[order]),
                             "valid": (n_test + n_valid, is_valid[order]) if n_valid else None})  # fmt: skip
    if ties == "error" and any(t["learners"] for t in tied.values()):
        raise ValueError(_ties_message(log, ev, tied, n_test, n_valid, min_inputs))
    test = _checked(Fold("test", "per_learner", ev[~is_test], ev[is_test], tie_rule=_rule(ties)))
    valid = (
        _checked(
            Fold(
                "valid", "per_learner", ev[~is_test & ~is_valid], ev[is_valid], tie_rule=_rule(ties)
            )
        )  # fmt: skip
        if n_valid
        else None
    )
    active = counts > 0
    params = {
        "n_test": n_test,
        "n_valid": n_valid,
        "min_inputs": min_inputs,
        "ties": ties,
        "learners_without_test": int((active & (counts < n_test + min_inputs)).sum()),
        "learners_without_valid": int((active & (counts < n_test + n_valid + min_inputs)).sum())
        if n_valid
        else 0,
        **{f"learners_with_tied_{k}_label": t["learners"] for k, t in tied.items()},
    }
    if ties == "random":
        params["seed"] = seed
    split = Split("per_learner", test, valid, params)
    if report is not None:
        split.report(report)
        report.note(
            f"leave-latest-out: {params['learners_without_test']:,} learners too short for a test label, "
            f"{params['learners_without_valid']:,} for a validation label (their events stay inputs)"
        )
        if any(t["learners"] for t in tied.values()):
            rule = ("the log's order (the source file's row order)" if ties == "order"
                    else f"a random draw (seed {seed})")  # fmt: skip
            report.note(
                "leave-latest-out ties: "
                + ", ".join(f"{t['learners']:,} learners' {k} label" for k, t in tied.items())
                + f" chosen among events at one timestamp, by {rule} (split.fn.ties)"
            )
    return split


def _content_uniforms(ev: pd.DataFrame, seed: int) -> np.ndarray:
    """One seeded uniform per event, drawn in an order the events' content fixes (learner,
    time, course, impression; indices come from sorted ids), not their rows' order: the same
    events given in another row order get the same draw."""
    keys = [ev["learner_idx"].to_numpy(), ts_ns(ev["ts"]), ev["course_idx"].to_numpy()]
    if "impression" in ev.columns:
        keys.append(ev["impression"].to_numpy(dtype=bool))
    content_order = np.lexsort(keys[::-1])  # lexsort's last key is the primary one
    uniforms = np.empty(len(ev))
    uniforms[content_order] = np.random.default_rng(seed).random(len(ev))
    return uniforms


def _rule(ties: str) -> str:
    return "random" if ties == "random" else "position"


def _tied_boundaries(ts_sorted, from_end_sorted, learner_sorted, bounds):
    """Per label kind: learners whose label at the boundary (the event `k` from the end, a
    label) shares its timestamp with the event just before it (k + 1 from the end), so time
    alone does not decide it. Arrays are in (learner, time, tie-break) order."""
    out = {}
    same_as_previous = np.r_[False, (ts_sorted[1:] == ts_sorted[:-1])
                             & (learner_sorted[1:] == learner_sorted[:-1])]  # fmt: skip
    for kind, bound in bounds.items():
        if bound is None:
            continue
        k, is_label = bound
        at = (from_end_sorted == k) & is_label & same_as_previous
        learners = np.unique(learner_sorted[at])
        out[kind] = {"learners": int(learners.size), "examples": learners[:5]}
    return out


def _ties_message(
    log: EventLog, ev: pd.DataFrame, tied, n_test: int, n_valid: int, min_inputs: int
) -> str:
    li = ev["learner_idx"].to_numpy()
    latest = pd.Series(ts_ns(ev["ts"])).groupby(li).transform("max").to_numpy()
    at_latest = np.bincount(li[ts_ns(ev["ts"]) == latest], minlength=log.n_learners)
    parts = []
    for kind, t in tied.items():
        if not t["learners"]:
            continue
        examples = t["examples"][:3]
        plain_ids = log.learner_ids.index[examples].tolist()  # 2, not np.int32(2)
        ex = ", ".join(
            f"{learner!r} ({at_latest[i]:,} events at its latest timestamp)"
            for learner, i in zip(plain_ids, examples, strict=True)
        )
        parts.append(f"{t['learners']:,} learners' {kind} label (e.g. learner {ex})")
    labelled = int((np.bincount(li, minlength=log.n_learners) >= n_test + min_inputs).sum())
    return (
        "leave_latest_out: ties in time decide the labels of "
        + "; ".join(parts)
        + f" (of {labelled:,} learners with a test label): their latest {n_test + n_valid} "
        "events are not ordered by time, and the file's row order would pick them. Fix: "
        "split.fn.ties=random (a seeded draw, split.fn.seed) or split.fn.ties=order (the source "
        "file's row order, if it means something); when the timestamps carry no order at all "
        "(e.g. every event at one instant), split=stratified or split=random fit the data"
    )


# ---- random (published setups only) ---------------------------------------------------------
def _pairs(ev: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique pair keys, learner of each pair, inverse: row -> pair)."""
    keys, inverse = np.unique(_pair_key(ev), return_inverse=True)
    return keys, (keys >> 32).astype(np.int64), inverse


STRATIFIED_DRAWS = ("recommenders", "ours")
STRATIFY_BY = ("learner", "course")


def stratified_split(
    log: EventLog,
    events: pd.DataFrame | None = None,
    *,
    test_ratio: float = 0.25,
    valid_ratio: float = 0.0,
    seed: int = 42,
    draw: str = "recommenders",
    by: str = "learner",
    report: DataReport | None = None,
) -> Split:
    """Per learner (or per course: `by`), a random `test_ratio` of their pairs are test labels;
    `valid_ratio` of the remaining training pairs, by the same rule, are validation labels.
    Pairs, not rows, are split: all events of a (learner, course) pair go to the same side.

    draw="recommenders" (default) is Microsoft recommenders' `python_stratified_split(data,
    ratio=1 - test_ratio, seed=seed, filter_by="user" | "item")` pair for pair (checked against
    recommenders 1.2.1; see `watchlog.stratify`): one uniform per pair drawn in the input's row
    order, ranks within the group in that random order, round(ratio * n) half-to-even kept
    for training. The input's row order is the `source_row` column when the events have one
    (the rating loaders keep each rating's line in the file, the order the library reads), else
    the log's time order (noted in the report). Validation is the library called a second time
    on its own training output, with the same seed and ratio 1 - valid_ratio: the test set stays
    exactly the published 2-way one (a single 3-way call, ratio=[train, valid, test], rounds
    the cumulative shares anew and can move pairs at .5 boundaries in or out of the test set).
    A valid_ratio > 0 that the per-group rounding leaves without any validation pair (every
    group too small) is an error naming the group sizes, not a split without validation.

    draw="ours" is this project's earlier rule with NumPy's default_rng: in a random order, pair
    r of n is kept for training when r / n <= 1 - test_ratio (floor instead of half-to-even
    rounding, a different generator): the same rule, another draw. Kept to reproduce results
    recorded with it.

    Differences from the library: no `min_rating` filter (its default, 1, filters nothing; drop
    short learners or courses beforehand in cleaning); group values sort as the log's id maps
    do (sorted ids, or first-seen order for mixed id types; the library sorts the values), which
    matters only for a second (validation) call; repeated pairs are not split: the draw is
    over the first event of each pair in input order, as if the library had been given the
    events with duplicate pairs dropped (keep first).
    """
    for name, r in (("test_ratio", test_ratio), ("valid_ratio", valid_ratio)):
        if not 0 <= r < 1:
            raise ValueError(f"stratified_split: {name} must be in [0, 1), got {r}")
    if draw not in STRATIFIED_DRAWS:
        raise ValueError(
            f"stratified_split: draw must be one of {STRATIFIED_DRAWS}, got {draw!r} "
            "(split.fn.draw: recommenders reproduces the recommenders library's split)"
        )
    if by not in STRATIFY_BY:
        raise ValueError(
            f"stratified_split: by must be one of {STRATIFY_BY}, got {by!r} (the library's "
            "filter_by='user' is by=learner, filter_by='item' is by=course)"
        )
    ev = log.events if events is None else events
    keys, learner, inverse = _pairs(ev)
    group = learner if by == "learner" else (keys & 0xFFFFFFFF).astype(np.int64)
    params: dict[str, Any] = dict(
        test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed, draw=draw, by=by
    )
    if draw == "ours":
        is_test, is_valid = _stratify_ours(group, test_ratio, valid_ratio, seed)
    else:
        order_column = "source_row" if "source_row" in ev.columns else None
        input_order = _pair_input_order(ev, inverse, len(keys), order_column)
        is_test, is_valid = _stratify_recommenders(
            group, input_order, test_ratio, valid_ratio, seed
        )
        params["input_order"] = order_column or "time"
        if order_column is None and report is not None:
            report.note(
                "stratified split (recommenders draw): the events have no source_row column, "
                "so the draw follows the log's time order; a library run on the source file "
                "in its own row order gives another split"
            )
    if valid_ratio and not is_valid.any():
        raise ValueError(_no_validation_message(group[~is_test], valid_ratio, draw, by))
    return _random_kind_split(ev, is_test[inverse], is_valid[inverse], "stratified", params, report)


def _no_validation_message(train_group: np.ndarray, valid_ratio: float, draw: str, by: str) -> str:
    """Why the per-group rounding left no validation pair: the groups' training pair counts."""
    sizes = np.bincount(train_group)
    sizes = sizes[sizes > 0]
    values, groups = np.unique(sizes, return_counts=True)
    common = np.argsort(-groups, kind="stable")[:5]
    counts = ", ".join(f"{groups[i]:,} with {values[i]:,}" for i in common)
    rule = (
        "round((1 - valid_ratio) x n), half to even, of a group's n training pairs stay training"
        if draw == "recommenders"
        else "pair r of a group's n training pairs (random order) is validation when "
        "r / n > 1 - valid_ratio"
    )
    return (
        f"stratified_split: valid_ratio={valid_ratio} gives no validation pair: {rule}, and "
        f"every {by}'s n is too small for that to leave one out ({len(sizes):,} {by}s: "
        f"{counts} training pairs; at most {int(sizes.max()):,}). A {by} with n training "
        f"pairs gets one once valid_ratio x n > 0.5 (about); raise split.fn.valid_ratio, or "
        "set it to 0 for no validation fold"
    )


def _library_ratio(share: float) -> float:
    """1 - share as the decimal a caller would write for the library (1 - 0.18 is
    0.8200000000000001 in floats, the literal 0.82 is not): the rounding at .5 depends on it."""
    return round(1.0 - share, 12)


def _pair_input_order(
    ev: pd.DataFrame, inverse: np.ndarray, n_pairs: int, column: str | None
) -> np.ndarray:
    """Pairs in the library's input order: by the first input position of any of their events."""
    position = ev[column].to_numpy(np.int64) if column else ev.index.to_numpy(np.int64)
    first = np.full(n_pairs, np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, position)
    return np.argsort(first, kind="stable")


def _stratify_recommenders(
    group: np.ndarray, input_order: np.ndarray, test_ratio: float, valid_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(is_test, is_valid) per pair: the library's draw, then a second call on its training
    output (rows in the order the library returns them) for validation."""
    n = len(group)
    is_test, is_valid = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if test_ratio:
        part, out_order = recommenders_parts(group[input_order], seed, _library_ratio(test_ratio))
        is_test[input_order] = part == 1
        train = input_order[out_order[part[out_order] == 0]]
    else:
        train = input_order
    if valid_ratio:
        part, _ = recommenders_parts(group[train], seed, _library_ratio(valid_ratio))
        is_valid[train] = part == 1
    return is_test, is_valid


def _stratify_ours(
    group: np.ndarray, test_ratio: float, valid_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_test = _stratify(group, rng.random(len(group)), 1 - test_ratio)
    is_valid = np.zeros_like(is_test)
    if valid_ratio:
        train = np.flatnonzero(~is_test)
        is_valid[train] = _stratify(group[train], rng.random(len(train)), 1 - valid_ratio)
    return is_test, is_valid


def _stratify(group: np.ndarray, key: np.ndarray, keep_ratio: float) -> np.ndarray:
    """True where an item falls beyond `keep_ratio` of its group in the random order of `key`."""
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, sizes) + 1  # 1-based rank within group
    held = np.empty(len(g), dtype=bool)
    held[order] = rank / np.repeat(sizes, sizes) > keep_ratio
    return held


def random_split(
    log: EventLog,
    events: pd.DataFrame | None = None,
    *,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.0,
    seed: int = 0,
    report: DataReport | None = None,
) -> Split:
    """Plain seeded random split of (learner, course) pairs, e.g. GDMix's random 80/20."""
    if not (0 < test_ratio < 1 and 0 <= valid_ratio < 1 - test_ratio):
        raise ValueError(
            f"random_split: need 0 < test_ratio < 1 and 0 <= valid_ratio < 1 - test_ratio, got {test_ratio}, {valid_ratio}"
        )
    ev = log.events if events is None else events
    keys, _, inverse = _pairs(ev)
    u = np.random.default_rng(seed).random(len(keys))
    is_test, is_valid = u < test_ratio, (u >= test_ratio) & (u < test_ratio + valid_ratio)
    return _random_kind_split(
        ev,
        is_test[inverse],
        is_valid[inverse],
        "random",
        dict(test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed),
        report,
    )


def _random_kind_split(ev, is_test, is_valid, name, params, report) -> Split:
    test = _checked(Fold("test", "random", ev[~is_test], ev[is_test]))
    valid = (
        _checked(Fold("valid", "random", ev[~is_test & ~is_valid], ev[is_valid]))
        if is_valid.any()
        else None
    )
    split = Split(name, test, valid, params)
    if report is not None:
        split.report(report)
    return split
