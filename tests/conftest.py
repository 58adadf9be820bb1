"""Shared fixtures: a small synthetic platform (session-scoped) and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "NCF_GLMIX_DATA_ROOT", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a clean skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_platform():
    """2,000 learners, 300 courses, 300 days: fast, but every mechanism is exercised."""
    from watchlog.synthetic import generate_platform

    return generate_platform(n_learners=2_000, n_courses=300, n_days=300, seed=7)
