"""experiments.blend's wiring: which saved models fit the blender, what the replay curve may
see, and list lengths other than 10."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import experiments.blend as blend_stage
from experiments.blend import Models, fit_fold, oracle_row


@pytest.fixture
def loads(monkeypatch):
    """Model loaders that return the folder they were asked for."""
    monkeypatch.setattr(blend_stage.NCFRecommender, "load", staticmethod(lambda p: ("ncf", p)))
    monkeypatch.setattr(blend_stage.GLMixScorer, "load", staticmethod(lambda p: ("glmix", p)))


@pytest.mark.parametrize(
    "folders, ncf, glmix",
    [
        # GLMix refitted, the two-tower not: GLMix's model before its refit, never the refit one
        (["ncf/model", "glmix/model", "glmix/model_before_refit"], "ncf/model",
         "glmix/model_before_refit"),
        # the two-tower refitted, GLMix not
        (["ncf/model", "ncf/model_before_refit", "glmix/model"], "ncf/model_before_refit",
         "glmix/model"),
        (["ncf/model", "ncf/model_before_refit", "glmix/model", "glmix/model_before_refit"],
         "ncf/model_before_refit", "glmix/model_before_refit"),
        (["ncf/model"], "ncf/model", None),
    ],
)  # fmt: skip
def test_the_blender_is_fitted_with_each_model_as_chosen_before_its_own_refit(
    tmp_path, loads, folders, ncf, glmix
):
    for f in folders:
        (tmp_path / f).mkdir(parents=True)
    m = Models.load_early(tmp_path)
    assert m.ncf == ("ncf", tmp_path / ncf)
    assert m.glmix == (None if glmix is None else ("glmix", tmp_path / glmix))


def test_without_a_two_tower_there_is_nothing_to_blend(tmp_path, loads):
    (tmp_path / "glmix" / "model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no two-tower here"):
        Models.load_early(tmp_path)


def test_the_fit_fold_is_the_blend_window_else_validation():
    blend, valid = object(), object()
    with_window = SimpleNamespace(split=SimpleNamespace(blend=blend, valid=valid))
    without = SimpleNamespace(split=SimpleNamespace(blend=None, valid=valid))
    assert fit_fold(with_window) is blend and fit_fold(without) is valid


@pytest.mark.parametrize("k", [5, 10, 20])
def test_the_whole_catalogue_oracle_row_reads_the_lists_length(k):
    summary = {f"ndcg@{k}": 0.25, f"recall@{k}": 0.5}
    res = SimpleNamespace(summary=lambda: summary, n_users=7)
    row = oracle_row(res, k)
    assert row["system"] == "oracle (whole catalogue)" and row["learners"] == 7
    assert row[f"ndcg@{k}"] == 0.25 and row[f"recall@{k}"] == 0.5
