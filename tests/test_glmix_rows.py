"""glmix.row_sets(roles=...): some roles alone, each the same rows as in the whole set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glmix.rows import ROLES, row_sets


@pytest.fixture(scope="module")
def split(small_platform):
    from watchlog.cleaning import clean
    from watchlog.splits import temporal_split

    log = clean(small_platform.log)
    return log, temporal_split(log, valid_days=45, test_days=45)


@pytest.mark.parametrize("negatives", ["impressions", "sampled"])
def test_some_roles_are_the_same_rows_as_in_the_whole_set(split, negatives):
    """fit_on_split builds the train and refit rows again after the selection fit: alone,
    they must be the rows of the whole set, sampled negatives included (each role draws
    from its own seed, whichever roles are built)."""
    log, sp = split
    kw = {"negatives": negatives, "log": log, "seed": 3}
    whole = row_sets(sp, **kw)
    part = row_sets(sp, **kw, roles=("refit", "train"))
    assert list(whole) == list(ROLES) and list(part) == ["train", "refit"]  # ROLES order
    for k, rows in part.items():
        pd.testing.assert_frame_equal(rows.events, whole[k].events)
        np.testing.assert_array_equal(rows.y, whole[k].y)
        assert rows.name == k
    with pytest.raises(ValueError, match="are not among"):
        row_sets(sp, roles=("train", "fit"))
