"""experiments.baselines: the table of popularity, item-kNN, EASE, MF and the two-tower on one
split, on the two-tower's inputs at each cutoff, on the synthetic platform, a user's CSV and
MovieLens-100K's published split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import experiments  # noqa: F401  (registers the config schemas)
from experiments.baselines import run, windows
from experiments.data import prepare_data

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CLOSED_FORM = ["EASE", "item-kNN (co-watch cosine)", "popularity"]


def compose_cfg(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "baselines",
            overrides=[f"paths.output_dir={out}", "threads=1",
                       "trainer.enable_progress_bar=false", *overrides],
        )  # fmt: skip


def test_table_on_the_synthetic_platform(tmp_path):
    cfg = compose_cfg(tmp_path, "data=synthetic_small", "trainer.max_epochs=1")
    result = run(cfg)
    models = [r["model"] for r in result["rows"]]
    assert models == ["two_tower", "mf", *CLOSED_FORM]
    saved = json.loads((tmp_path / "baselines.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert saved["split"] == "temporal" and saved["windows"]["test"]["courses"] == 120
    for row in saved["rows"]:
        assert set(row) == {"model", "parameter", "chosen", "valid_ndcg@10", "ndcg@10",
                            "recall@10", "precision@10", "map@10", "seconds"}  # fmt: skip
        assert 0 <= row["ndcg@10"] <= 1 and 0 <= row["valid_ndcg@10"] <= 1
    by_model = {r["model"]: r for r in saved["rows"]}
    assert by_model["two_tower"]["parameter"] == "epochs" and by_model["two_tower"]["chosen"] == 1
    assert (
        by_model["EASE"]["parameter"] == "l2"
        and by_model["EASE"]["chosen"] in cfg.baselines.ease.l2
    )
    assert by_model["item-kNN (co-watch cosine)"]["chosen"] in cfg.baselines.item_knn.k
    table = (tmp_path / "baselines.md").read_text()
    assert "| model | chosen on validation | valid ndcg@10 | test ndcg@10 |" in table
    assert (
        f"| EASE | l2={by_model['EASE']['chosen']:g} |" in table and "| popularity | - |" in table
    )
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert manifest["data_fingerprint"] == saved["data_fingerprint"]
    assert manifest["code_version"] == saved["code_version"]
    assert (
        manifest["config"]["mf"]["name"] == "mf"
        and manifest["config"]["ncf"]["name"] == "two_tower"
    )
    assert (tmp_path / "resolved_config.yaml").exists() and (tmp_path / "data_report.json").exists()


def test_windows_are_the_two_towers_inputs_at_each_cutoff(tmp_path):
    cfg = compose_cfg(tmp_path, "data=synthetic_small", "ncf.inputs.lookback_days=30")
    data = prepare_data(cfg.data, cfg.split)
    wins = windows(cfg, data)
    dm = instantiate(cfg.ncf.datamodule, _convert_="all")(
        data.log, data.split, instantiate(cfg.ncf.inputs, _convert_="all")
    )
    dm.setup("fit")
    for name, snap in (("valid", dm.valid), ("test", dm.test)):
        w = wins[name]
        assert (w.inputs != (snap.history > 0)).nnz == 0
        assert (w.truth != snap.labels).nnz == 0 and (w.exclude != snap.seen).nnz == 0
        # 30-day lookback: fewer input pairs than courses watched before the cutoff, all of them
        # among those; what is excluded is everything watched before
        assert 0 < w.inputs.nnz < w.exclude.nnz
        assert w.inputs.multiply(w.exclude).nnz == w.inputs.nnz


def test_a_users_csv_with_other_column_names(tmp_path):
    rng = np.random.default_rng(0)
    n = 4_000
    events = pd.DataFrame({
        "user": rng.integers(0, 150, n), "artist": rng.integers(0, 40, n),
        "time": 1_700_000_000 + rng.permutation(n) * 900, "seconds": rng.exponential(300, n),
    })  # fmt: skip
    events.to_csv(tmp_path / "plays.csv", index=False)
    out = tmp_path / "run"
    cfg = compose_cfg(
        out, "data=tables", f"data.source.events.path={tmp_path / 'plays.csv'}",
        "data.source.events.columns.learner_id=user", "data.source.events.columns.course_id=artist",
        "data.source.events.columns.ts=time", "data.source.events.columns.watch_seconds=seconds",
        "data.source.ts_unit=s", "split.fn.valid_days=5", "split.fn.test_days=5",
        "split.fn.blend_days=0", "baselines.two_tower=false", "baselines.mf=false",
        "baselines.ease.max_dense_gib=1e-9", "baselines.ease.fallback_rank=8",
    )  # fmt: skip
    result = run(cfg)
    # 40 courses: dense EASE would take 40 kB > 1e-9 GiB, so it runs (and says it runs) low rank
    assert [r["model"] for r in result["rows"]] == ["EASE (low-rank 8)", *CLOSED_FORM[1:]]
    assert result["windows"]["test"]["courses"] == 40 and result["windows"]["test"]["learners"] > 0
    assert "| EASE (low-rank 8) | l2=" in (out / "baselines.md").read_text()


def test_a_split_without_validation_says_what_to_set(tmp_path):
    cfg = compose_cfg(tmp_path, "data=synthetic_small", "split=random", "split.fn.valid_ratio=0")
    with pytest.raises(ValueError, match=r"random split has none.*split.fn.valid_ratio"):
        run(cfg)


@pytest.mark.slow
def test_ml100k_stratified_matches_the_benchmark(tmp_path, shared_data):
    from benchmarks.bench_ncf_movielens import closed_form_baselines

    cfg = compose_cfg(
        tmp_path, "data=ml100k", "experiment=ml100k_stratified", f"paths.data_root={shared_data}",
        "baselines.two_tower=false", "baselines.mf=false",
    )  # fmt: skip
    result = run(cfg)
    bench = closed_form_baselines(cfg, {})
    assert [r["model"] for r in result["rows"]] == [r["model"] for r in bench] == CLOSED_FORM
    for ours, theirs in zip(result["rows"], bench, strict=True):
        assert ours["chosen"] == theirs["chosen"]
        for m in ("valid_ndcg@10", "ndcg@10", "recall@10", "precision@10", "map@10"):
            assert ours[m] == pytest.approx(theirs[m], rel=1e-9), (ours["model"], m)
    assert result["windows"]["test"]["courses"] == 1_682
