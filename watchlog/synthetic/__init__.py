"""The built-in data set: a small LinkedIn-Learning-like platform, deterministic by seed.

platform = generate_platform(n_learners=10_000, seed=0)
platform.log      # EventLog: events, learners, courses (validated)
platform.truth    # PlatformTruth: latent interests, languages, quality; affinity()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from watchlog.eventlog import EventLog
from watchlog.progress import progress
from watchlog.report import DataReport
from watchlog.synthetic.activity import CHANNELS, _Sampler, simulate_chunk, to_frame
from watchlog.synthetic.world import TOPIC_NAMES, PlatformTruth, make_courses, make_learners

__all__ = [
    "SyntheticPlatform",
    "PlatformTruth",
    "generate_platform",
    "simulate_tables",
    "platform_truth",
    "CHANNELS",
    "TOPIC_NAMES",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SyntheticPlatform:
    log: EventLog
    truth: PlatformTruth


def simulate_tables(
    n_learners: int = 10_000,
    n_courses: int = 1_000,
    *,
    start: str = "2024-01-01",
    n_days: int = 450,
    seed: int = 0,
    slate_size: int = 5,
    candidates_per_slot: int = 3,
    policy_affinity_weight: float = 0.5,
    chunk_learners: int = 50_000,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, PlatformTruth]:
    """Raw (events, learners, courses, truth), before validation.

    Learners are simulated in chunks of `chunk_learners`, each with its own
    generator spawned from `seed`: the same arguments give the same tables.
    """
    if n_learners < 1 or n_courses < 1 or n_days < 1:
        raise ValueError(
            f"n_learners, n_courses and n_days must be >= 1, got {n_learners}, {n_courses}, {n_days}"
        )
    world_seq, *chunk_seqs = np.random.SeedSequence(seed).spawn(
        1 + -(-n_learners // chunk_learners)
    )
    courses, learners, truth = _world(n_learners, n_courses, start, n_days, world_seq)
    sampler = _Sampler(truth)
    parts = []
    chunks = progress(
        enumerate(chunk_seqs), total=len(chunk_seqs), desc="synthetic platform: learner chunks",
        unit="chunks", logger=_log,
    )  # fmt: skip
    for i, seq in chunks:  # one chunk of learners at a time: memory ~ chunk
        chunk = np.arange(i * chunk_learners, min((i + 1) * chunk_learners, n_learners))
        parts.append(
            simulate_chunk(
                truth,
                sampler,
                chunk,
                np.random.default_rng(seq),
                slate_size=slate_size,
                candidates_per_slot=candidates_per_slot,
                policy_affinity_weight=policy_affinity_weight,
            )
        )
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    del parts
    order = np.argsort(cols["ts"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    events = to_frame(cols, learners["learner_id"], courses["course_id"])
    return events, learners, courses, truth


def _world(
    n_learners: int, n_courses: int, start: str, n_days: int, world_seq: np.random.SeedSequence
) -> tuple[pd.DataFrame, pd.DataFrame, PlatformTruth]:
    """The catalogue, the learner table and their latent truth (no activity)."""
    start_ns = pd.Timestamp(start, tz="UTC").value
    end_ns = start_ns + n_days * 86_400 * 10**9
    rng = np.random.default_rng(world_seq)
    courses, course_latent = make_courses(n_courses, start_ns, end_ns, rng)
    learners, learner_latent = make_learners(n_learners, start_ns, end_ns, rng)
    return courses, learners, PlatformTruth(**course_latent, **learner_latent)


def platform_truth(
    n_learners: int = 10_000,
    n_courses: int = 1_000,
    *,
    start: str = "2024-01-01",
    n_days: int = 450,
    seed: int = 0,
    **activity: object,
) -> tuple[pd.Series, PlatformTruth]:
    """(learner ids in truth row order, truth) of the platform `simulate_tables` makes with
    the same arguments, without simulating the activity: what a report needs to set a
    model's estimates beside the truth (about 10 s of CPU and 1 GiB at a million learners).
    `activity`: the simulation's other keywords (slate_size, ...), which the truth does not
    depend on."""
    if n_learners < 1 or n_courses < 1 or n_days < 1:
        raise ValueError(
            f"n_learners, n_courses and n_days must be >= 1, got {n_learners}, {n_courses}, {n_days}"
        )
    # The world's generator is the seed's first spawned child, as in simulate_tables
    # (a child's key does not depend on how many siblings are spawned).
    (world_seq,) = np.random.SeedSequence(seed).spawn(1)
    _, learners, truth = _world(n_learners, n_courses, start, n_days, world_seq)
    return learners["learner_id"].reset_index(drop=True), truth


def generate_platform(
    n_learners: int = 10_000, n_courses: int = 1_000, *, report: DataReport | None = None, **kwargs
) -> SyntheticPlatform:
    """Simulate and validate the platform; keyword arguments as in `simulate_tables`."""
    events, learners, courses, truth = simulate_tables(n_learners, n_courses, **kwargs)
    log = EventLog.from_tables(events, learners, courses, report=report)
    if not (log.learners["learner_id"].to_numpy() == learners["learner_id"].to_numpy()).all():
        raise AssertionError(
            "learner index must equal generation order, or truth rows would not match"
        )
    return SyntheticPlatform(log=log, truth=truth)
