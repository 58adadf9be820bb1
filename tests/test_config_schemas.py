"""Config schemas (experiments/schemas.py), the trainer group and the Trainer's callbacks
from config: every existing config composes; misspelt and ill-typed keys fail when composed,
naming the key; `trainer.callbacks` are exactly the callbacks the Trainer gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from experiments import schemas
from experiments.pipeline import run as run_pipeline
from experiments.schemas import ConfigSchemaError, check_config
from experiments.train_ncf import fit, trainer_callbacks
from ncf.training import PhaseTimer, fit_and_test

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_cfg(name: str, *overrides: str, conf: Path = CONF):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def error_text(e: BaseException) -> str:
    """The message and its causes (Hydra wraps OmegaConf's ValidationError)."""
    parts = []
    while e is not None:
        parts.append(str(e))
        e = e.__cause__
    return "\n".join(parts)


SCHEMA_OF = {name: schema for group, name, schema in schemas.SCHEMAS}


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in ("ncf", "data", "blend") for o in options(g)],
)
def test_every_option_composes_typed_and_complete(group, option):
    cfg = compose_cfg("pipeline", f"{group}={option}")
    node = cfg[group]
    assert OmegaConf.get_type(node) in SCHEMA_OF.values()
    missing = OmegaConf.missing_keys(node)
    # the one value a user must give: where their tables are
    assert missing == ({"data.source.events.path"} if option == "tables" else set())
    check_config(cfg)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("pipeline", []),
        ("train_ncf", []),
        ("train_glmix", []),
        ("blend", ["run_dir=x"]),
        ("export", ["run_dir=x"]),
        ("evaluate", ["run_dir=x"]),
        *[("pipeline", [f"experiment={e}"]) for e in options("experiment")],
        *[("train_ncf", [f"experiment={e}", f"ncf={n}"]) for e in options("experiment")
          for n in options("ncf")],  # fmt: skip
        # the overrides README.md, tests and benchmarks use
        ("pipeline", ["experiment=ml100k_stratified", "ncf=two_tower_ml100k",
                      "glmix=tuned_ml100k", "blend.candidates.group_columns=[segment]"]),
        ("pipeline", ["data=synthetic_small", "blend.candidates.n_retrieve=40",
                      "blend.variants.logistic.l2=[1.0]",
                      "blend.variants.personalized.learner_l2=[30.0]",
                      "blend.replay.methods=[gradient,nelder_mead]", "blend.n_boot=500",
                      "blend.gain=binary", "blend.serve=logistic"]),
        ("pipeline", ["data=tables", "data.source.events.path=/d/events.parquet",
                      "data.source.ts_unit=s",
                      "data.source.events.columns={learner_id: user, course_id: item, ts: time}",
                      "+data.source.events.columns.watch_seconds=seconds",
                      "+data.source.events.fill={impression: false, clicked: null}"]),
        ("train_ncf", ["data=synthetic", "data.source.n_learners=2000",
                       "ncf.datamodule.teacher_l2=500", "ncf.module.distill_weight=0.5",
                       "ncf.module.distill_inputs=both", "ncf.module.distill_standardize=true",
                       "ncf.module.lr_decay_epochs=3", "ncf.module.loss=bce",
                       "ncf.module.negative_alpha=0.75", "ncf.inputs.weighting=column",
                       "ncf.inputs.weight_column=watch_seconds", "ncf.model.mlp=[256,128]",
                       "ncf.content={categorical: [language]}", "ncf.patience=1000",
                       "ncf.refit=false", "trainer=cpu"]),
    ],
)  # fmt: skip
def test_existing_configs_and_overrides_compose(name, overrides):
    check_config(compose_cfg(name, *overrides))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("ncf.model.bag_dimm=256", "ncf.model.bag_dimm"),
        ("ncf.model.bag_dim=abc", "ncf.model.bag_dim"),
        ("ncf.module.lr=fast", "ncf.module.lr"),
        ("ncf.refit=maybe", "ncf.refit"),
        ("ncf.model.mlp=[256,wide]", "ncf.model.mlp"),
        ("data.source.n_learnerss=5", "data.source.n_learnerss"),
        ("data.source.n_learners=many", "data.source.n_learners"),
        ("data.cleaning.min_watch_seconds=long", "data.cleaning.min_watch_seconds"),
        ("blend.candidates.n_retreive=10", "blend.candidates.n_retreive"),
        ("blend.candidates.n_retrieve=ten", "blend.candidates.n_retrieve"),
        ("blend.variants.logistic.l2=[1.0,strong]", "blend.variants.logistic.l2"),
        ("blend.replay.tau=hot", "blend.replay.tau"),
    ],
)
def test_misspelt_or_ill_typed_override_fails_at_compose_naming_the_key(override, key):
    with pytest.raises(Exception) as info:
        compose_cfg("pipeline", override)
    assert key in error_text(info.value)


