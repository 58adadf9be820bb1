"""Shared fixtures: a small synthetic platform (session-scoped), the real-data root, and one
thread for tests of many tiny solves."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

# The real data sets (MovieLens: ml-100k/, ml-latest-small/, ...) are found through this
# variable alone, never by a path guessed from the checkout; `.ci/run` sets it.
DATA_ROOT_VARIABLE = "NCF_GLMIX_DATA_ROOT"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder NCF_GLMIX_DATA_ROOT names (holding ml-100k/, ...), or a clean skip when the
    variable is unset or names no folder."""
    root = os.environ.get(DATA_ROOT_VARIABLE)
    if not root:
        pytest.skip(f"real data: set {DATA_ROOT_VARIABLE} to the folder holding ml-100k/ etc.")
    if not Path(root).is_dir():
        pytest.skip(f"real data: {DATA_ROOT_VARIABLE}={root} is not a folder")
    return Path(root)


@pytest.fixture(scope="session")
def small_platform():
    """2,000 learners, 300 courses, 300 days: fast, but every mechanism is exercised."""
    from watchlog.synthetic import generate_platform

    return generate_platform(n_learners=2_000, n_courses=300, n_days=300, seed=7)


@pytest.fixture
def one_thread():
    """torch and BLAS on one thread: tiny problems only gain contention from more on a shared
    machine. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throwaway PostgreSQL 16 (pgserver's binaries) on 127.0.0.1 TCP for the session,
    stopped and deleted after; skipped where none can start, failed instead when CI=true."""
    from export.pgtest import PostgresUnavailable, start_postgres

    try:
        server = start_postgres(tmp_path_factory.mktemp("postgres"))
    except PostgresUnavailable as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no PostgreSQL server could start: {err}")
        pytest.skip(f"no PostgreSQL server could start here: {err}")
    yield server.url
    server.stop()
    shutil.rmtree(server.pgdata, ignore_errors=True)
