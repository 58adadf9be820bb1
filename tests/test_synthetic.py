"""The synthetic platform: deterministic, in the data contract, and with the signals later
issues rely on (language clusters, position bias, accidental watches, watch time following
true affinity, segments that behave differently)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from watchlog.schema import COURSE_COLUMNS
from watchlog.synthetic import generate_platform, platform_truth, simulate_tables
from watchlog.synthetic.world import SEGMENT_NAMES


def test_same_seed_same_data_other_seed_other_data():
    a = generate_platform(n_learners=300, n_courses=60, n_days=120, seed=3)
    b = generate_platform(n_learners=300, n_courses=60, n_days=120, seed=3)
    c = generate_platform(n_learners=300, n_courses=60, n_days=120, seed=4)
    assert a.log.fingerprint() == b.log.fingerprint()
    assert a.log.fingerprint() != c.log.fingerprint()
    np.testing.assert_array_equal(a.truth.learner_interest, b.truth.learner_interest)


def test_chunking_is_deterministic_for_a_given_chunk_size():
    a = simulate_tables(400, 50, n_days=100, seed=1, chunk_learners=150)[0]
    b = simulate_tables(400, 50, n_days=100, seed=1, chunk_learners=150)[0]
    pd.testing.assert_frame_equal(a, b)


def test_platform_truth_is_the_simulated_platforms_truth_without_the_activity():
    p = generate_platform(n_learners=300, n_courses=60, n_days=120, seed=3, slate_size=4)
    ids, truth = platform_truth(300, 60, n_days=120, seed=3, slate_size=4)
    np.testing.assert_array_equal(truth.learner_interest, p.truth.learner_interest)
    np.testing.assert_array_equal(truth.course_topic, p.truth.course_topic)
    np.testing.assert_array_equal(ids.to_numpy(), p.log.learners["learner_id"].to_numpy())
    _, other = platform_truth(300, 60, n_days=120, seed=4)
    assert not np.array_equal(other.learner_interest, truth.learner_interest)


def test_tables_follow_the_contract(small_platform):
    log, truth = small_platform.log, small_platform.truth
    assert truth.n_learners == log.n_learners and truth.n_courses == log.n_courses
    c = log.courses
    for col in COURSE_COLUMNS:
        assert col in c.columns
    for col in (
        "learner_id",
        "segment",
        "language",
        "languages",
        "industry",
        "seniority",
        "skills",
        "signup_at",
    ):
        assert col in log.learners.columns
    assert set(log.learners["segment"].cat.categories) == set(SEGMENT_NAMES)
    ev = log.events
    span = (ev["ts"].max() - ev["ts"].min()).days
    assert 250 <= span <= 300
    # impressions carry position and clicked; organic watches carry neither
    imp = ev[ev["impression"]]
    assert imp["position"].notna().all() and imp["clicked"].notna().all()
    org = ev[~ev["impression"]]
    assert len(org) > 0 and org["clicked"].isna().all() and org["position"].isna().all()
    assert (org["watch_seconds"] > 0).all()
    # nothing is watched before its course is published, or outside the learner's active span
    published = c["published_at"].to_numpy()[ev["course_idx"].to_numpy()]
    assert (ev["ts"].to_numpy() >= published).all()
    lidx = ev["learner_idx"].to_numpy()
    ts = ev["ts"].array.asi8
    assert (ts >= truth.learner_active_from_ns[lidx]).all()
    assert (
        ts <= truth.learner_active_to_ns[lidx] + 10 * 3600 * 10**9
    ).all()  # session length slack


def test_language_share_is_skewed_and_learners_watch_their_languages(small_platform):
    log, truth = small_platform.log, small_platform.truth
    shares = log.courses["language"].value_counts(normalize=True)
    assert shares.index[0] == "en" and shares.iloc[0] > 0.45 and len(shares) == 6
    ev = log.events
    watched = ev[ev["watch_seconds"] >= 60]
    bits = truth.learner_language_bits[watched["learner_idx"].to_numpy()]
    lang = truth.course_language[watched["course_idx"].to_numpy()]
    spoken = (bits >> lang.astype(np.uint8)) & 1
    assert spoken.mean() > 0.97


def test_position_bias_and_accidental_watches(small_platform):
    ev = small_platform.log.events
    imp = ev[ev["impression"]]
    ctr = imp.groupby("position")["clicked"].mean()
    assert (np.diff(ctr.to_numpy(dtype=float)) < 0).all()  # click-through falls with position
    clicks = imp[imp["clicked"] == 1]
    accidental = (clicks["watch_seconds"] < 31).mean()
    assert 0.2 < accidental < 0.5  # "many accidental few-second watches"


def test_watch_time_follows_true_affinity_and_clicks_follow_clickbait(small_platform):
    log, truth = small_platform.log, small_platform.truth
    ev = log.events
    clicks = ev[(ev["impression"]) & (ev["clicked"] == 1) & (ev["watch_seconds"] >= 31)]
    li, ci = clicks["learner_idx"].to_numpy(), clicks["course_idx"].to_numpy()
    frac = clicks["watch_seconds"].to_numpy() / log.courses["duration_seconds"].to_numpy()[ci]
    a = truth.affinity(li, ci)
    assert np.corrcoef(a, frac)[0, 1] > 0.3
    # Clickbait wins clicks from learners who then watch less (negative correlation among
    # clicks: what watch-time weighting corrects), yet, affinity held fixed, it has no effect.
    bait = truth.course_clickbait[ci]
    assert np.corrcoef(bait, frac)[0, 1] < -0.1
    design = np.column_stack([np.ones_like(a), expit(a), a])
    residual = frac - design @ np.linalg.lstsq(design, frac, rcond=None)[0]
    assert abs(np.corrcoef(bait, residual)[0, 1]) < 0.05
    imp = ev[ev["impression"]]
    hi = truth.course_clickbait[imp["course_idx"].to_numpy()] > 0.5
    lo = truth.course_clickbait[imp["course_idx"].to_numpy()] < -0.5
    assert (
        imp["clicked"].to_numpy(dtype=float)[hi].mean()
        > imp["clicked"].to_numpy(dtype=float)[lo].mean()
    )


def test_segments_behave_differently(small_platform):
    log = small_platform.log
    ev = log.events
    seg = log.learners["segment"].to_numpy()[ev["learner_idx"].to_numpy()]
    per_learner = ev.groupby("learner_idx").size().reindex(range(log.n_learners), fill_value=0)
    by_seg = per_learner.groupby(log.learners["segment"].to_numpy()).mean()
    assert by_seg["job_seeker"] > by_seg["other"] * 2  # job seekers binge, "other" visits rarely
    clicks = ev[(ev["clicked"] == 1).to_numpy(dtype=bool, na_value=False)]
    cs = seg[(ev["clicked"] == 1).to_numpy(dtype=bool, na_value=False)]
    accidental = pd.Series(clicks["watch_seconds"].to_numpy() < 31).groupby(cs).mean()
    assert accidental["other"] > accidental["job_seeker"]


def test_affinity_matrix_matches_pairs(small_platform):
    truth = small_platform.truth
    learners = np.array([0, 5, 17])
    A = truth.affinity_matrix(learners)
    assert A.shape == (3, truth.n_courses) and A.dtype == np.float32
    c = np.arange(truth.n_courses)
    np.testing.assert_allclose(A[1], truth.affinity(np.full_like(c, 5), c))
    # courses in a language the learner does not speak are far less attractive
    spoken = (
        truth.learner_language_bits[learners][:, None]
        >> truth.course_language[None, :].astype(np.uint8)
    ) & 1
    assert (A[spoken == 1].mean() - A[spoken == 0].mean()) > 3.0
    assert expit(A.max()) > 0.5  # and someone likes something
    with pytest.raises(ValueError, match="same shape"):
        truth.affinity(np.array([0, 1]), np.array([0]))


def test_truth_interest_drives_topic_choice(small_platform):
    """Learners watch most in the topic they are most interested in."""
    log, truth = small_platform.log, small_platform.truth
    ev = log.events
    w = ev[ev["watch_seconds"] >= 60]
    li, ci = w["learner_idx"].to_numpy(), w["course_idx"].to_numpy()
    hits = truth.course_topic[ci] == truth.learner_interest.argmax(1)[li]
    assert hits.mean() > 0.35  # chance is 1/12


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="must be >= 1"):
        simulate_tables(0, 10)
