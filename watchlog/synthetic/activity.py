"""Learner activity: sessions -> impressions (logging policy, position bias) -> clicks -> watches,
plus organic (search / browse) watches outside impressions.

Everything is vectorized over the sessions of a chunk of learners; memory is bounded
by the chunk, the output grows with the events it holds.

Signals a model can learn, by construction:
- clicks depend on true affinity, position (examination 1/position^POSITION_EXPONENT) and a
  course's clickbait; watching depends on true affinity and segment, not on clickbait,
  so watch time is the cleaner label (what GLMix's watch-time weighting exploits);
- a share of clicks ends in an accidental few-second watch (what the NCF watch-time
  threshold removes);
- learners rarely see or pick courses outside their languages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from watchlog.schema import ns_to_utc
from watchlog.synthetic import vocab
from watchlog.synthetic.world import SEGMENT_NAMES, PlatformTruth

CHANNELS = ("recommendation", "search", "browse")
POSITION_EXPONENT = 0.8  # examination probability of position p: p ** -0.8
CLICK_OFFSET = -2.0  # logit shift: sets the overall click-through rate
COMPLETION_OFFSET = -0.5  # logit shift: sets the mean watched fraction
COMPLETION_CONCENTRATION = 4.0  # Beta concentration of the watched fraction
NEW_RELEASE_BOOST, NEW_RELEASE_DAYS = 1.0, 60  # the logging policy promotes fresh courses
PERSONAL_SHARE = 0.6  # share of the policy's candidates drawn from the learner's topics
_DAY_NS = 86_400 * 10**9
_SECOND_NS = 10**9


class _Sampler:
    """Course samplers shared by every chunk: by (topic, language) bucket and by popularity."""

    def __init__(self, truth: PlatformTruth):
        n_lang = len(vocab.LANGUAGES)
        self.n_lang = n_lang
        bucket = truth.course_topic.astype(np.int64) * n_lang + truth.course_language
        self.bucket_order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=len(truth.topics) * n_lang)
        self.bucket_size = counts
        self.bucket_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Popularity prior of the logging policy: quality and a little clickbait.
        self.log_pop = (0.7 * truth.course_quality + 0.3 * truth.course_clickbait).astype(
            np.float32
        )
        pop = np.exp(self.log_pop)
        # One concatenated CDF per language, offset by the language code: segment k lies in (k, k+1].
        lang = truth.course_language
        self.lang_order = np.argsort(lang, kind="stable")
        cdf = np.zeros(len(lang))
        for k in range(n_lang):  # six languages
            sel = lang[self.lang_order] == k
            w = pop[self.lang_order][sel]
            cdf[sel] = k + np.cumsum(w) / w.sum() if w.size else k
        self.lang_cdf = cdf
        self.lang_has_courses = np.bincount(lang, minlength=n_lang) > 0
        self.global_cdf = np.cumsum(pop) / pop.sum()
        # Every learner's topic CDF, offset by the learner index and flattened: learner l's
        # lies in (l, l + 1], so one searchsorted samples topics for any mix of learners.
        n_learners, self.n_topics = truth.learner_interest.shape
        cdf = np.cumsum(truth.learner_interest, axis=1, dtype=np.float64)
        cdf /= cdf[:, -1:]
        self.interest_cdf = (
            cdf + np.arange(n_learners)[:, None]
        ).ravel()  # (n_learners * n_topics,)

    def by_interest(
        self, truth: PlatformTruth, learner: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One course per entry of `learner` (any shape): topic ~ interest, language ~ learner's languages."""
        pos = np.searchsorted(self.interest_cdf, learner + rng.random(learner.shape))
        topic = np.minimum(pos - learner.astype(np.int64) * self.n_topics, self.n_topics - 1)
        lang = self.learner_language(truth, learner, rng)
        bucket = topic * self.n_lang + lang
        size = self.bucket_size[bucket]
        pick = self.bucket_start[bucket] + np.floor(
            rng.random(learner.shape) * np.maximum(size, 1)
        ).astype(np.int64)
        course = self.bucket_order[np.minimum(pick, len(self.bucket_order) - 1)]
        empty = (
            size == 0
        )  # no course of that topic in that language: fall back to the language's popular ones
        course[empty] = self.by_popularity(lang[empty], rng)
        return course

    def by_popularity(self, lang: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Courses ~ popularity within `lang` (or globally where the language has no course)."""
        u = rng.random(lang.shape)
        has = self.lang_has_courses[lang]
        pos = np.searchsorted(self.lang_cdf, lang + u)
        out = self.lang_order[np.minimum(pos, len(self.lang_order) - 1)]
        out[~has] = np.searchsorted(self.global_cdf, u[~has])
        return out

    def learner_language(
        self, truth: PlatformTruth, learner: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        main = truth.learner_main_language[learner].astype(np.int64)
        other = truth.learner_language_bits[learner] & ~np.left_shift(1, main).astype(np.uint8)
        second = np.where(other > 0, np.log2(np.maximum(other, 1)).astype(np.int64), main)
        return np.where(rng.random(learner.shape) < 0.25, second, main)


def simulate_chunk(
    truth: PlatformTruth,
    sampler: _Sampler,
    learners: np.ndarray,
    rng: np.random.Generator,
    *,
    slate_size: int,
    candidates_per_slot: int,
    policy_affinity_weight: float,
) -> dict[str, np.ndarray]:
    """Events of `learners` as column arrays (indices, not ids)."""
    seg = truth.learner_segment[learners]
    p = {
        k: np.array([vocab.SEGMENTS[s][k] for s in SEGMENT_NAMES])[seg]
        for k in vocab.SEGMENTS["other"]
    }
    t0, t1 = truth.learner_active_from_ns[learners], truth.learner_active_to_ns[learners]
    active_days = np.maximum(t1 - t0, 0) / _DAY_NS
    n_sessions = rng.poisson(p["sessions_per_month"] * active_days / 30.0)
    s_learner = np.repeat(learners, n_sessions)  # (n_sess,)
    s_row = np.repeat(np.arange(len(learners)), n_sessions)
    s_ts = t0[s_row] + (rng.random(len(s_row)) * (t1 - t0)[s_row]).astype(np.int64)

    imp = _impressions(
        truth,
        sampler,
        s_learner,
        s_row,
        s_ts,
        rng,
        slate_size,
        candidates_per_slot,
        policy_affinity_weight,
    )
    org = _organic(truth, sampler, s_learner, s_row, s_ts, p["p_organic"], rng)
    parts = [imp, org]
    out = {k: np.concatenate([part[k] for part in parts]) for k in imp}
    row = out.pop("row")
    out["watch_seconds"] = _watch_seconds(
        truth, out, p["p_accidental"][row], p["completion_bias"][row], rng
    )
    imp_click_bias = p["click_bias"][row]
    is_imp = out["impression"]
    # Clicks: examination (position bias) x attraction (affinity + clickbait + segment).
    examine = np.where(
        is_imp, np.maximum(out["position"], 1).astype(np.float64) ** -POSITION_EXPONENT, 0.0
    )
    attract = expit(
        out.pop("affinity")
        + truth.course_clickbait[out["course_idx"]]
        + imp_click_bias
        + CLICK_OFFSET
    )
    clicked = rng.random(len(row)) < examine * attract
    out["watch_seconds"] = np.where(is_imp & ~clicked, 0.0, out["watch_seconds"]).astype(np.float32)
    out["clicked"] = np.where(is_imp, clicked.astype(np.int8), -1).astype(
        np.int8
    )  # -1 = not an impression
    return out


def _impressions(
    truth, sampler, s_learner, s_row, s_ts, rng, slate_size, per_slot, w_aff
) -> dict[str, np.ndarray]:
    """The logging policy: sample candidates, score, keep the top `slate_size` per session."""
    n_sess, m = len(s_learner), slate_size * per_slot
    learner = np.broadcast_to(s_learner[:, None], (n_sess, m))
    personal = rng.random((n_sess, m)) < PERSONAL_SHARE
    cand = sampler.by_interest(truth, learner, rng)
    lang = sampler.learner_language(truth, learner[~personal], rng)
    cand[~personal] = sampler.by_popularity(lang, rng)
    affinity = truth.affinity(learner, cand)
    age_days = (s_ts[:, None] - truth.course_published_ns[cand]) / _DAY_NS
    score = (
        w_aff * affinity
        + sampler.log_pop[cand]
        + np.where(age_days < NEW_RELEASE_DAYS, NEW_RELEASE_BOOST, 0.0)
        + rng.gumbel(size=(n_sess, m))
    )
    score[age_days < 0] = -np.inf  # not yet published
    # A course appears once per slate: keep the first copy of each in the row.
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_c = np.take_along_axis(cand, order, axis=1)
    repeat = np.zeros_like(sorted_c, dtype=bool)
    repeat[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
    np.put_along_axis(
        score, order, np.where(repeat, -np.inf, np.take_along_axis(score, order, axis=1)), axis=1
    )

    top = np.argsort(-score, axis=1, kind="stable")[:, :slate_size]  # (n_sess, slate_size)
    ok = np.isfinite(np.take_along_axis(score, top, axis=1))
    sess, slot = np.nonzero(ok)
    col = top[sess, slot]
    return {
        "learner_idx": s_learner[sess],
        "course_idx": cand[sess, col],
        "ts": s_ts[sess] + slot * _SECOND_NS,
        "impression": np.ones(len(sess), dtype=bool),
        "position": (slot + 1).astype(np.int16),
        "channel": np.zeros(len(sess), dtype=np.int8),
        "affinity": affinity[sess, col],
        "row": s_row[sess],
    }


def _organic(
    truth, sampler, s_learner, s_row, s_ts, p_organic, rng, n_options: int = 6
) -> dict[str, np.ndarray]:
    """Search / browse: the learner picks the best of a few courses from their topics."""
    n_org = rng.poisson(p_organic[s_row])
    sess = np.repeat(np.arange(len(s_learner)), n_org)
    learner = np.broadcast_to(s_learner[sess][:, None], (len(sess), n_options))
    options = sampler.by_interest(truth, learner, rng)
    # The j-th organic watch of a session falls in its own 10-minute slot: never two at one instant.
    starts = np.concatenate([[0], np.cumsum(n_org)[:-1]])
    j = np.arange(len(sess)) - np.repeat(starts, n_org)
    ts = s_ts[sess] + (60 + 600 * j) * _SECOND_NS + rng.integers(0, 600 * _SECOND_NS, len(sess))
    affinity = truth.affinity(learner, options)
    utility = affinity + rng.gumbel(size=affinity.shape)
    utility[truth.course_published_ns[options] > ts[:, None]] = -np.inf
    best = np.argmax(utility, axis=1)
    ok = np.isfinite(utility[np.arange(len(sess)), best])
    sess, best, ts = sess[ok], best[ok], ts[ok]
    return {
        "learner_idx": s_learner[sess],
        "course_idx": options[ok][np.arange(len(sess)), best],
        "ts": ts,
        "impression": np.zeros(len(sess), dtype=bool),
        "position": np.zeros(len(sess), dtype=np.int16),
        "channel": np.where(rng.random(len(sess)) < 0.7, 1, 2).astype(np.int8),
        "affinity": affinity[ok][np.arange(len(sess)), best],
        "row": s_row[sess],
    }


def _watch_seconds(truth, ev, p_accidental, completion_bias, rng) -> np.ndarray:
    """Seconds watched if the course is opened: an accidental few seconds, or a Beta fraction of it."""
    n = len(ev["course_idx"])
    # Organic picks are deliberate: fewer accidents.
    accidental = rng.random(n) < np.where(ev["impression"], p_accidental, 0.4 * p_accidental)
    mean = expit(ev["affinity"] + completion_bias + COMPLETION_OFFSET)
    k = COMPLETION_CONCENTRATION
    frac = rng.beta(np.maximum(mean * k, 1e-3), np.maximum((1 - mean) * k, 1e-3))
    duration = truth.course_duration[ev["course_idx"]]
    full = np.maximum(frac * duration, 1.0)
    return np.where(accidental, rng.uniform(1.0, 30.0, n), full)


def to_frame(
    cols: dict[str, np.ndarray], learner_ids: pd.Series, course_ids: pd.Series
) -> pd.DataFrame:
    """Column arrays -> events table in the data contract (caller ids as categoricals)."""
    is_imp = cols["impression"]
    return pd.DataFrame(
        {
            "learner_id": pd.Categorical.from_codes(
                cols["learner_idx"], categories=pd.Index(learner_ids)
            ),
            "course_id": pd.Categorical.from_codes(
                cols["course_idx"], categories=pd.Index(course_ids)
            ),
            "ts": ns_to_utc(cols["ts"]),
            "watch_seconds": cols["watch_seconds"],
            "clicked": pd.arrays.IntegerArray(
                np.where(is_imp, cols["clicked"], 0).astype(np.int8), mask=~is_imp
            ),
            "impression": is_imp,
            "position": pd.arrays.IntegerArray(cols["position"].astype(np.int16), mask=~is_imp),
            "channel": pd.Categorical.from_codes(cols["channel"], CHANNELS),
        }
    )