@pytest.mark.parametrize(
    ("data", "override", "key"),
    [
        ("ml100k", "data.source.seconds_per_star=lots", "data.source.seconds_per_star"),
        ("ml1m", "data.source.pathh=/x", "data.source.pathh"),
        ("tables", "data.source.events.delimiter=[1]", "data.source.events.delimiter"),
    ],
)
def test_each_data_kind_has_its_schema(data, override, key):
    with pytest.raises(Exception) as info:
        compose_cfg("pipeline", f"data={data}", override)
    assert key in error_text(info.value)


@pytest.mark.parametrize(
    ("group", "yaml", "key"),
    [
        ("ncf", "defaults: [two_tower, _self_]\nname: typo\nmodel:\n  bag_dimm: 3\n", "bag_dimm"),
        ("data", "defaults: [synthetic, _self_]\nname: typo\nsource:\n  n_days: soon\n",
         "n_days"),
        ("blend", "defaults: [default, _self_]\nname: typo\nreplay:\n  taus: 0.1\n", "taus"),
    ],
)  # fmt: skip
def test_a_misspelt_key_in_a_yaml_file_fails_at_compose(tmp_path, group, yaml, key):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / group / "typo.yaml").write_text(yaml)
    with pytest.raises(Exception) as info:
        compose_cfg("pipeline", f"{group}=typo", conf=conf)
    assert key in error_text(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+ncf.model.bag_dimm=256", "ncf.model.bag_dimm"),
        ("+data.source.n_learnerss=5", "data.source.n_learnerss"),
        ("+blend.candidates.n_retreive=10", "blend.candidates.n_retreive"),
        ("ncf.content={categoricall: [language]}", "ncf.content.categoricall"),
        ("ncf.content={title_tfidf: many}", "ncf.content.title_tfidf"),
    ],
)
def test_keys_added_past_the_schema_are_named_before_any_work(tmp_path, override, key):
    cfg = compose_cfg("pipeline", "data=synthetic_small", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(ConfigSchemaError, match=key.replace(".", r"\.")):
        run_pipeline(cfg)
    assert not any(tmp_path.iterdir())  # failed before writing anything


def test_open_mappings_still_take_new_keys():
    cfg = compose_cfg(
        "pipeline", "ncf.content={categorical: [language], multi_hot: [skills]}",
        "+blend.variants.fixed_weights.log_popularity=0.5",
    )  # fmt: skip
    check_config(cfg)
    assert cfg.ncf.content.multi_hot == ["skills"]
    assert cfg.blend.variants.fixed_weights.log_popularity == 0.5


def test_values_are_converted_to_the_schema_types():
    cfg = compose_cfg("pipeline", "ncf.module.lr=1", "blend.variants.logistic.l2=[1]")
    assert isinstance(cfg.ncf.module.lr, float) and cfg.blend.variants.logistic.l2 == [1.0]


# --- trainer group and callbacks --------------------------------------------------------


@pytest.mark.parametrize(("option", "accelerator"), [("default", "auto"), ("cpu", "cpu"),
                                                     ("gpu", "gpu")])  # fmt: skip
def test_trainer_options_compose_with_the_same_callbacks(option, accelerator):
    cfg = compose_cfg("train_ncf", f"trainer={option}")
    assert cfg.trainer.accelerator == accelerator and cfg.trainer.devices == 1
    assert list(cfg.trainer.callbacks) == ["phase_timer", "checkpoint", "early_stopping"]


def test_default_callbacks_are_todays_and_follow_ncf_monitor_and_patience():
    cfg = compose_cfg("train_ncf", "ncf=two_tower_ml100k", "ncf.monitor=val_recall@10")
    timer, checkpoint, stop = trainer_callbacks(cfg.trainer)
    assert isinstance(timer, PhaseTimer)
    assert isinstance(checkpoint, ModelCheckpoint) and isinstance(stop, EarlyStopping)
    assert checkpoint.monitor == stop.monitor == "val_recall@10"
    assert checkpoint.mode == stop.mode == "max" and checkpoint.save_top_k == 1
    assert checkpoint.save_weights_only and checkpoint.filename == "best"
    assert checkpoint.dirpath is None  # filled in by fit_and_test: <stage folder>/checkpoints
    assert stop.patience == 200  # conf/ncf/two_tower_ml100k.yaml


def test_callbacks_can_be_removed_replaced_or_listed():
    gone = compose_cfg("train_ncf", "~trainer.callbacks.early_stopping")
    assert [type(c) for c in trainer_callbacks(gone.trainer)] == [PhaseTimer, ModelCheckpoint]
    off = compose_cfg("train_ncf", "trainer.callbacks.early_stopping=null")
    assert [type(c) for c in trainer_callbacks(off.trainer)] == [PhaseTimer, ModelCheckpoint]
    listed = compose_cfg(
        "train_ncf", "~trainer.callbacks",
        "+trainer.callbacks=[{_target_: ncf.training.PhaseTimer}, "
        "{_target_: pytorch_lightning.callbacks.ModelCheckpoint, monitor: val_ndcg@10}]",
    )  # fmt: skip
    assert [type(c) for c in trainer_callbacks(listed.trainer)] == [PhaseTimer, ModelCheckpoint]
    bad = compose_cfg("train_ncf", "+trainer.callbacks.oops={_target_: collections.OrderedDict}")
    with pytest.raises(TypeError, match="trainer.callbacks.oops"):
        trainer_callbacks(bad.trainer)


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        ([PhaseTimer()], "exactly one ModelCheckpoint"),
        ([ModelCheckpoint(monitor="val_ndcg@10")], "exactly one PhaseTimer"),
        ([PhaseTimer(), ModelCheckpoint(monitor="val_loss")], "monitors 'val_loss'"),
    ],
)
def test_fit_and_test_says_which_callback_it_needs(tmp_path, callbacks, message):
    with pytest.raises(ValueError, match=message):
        fit_and_test(None, None, tmp_path, callbacks=callbacks)


