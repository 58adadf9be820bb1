"""Courses, learners and the true affinity between them.

The affinity is a logit that drives both clicks and watch completion in
`activity.py`; it is kept (`PlatformTruth`) so tests can check that models
recover it: course co-watch clusters by language (learners rarely watch outside
their languages), per-learner topic coefficients follow `learner_interest`.

    affinity(l, c) = INTEREST_W * interest[l, topic c] + INTEREST_B
                   + SKILL_W * min(shared skills, 2)
                   + QUALITY_W * quality[c]
                   - LEVEL_W * |level[l] - difficulty[c]|
                   + 0 (main language) | SECOND_LANGUAGE (other spoken language) | FOREIGN_LANGUAGE
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from watchlog.schema import ns_to_utc
from watchlog.synthetic import vocab

INTEREST_W, INTEREST_B = 6.0, -1.0
SKILL_W = 0.6
QUALITY_W = 0.5
LEVEL_W = 0.6
SECOND_LANGUAGE, FOREIGN_LANGUAGE = -1.0, -5.0

TOPIC_NAMES = tuple(vocab.TOPICS)
SKILLS_PER_TOPIC = 8
SEGMENT_NAMES = tuple(vocab.SEGMENTS)
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, eq=False)
class PlatformTruth:
    """Latent ground truth; row i of every learner array is learner index i of the EventLog."""

    course_topic: np.ndarray  # (n_courses,) int16 into TOPIC_NAMES
    course_language: np.ndarray  # (n_courses,) int8 into vocab.LANGUAGES
    course_difficulty: np.ndarray  # (n_courses,) int8, 0..2
    course_quality: np.ndarray  # (n_courses,) float32, N(0, 1)
    course_clickbait: np.ndarray  # (n_courses,) float32: raises clicks, not watching
    course_skill_bits: np.ndarray  # (n_courses, 2) uint64 bitset over the 96 skills
    course_published_ns: np.ndarray  # (n_courses,) int64 UTC ns
    course_duration: np.ndarray  # (n_courses,) float32 seconds
    learner_segment: np.ndarray  # (n_learners,) int8 into SEGMENT_NAMES
    learner_interest: np.ndarray  # (n_learners, n_topics) float32, rows sum to 1
    learner_main_language: np.ndarray  # (n_learners,) int8
    learner_language_bits: np.ndarray  # (n_learners,) uint8 bitset over vocab.LANGUAGES
    learner_level: np.ndarray  # (n_learners,) float32 seniority, 0..2
    learner_skill_bits: np.ndarray  # (n_learners, 2) uint64
    learner_active_from_ns: np.ndarray  # (n_learners,) int64
    learner_active_to_ns: np.ndarray  # (n_learners,) int64 (<= from: never active)

    topics: tuple[str, ...] = TOPIC_NAMES
    languages: tuple[str, ...] = vocab.LANGUAGES

    @property
    def n_learners(self) -> int:
        return len(self.learner_segment)

    @property
    def n_courses(self) -> int:
        return len(self.course_topic)

    def affinity(self, learner_idx: np.ndarray, course_idx: np.ndarray) -> np.ndarray:
        """True affinity logit of (learner, course) pairs; both arrays of the same shape."""
        li = np.asarray(learner_idx)
        ci = np.asarray(course_idx)
        if li.shape != ci.shape:
            raise ValueError(
                f"learner_idx and course_idx must have the same shape, got {li.shape} and {ci.shape}"
            )
        interest = self.learner_interest[li, self.course_topic[ci]]
        shared = np.bitwise_count(self.learner_skill_bits[li] & self.course_skill_bits[ci]).sum(-1)
        return self._combine(
            interest,
            shared,
            self.course_quality[ci],
            np.abs(self.learner_level[li] - self.course_difficulty[ci]),
            self.course_language[ci],
            self.learner_main_language[li],
            self.learner_language_bits[li],
        )

    def affinity_matrix(self, learner_idx: np.ndarray) -> np.ndarray:
        """(len(learner_idx), n_courses) float32 true affinities (chunk the learners yourself)."""
        li = np.asarray(learner_idx)
        shape = (len(li), self.n_courses)
        return self.affinity(
            np.broadcast_to(li[:, None], shape), np.broadcast_to(np.arange(self.n_courses), shape)
        )

    @staticmethod
    def _combine(
        interest, shared, quality, level_gap, course_lang, main_lang, lang_bits
    ) -> np.ndarray:
        spoken = (lang_bits >> course_lang.astype(np.uint8)) & 1
        language = np.where(
            course_lang == main_lang, 0.0, np.where(spoken == 1, SECOND_LANGUAGE, FOREIGN_LANGUAGE)
        )
        a = (
            INTEREST_W * interest
            + INTEREST_B
            + SKILL_W * np.minimum(shared, 2)
            + QUALITY_W * quality
            - LEVEL_W * level_gap
            + language
        )
        return a.astype(np.float32)


def _skill_bits(codes: np.ndarray) -> np.ndarray:
    """(n, k) skill codes (-1 = none) -> (n, 2) uint64 bitsets over 96 skills."""
    bits = np.zeros((codes.shape[0], 2), dtype=np.uint64)
    for j in range(codes.shape[1]):  # k <= 3 columns, vectorized over rows
        code = codes[:, j]
        ok = code >= 0
        word = (code // 64).astype(np.intp)
        bit = np.left_shift(np.uint64(1), (code % 64).astype(np.uint64))
        np.bitwise_or.at(bits, (np.nonzero(ok)[0], word[ok]), bit[ok])
    return bits


def _join_names(names: np.ndarray, codes: np.ndarray) -> pd.Series:
    """'|'-joined names of (n, k) codes, -1 skipped."""
    cols = [
        pd.Series(
            np.where(codes[:, j] >= 0, names[np.maximum(codes[:, j], 0)], None), dtype="string"
        )
        for j in range(codes.shape[1])
    ]
    out = cols[0]
    for col in cols[1:]:
        out = out.str.cat(col, sep="|", na_rep="").str.rstrip("|")
    return out


def _ids(prefix: str, n: int) -> pd.Series:
    width = len(str(max(n - 1, 0)))
    return prefix + pd.Series(np.arange(n)).astype("string").str.zfill(width)


def make_courses(
    n_courses: int, start_ns: int, end_ns: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict]:
    """The catalogue: language, topic, skills, difficulty, duration, publish date, latent quality."""
    n_topics = len(TOPIC_NAMES)
    skill_names = np.array([s for t in TOPIC_NAMES for s in vocab.TOPICS[t][0]], dtype=object)
    topic = rng.integers(0, n_topics, n_courses).astype(np.int16)
    language = rng.choice(len(vocab.LANGUAGES), n_courses, p=vocab.COURSE_LANGUAGE_SHARES).astype(
        np.int8
    )
    difficulty = rng.choice(3, n_courses, p=(0.45, 0.35, 0.20)).astype(np.int8)
    # 1-3 skills: the main one from the course's topic; extras usually the same topic, sometimes another.
    n_skills = rng.integers(1, 4, n_courses)
    skill_codes = np.full((n_courses, 3), -1, dtype=np.int64)
    for j in range(3):
        other_topic = np.where(
            rng.random(n_courses) < 0.15 * (j > 0), rng.integers(0, n_topics, n_courses), topic
        )
        code = other_topic * SKILLS_PER_TOPIC + rng.integers(0, SKILLS_PER_TOPIC, n_courses)
        skill_codes[:, j] = np.where(j < n_skills, code, -1)
    # A skill listed twice counts once.
    skill_codes[skill_codes[:, 1] == skill_codes[:, 0], 1] = -1
    skill_codes[
        (skill_codes[:, 2] == skill_codes[:, 0]) | (skill_codes[:, 2] == skill_codes[:, 1]), 2
    ] = -1
    duration = np.clip(rng.lognormal(np.log(5400), 0.6, n_courses), 600, 6 * 3600).astype(
        np.float32
    )
    # 80% of the catalogue predates the simulation (up to 3 years), 20% is released during it.
    new = rng.random(n_courses) < 0.2
    published = np.where(
        new,
        rng.integers(start_ns, end_ns, n_courses),
        start_ns - rng.integers(0, 3 * 365 * _DAY_NS, n_courses),
    ).astype(np.int64)
    # Titles: a language's template filled with the main skill.
    template_idx = rng.integers(0, 6, n_courses)
    main_skill = skill_names[skill_codes[:, 0]]
    titles = np.empty(n_courses, dtype=object)
    for li, lang in enumerate(vocab.LANGUAGES):  # six languages x six templates, vectorized inside
        for ti, template in enumerate(vocab.TITLE_TEMPLATES[lang]):
            sel = (language == li) & (template_idx == ti)
            pre, post = template.split("{skill}")
            titles[sel] = pre + main_skill[sel].astype(str).astype(object) + post
    courses = pd.DataFrame(
        {
            "course_id": _ids("C", n_courses),
            "title": pd.Series(titles, dtype="string"),
            "language": pd.Categorical.from_codes(language, vocab.LANGUAGES),
            "category": pd.Categorical.from_codes(topic, TOPIC_NAMES),
            "difficulty": pd.Categorical.from_codes(difficulty, vocab.DIFFICULTIES, ordered=True),
            "duration_seconds": duration,
            "skills": _join_names(skill_names, skill_codes),
            "published_at": ns_to_utc(published),
        }
    )
    latent = dict(
        course_topic=topic,
        course_language=language,
        course_difficulty=difficulty,
        course_quality=rng.standard_normal(n_courses).astype(np.float32),
        course_clickbait=(rng.standard_normal(n_courses) * 0.8).astype(np.float32),
        course_skill_bits=_skill_bits(skill_codes),
        course_published_ns=published,
        course_duration=duration,
    )
    return courses, latent


def make_learners(
    n_learners: int, start_ns: int, end_ns: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict]:
    """Learners: segment, languages, topic interests, skills, industry, seniority, signup and active span."""
    n_topics = len(TOPIC_NAMES)
    n_lang = len(vocab.LANGUAGES)
    seg_table = [vocab.SEGMENTS[s] for s in SEGMENT_NAMES]
    segment = rng.choice(len(SEGMENT_NAMES), n_learners, p=[s["share"] for s in seg_table]).astype(
        np.int8
    )
    seg_param = {k: np.array([s[k] for s in seg_table])[segment] for k in seg_table[0]}

    main = rng.choice(n_lang, n_learners, p=vocab.LEARNER_LANGUAGE_SHARES).astype(np.int8)
    english = vocab.LANGUAGES.index("en")
    second = np.where(main == english, rng.integers(1, n_lang, n_learners), english)
    bilingual = rng.random(n_learners) < np.where(
        main == english, vocab.ENGLISH_BILINGUAL, vocab.BILINGUAL_TO_ENGLISH
    )
    bits = (np.left_shift(1, main) | np.where(bilingual, np.left_shift(1, second), 0)).astype(
        np.uint8
    )

    interest = rng.dirichlet(np.full(n_topics, 0.3), n_learners).astype(
        np.float32
    )  # a few topics dominate
    top2 = np.argsort(-interest, axis=1)[:, :2]
    # 3 distinct skills from the learner's two main topics.
    pick = np.argsort(rng.random((n_learners, 2 * SKILLS_PER_TOPIC)), axis=1)[:, :3]
    skill_codes = (
        top2[np.arange(n_learners)[:, None], pick // SKILLS_PER_TOPIC] * SKILLS_PER_TOPIC
        + pick % SKILLS_PER_TOPIC
    )

    topic_industry = np.array([vocab.INDUSTRIES.index(vocab.TOPICS[t][1]) for t in TOPIC_NAMES])
    industry = np.where(
        rng.random(n_learners) < 0.6,
        topic_industry[top2[:, 0]],
        rng.integers(0, len(vocab.INDUSTRIES), n_learners),
    )
    level = np.clip(seg_param["level_mean"] + 0.5 * rng.standard_normal(n_learners), 0, 2).astype(
        np.float32
    )
    seniority = np.clip(np.round(level + 0.4 * rng.standard_normal(n_learners)), 0, 2).astype(
        np.int8
    )

    # 70% signed up before the simulation (up to 2 years), 30% during it; active life ~ Exponential.
    during = rng.random(n_learners) < 0.3
    signup = np.where(
        during,
        rng.integers(start_ns, end_ns, n_learners),
        start_ns - rng.integers(0, 730 * _DAY_NS, n_learners),
    ).astype(np.int64)
    active_from = np.maximum(signup, start_ns)
    life = (rng.exponential(seg_param["mean_active_days"]) * _DAY_NS).astype(np.int64)
    active_to = np.minimum(active_from + life, end_ns)

    skill_names = np.array([s for t in TOPIC_NAMES for s in vocab.TOPICS[t][0]], dtype=object)
    lang_names = np.array(vocab.LANGUAGES, dtype=object)
    languages = (
        pd.Series(lang_names[main], dtype="string")
        .str.cat(
            pd.Series(np.where(bilingual, lang_names[second], None), dtype="string"),
            sep="|",
            na_rep="",
        )
        .str.rstrip("|")
    )
    learners = pd.DataFrame(
        {
            "learner_id": _ids("L", n_learners),
            "segment": pd.Categorical.from_codes(segment, SEGMENT_NAMES),
            "language": pd.Categorical.from_codes(main, vocab.LANGUAGES),
            "languages": languages,
            "industry": pd.Categorical.from_codes(industry, vocab.INDUSTRIES),
            "seniority": pd.Categorical.from_codes(seniority, vocab.SENIORITIES, ordered=True),
            "skills": _join_names(skill_names, skill_codes),
            "signup_at": ns_to_utc(signup),
        }
    )
    latent = dict(
        learner_segment=segment,
        learner_interest=interest,
        learner_main_language=main,
        learner_language_bits=bits,
        learner_level=level,
        learner_skill_bits=_skill_bits(skill_codes),
        learner_active_from_ns=active_from,
        learner_active_to_ns=active_to,
    )
    return learners, latent