class Recorder(pl.Callback):
    """Remembers the callbacks of every Trainer it was given to, and that fit started."""

    seen: list[list[type]] = []

    def on_fit_start(self, trainer, module) -> None:
        Recorder.seen.append([type(c) for c in trainer.callbacks])


def _small_fit_cfg(tmp_path: Path, *overrides: str):
    return compose_cfg(
        "train_ncf", "data=synthetic_small", f"paths.output_dir={tmp_path}",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "ncf.refit=false",
        "outputs.plots=false", "threads=1", *overrides,
    )  # fmt: skip


def test_the_trainer_gets_the_configured_callbacks_and_checkpoints_where_it_did(tmp_path):
    Recorder.seen.clear()
    cfg = _small_fit_cfg(tmp_path, f"+trainer.callbacks.recorder={{_target_: {__name__}.Recorder}}")
    trained = fit(cfg, out_dir=tmp_path / "stage")
    assert len(Recorder.seen) == 1
    # Lightning moves checkpoint callbacks last; it adds none of these kinds itself
    ours = {PhaseTimer, ModelCheckpoint, EarlyStopping, Recorder}
    assert sorted(t.__name__ for t in Recorder.seen[0] if t in ours) == [
        "EarlyStopping", "ModelCheckpoint", "PhaseTimer", "Recorder"
    ]  # fmt: skip
    best = tmp_path / "stage" / "checkpoints" / "best.ckpt"
    assert Path(trained.result.checkpoint) == best.resolve() and best.exists()
    assert trained.result.timings["train_batches"] > 0  # the configured PhaseTimer measured


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trainer_gpu_trains_on_the_gpu(tmp_path):
    trained = fit(_small_fit_cfg(tmp_path, "trainer=gpu"), out_dir=tmp_path)
    assert trained.result.best_epoch == 0 and trained.result.test
