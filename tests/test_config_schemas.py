"""Config schemas (experiments/schemas.py), the trainer group and the Trainer's callbacks
from config: every existing config composes; misspelt and ill-typed keys fail when composed,
naming the key; `trainer.callbacks` are exactly the callbacks the Trainer gets."""

from __future__ import annotations

import re
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
    [(g, o) for g in ("ncf", "data", "blend", "glmix") for o in options(g)],
)
def test_every_option_composes_typed_and_complete(group, option):
    cfg = compose_cfg("pipeline", f"{group}={option}")
    node = cfg[group]
    assert OmegaConf.get_type(node) in SCHEMA_OF.values()
    missing = OmegaConf.missing_keys(node)
    # the one value a user must give: where their tables are
    assert missing == ({"data.source.events.path"} if option == "tables" else set())
    check_config(cfg)


def test_the_learner_learner_option_is_the_default_blend_plus_its_feature():
    from hydra.utils import instantiate

    from blend import LearnerLearner

    default = compose_cfg("pipeline").blend
    peers = compose_cfg("pipeline", "blend=learner_learner").blend
    assert default.candidates.learner_learner is None  # off by default
    assert list(peers.features) == [*default.features, "learner_ease_z"]
    built = instantiate(peers.candidates, _convert_="all")
    assert isinstance(built.learner_learner, LearnerLearner) and built.learner_learner.l2 == 300.0

    def rest(b):
        c = OmegaConf.to_container(b)
        c["candidates"].pop("learner_learner")
        return {k: v for k, v in c.items() if k not in ("name", "features")}

    assert rest(peers) == rest(default)  # nothing else changes


@pytest.mark.parametrize("option", options("glmix"))
def test_every_glmix_option_builds_its_model_and_featurizer(option):
    from hydra.utils import instantiate

    from experiments.train_glmix import featurizer_from
    from glmix import EntityFeaturizer, FixedEffect, GLMix, RandomEffect

    g = compose_cfg("train_glmix", f"glmix={option}").glmix
    model = instantiate(g.model, _convert_="all")
    assert isinstance(model, GLMix) and isinstance(model.fixed, FixedEffect)
    assert model.passes == g.model.passes and model.keep_best == g.model.keep_best
    assert model.fixed.l2 == g.model.fixed.l2 and model.fixed.tol == g.model.fixed.tol
    assert set(model.random) == set(g.design.coordinates) == {"per_learner", "per_course"}
    for name, effect in model.random.items():
        assert isinstance(effect, RandomEffect) and effect.l2 == g.model.random[name].l2
    assert isinstance(featurizer_from(g, seed=0), EntityFeaturizer)


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
        *[("train_glmix", [f"experiment={e}", f"glmix={g}"]) for e in options("experiment")
          for g in options("glmix")],  # fmt: skip
        # the overrides README.md, tests and benchmarks use
        ("pipeline", ["experiment=ml100k_stratified", "ncf=two_tower_ml100k",
                      "glmix=tuned_ml100k", "blend.candidates.group_columns=[segment]",
                      "blend.holdout_draws=8"]),
        ("pipeline", ["data=synthetic_small", "blend.candidates.n_retrieve=40",
                      "blend.variants.logistic.l2=[1.0]",
                      "blend.variants.personalized.learner_l2=[30.0]",
                      "blend.replay.methods=[gradient,nelder_mead]", "blend.n_boot=500",
                      "blend.gain=binary", "blend.serve=logistic"]),
        ("pipeline", ["data=tables", "data.source.events.path=/d/events.parquet",
                      "data.source.ts_unit=s",
                      "data.source.events.columns={learner_id: user, course_id: item, ts: time}",
                      "data.source.events.columns.watch_seconds=seconds",
                      "data.source.events.fill.impression=false", "data.source.events.fill.clicked=nan"]),
        ("train_ncf", ["data=synthetic", "data.source.n_learners=2000",
                       "ncf.datamodule.teacher_l2=500", "ncf.module.distill_weight=0.5",
                       "ncf.module.distill_inputs=both", "ncf.module.distill_standardize=true",
                       "ncf.module.lr_decay_epochs=3", "ncf.module.loss=bce",
                       "ncf.module.negative_alpha=0.75", "ncf.inputs.weighting=column",
                       "ncf.inputs.weight_column=watch_seconds", "ncf.model.mlp=[256,128]",
                       "ncf.content={categorical: [language]}", "ncf.patience=1000",
                       "ncf.refit=false", "trainer=cpu"]),
        # tests/test_train_glmix.py, tests/test_pipeline_resume.py, benchmarks/bench_glmix_*.py
        ("train_glmix", ["data=synthetic_small", "glmix.model.passes=1",
                         "glmix.model.fixed.tol=1e-4", "glmix.refit=true",
                         "glmix.weighting.kind=none",
                         "glmix.features.label_factors={rank: 2, scale: 0.5}",
                         "glmix.design.coordinates.per_learner=[course.category, course.factors]",
                         "outputs.test_scores=true"]),
        ("pipeline", ["data=synthetic_small", "glmix.model.passes=10"]),
        ("train_glmix", ["data=synthetic", "data.source.n_learners=2000",
                         "data.source.n_courses=200", "glmix.model.fixed.tol=0.0001"]),
        ("train_glmix", ["experiment=ml100k_gdmix", "glmix=gdmix_ml100k", "seed=3"]),
        # benchmarks/bench_blend_movielens.py
        ("pipeline", ["experiment=ml100k_stratified", "ncf=two_tower_ml100k", "glmix=tuned_ml100k",
                      "blend=learner_learner", "blend.candidates.learner_learner.rank=1024",
                      "blend.candidates.item_item.rank=1024", "blend.serve=best",
                      "blend.holdout_draws=8"]),
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
        ("glmix.model.passes_=2", "glmix.model.passes_"),
        ("glmix.model.passes=two", "glmix.model.passes"),
        ("glmix.model.keep_best=maybe", "glmix.model.keep_best"),
        ("glmix.model.fixed.tol=tight", "glmix.model.fixed.tol"),
        ("glmix.model.fixed.l1=0.5", "glmix.model.fixed.l1"),  # not exposed (yet)
        ("glmix.model.random.per_learner.l22=3", "glmix.model.random.per_learner.l22"),
        ("glmix.model.random.per_course.intercept_l2=low",
         "glmix.model.random.per_course.intercept_l2"),
        ("glmix.weighting.scale=long", "glmix.weighting.scale"),
        ("glmix.weighting.kinds=none", "glmix.weighting.kinds"),
        ("glmix.rows.event=all", "glmix.rows.event"),
        ("glmix.refit=perhaps", "glmix.refit"),
        ("glmix.features.course.categoricall=[language]", "glmix.features.course.categoricall"),
        ("glmix.design.global_term=[learner]", "glmix.design.global_term"),
    ],
)  # fmt: skip
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
        ("glmix", "defaults: [default, _self_]\nname: typo\nmodel:\n  random:\n"
                  "    per_course: {l2s: 1.0}\n", "l2s"),
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
        ("+glmix.model.bogus=1", "glmix.model.bogus"),
        ("+glmix.features.learner.max_frequency=5", "glmix.features.learner.max_frequency"),
        ("glmix.features.label_factors={rank: 2, scal: 0.5}", "glmix.features.label_factors.scal"),
        ("glmix.features.label_factors={rank: many, scale: 0.5}",
         "glmix.features.label_factors.rank"),
        ("glmix.features.course.min_frequency=often", "glmix.features.course.min_frequency"),
        ("glmix.features.course.min_frequency=[5]", "glmix.features.course.min_frequency"),
        ("glmix.features.learner.scaled={age: old}", "glmix.features.learner.scaled.age"),
        ("glmix.features.learner.scaled={age: {x: 1}}", "glmix.features.learner.scaled.age"),
        ("glmix.features.learner.scaled=0.01", "glmix.features.learner.scaled"),
    ],
)  # fmt: skip
def test_keys_added_past_the_schema_are_named_before_any_work(tmp_path, override, key):
    cfg = compose_cfg("pipeline", "data=synthetic_small", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(ConfigSchemaError, match=key.replace(".", r"\.")):
        run_pipeline(cfg)
    assert not any(tmp_path.iterdir())  # failed before writing anything


def test_glmix_entry_point_refuses_added_keys_before_any_work(tmp_path):
    from experiments.train_glmix import run as run_glmix

    cfg = compose_cfg("train_glmix", "data=synthetic_small", f"paths.output_dir={tmp_path}",
                      "+glmix.model.random.per_learner.l3=1")  # fmt: skip
    with pytest.raises(ConfigSchemaError, match=r"glmix\.model\.random\.per_learner\.l3"):
        run_glmix(cfg)
    assert not any(tmp_path.iterdir())


def test_open_mappings_still_take_new_keys():
    cfg = compose_cfg(
        "pipeline", "ncf.content={categorical: [language], multi_hot: [skills]}",
        "+blend.variants.fixed_weights.log_popularity=0.5",
        "glmix.features.learner.scaled={age: 0.01}",
        "glmix.features.label_factors={rank: 2, scale: 0.5}",
        "+glmix.design.coordinates.per_segment=[course.category]",
    )  # fmt: skip
    check_config(cfg)
    assert cfg.ncf.content.multi_hot == ["skills"]
    assert cfg.blend.variants.fixed_weights.log_popularity == 0.5
    assert cfg.glmix.features.learner.scaled == {"age": 0.01}
    assert cfg.glmix.features.label_factors.rank == 2
    assert list(cfg.glmix.design.coordinates) == ["per_learner", "per_course", "per_segment"]


PER_SEGMENT = """defaults: [default, _self_]
name: per_segment
design:
  coordinates:
    per_segment: [course.category]
model:
  random:
    per_segment: {_target_: glmix.RandomEffect, key: segment, %s: 3.0, intercept_l2: null}
"""


def test_a_glmix_option_adds_a_random_effect_typed_as_the_others(tmp_path):
    """glmix.model.random is open (name -> RandomEffect keywords) in a yaml option; OmegaConf
    2.3 cannot add an entry to a mapping of structured values from the command line."""
    from hydra.utils import instantiate

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "glmix" / "per_segment.yaml").write_text(PER_SEGMENT % "l2")
    cfg = compose_cfg("pipeline", "glmix=per_segment", conf=conf)
    check_config(cfg)
    model = instantiate(cfg.glmix.model, _convert_="all")
    assert list(model.random) == ["per_learner", "per_course", "per_segment"]
    assert model.random["per_segment"].key == "segment"
    assert type(model.random["per_segment"].l2) is float
    (conf / "glmix" / "per_segment.yaml").write_text(PER_SEGMENT % "l22")
    with pytest.raises(Exception) as info:
        compose_cfg("pipeline", "glmix=per_segment", conf=conf)
    assert "l22" in error_text(info.value)


def test_values_are_converted_to_the_schema_types():
    cfg = compose_cfg("pipeline", "ncf.module.lr=1", "blend.variants.logistic.l2=[1]",
                      "glmix.model.fixed.l2=100", "glmix.features.course.min_frequency=0.01")  # fmt: skip
    assert isinstance(cfg.ncf.module.lr, float) and cfg.blend.variants.logistic.l2 == [1.0]
    assert isinstance(cfg.glmix.model.fixed.l2, float)
    # min_frequency keeps its type: an int counts rows, a float is a share of them
    assert cfg.glmix.features.learner.min_frequency == 5
    assert type(cfg.glmix.features.learner.min_frequency) is int
    assert type(cfg.glmix.features.course.min_frequency) is float
    check_config(cfg)


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


@pytest.mark.parametrize(
    "override, key",
    [
        ("blend.k=0", "blend.k"), ("trainer.max_epochs=-2", "trainer.max_epochs"),
        ("evaluate.ks=[0,10]", "evaluate.ks"), ("export.gates.min_coverage=1.5",
                                                  "export.gates.min_coverage"),
        ("blend.serve=personalised", "blend.serve"), ("threads=0", "threads"),
        ("ncf.module.lr=-0.1", "ncf.module.lr"), ("glmix.model.passes=0", "glmix.model.passes"),
        ("blend.candidates.n_retrieve=0", "blend.candidates.n_retrieve"),
        ("blend.holdout_draws=0", "blend.holdout_draws"),
        ("blend.holdout_fraction=1.0", "blend.holdout_fraction"),
        ("blend.k=30", "blend.candidates.n_fallback"),  # 20 popular courses: lists of 20
        ("seed=abc", "seed"), ("seed=null", "seed"), ("seed=1.5", "seed"),
    ],
)  # fmt: skip
def test_values_a_stage_would_refuse_late_are_refused_before_any_work(override, key):
    from experiments.schemas import ConfigSchemaError, check_config

    with pytest.raises(ConfigSchemaError, match=rf"{re.escape(key)}=.*: "):
        check_config(compose_cfg("pipeline", override))


@pytest.mark.parametrize("name", ["blend", "evaluate", "export", "report"])
def test_a_command_config_without_a_seed_passes(name):
    """The run_dir commands' own configs have no seed (it is the run's): absent is not null."""
    check_config(compose_cfg(name, "run_dir=x"))


def test_a_fallback_list_shorter_than_the_served_list_is_refused_naming_both_keys():
    from experiments.schemas import ConfigSchemaError, check_config

    with pytest.raises(ConfigSchemaError, match=r"n_fallback=20: at least blend.k=30: a learner"):
        check_config(compose_cfg("pipeline", "blend.k=30"))
    check_config(compose_cfg("pipeline", "blend.k=30", "blend.candidates.n_fallback=30"))


def test_the_serve_choices_checked_up_front_are_the_blender_kinds():
    from blend.variants import KINDS
    from experiments.schemas import SERVE_CHOICES

    assert ("best", *KINDS) == SERVE_CHOICES


def _choices(module: str, constant: str) -> tuple[str, ...]:
    from importlib import import_module

    return tuple(getattr(import_module(module), constant))


@pytest.mark.parametrize(
    "override, key, value, allowed",
    [
        ("export.sink.kind=parqet", "export.sink.kind", "'parqet'",
         ", ".join(_choices("export.sinks", "SINK_KINDS"))),
        ("export.sink.keep_versions=0", "export.sink.keep_versions", "0", "an int >= 1"),
        ("outputs.plot_method=tsne", "outputs.plot_method", "'tsne'",
         ", ".join(_choices("ncf.plots", "METHODS"))),
        ("evaluate.ci=1.5", "evaluate.ci", "1.5", "a level in (0, 1)"),
        ("evaluate.ci=0", "evaluate.ci", "0", "a level in (0, 1)"),
        ("blend.variants.rank.objective=[ndgc]", "blend.variants.rank.objective", "['ndgc']",
         ", ".join(_choices("blend.blenders", "RANK_OBJECTIVES"))),
        ("blend.replay.methods=[gradient,newton]", "blend.replay.methods",
         "['gradient', 'newton']", ", ".join(_choices("blend.replay", "METHODS"))),
        ("blend.replay.objectives=[clicks]", "blend.replay.objectives", "['clicks']",
         ", ".join(_choices("blend.replay", "OBJECTIVES"))),
        ("blend.variants.kinds=[fixed,logistc]", "blend.variants.kinds",
         "['fixed', 'logistc']", ", ".join(_choices("blend.variants", "KINDS"))),
    ],
)  # fmt: skip
def test_unknown_names_and_bad_levels_are_refused_at_composition(override, key, value, allowed):
    """Each named the key, the value and what is allowed (the code's own names), before any
    work (the sink, the plots, the intervals and the blend study refused them late)."""
    with pytest.raises(ConfigSchemaError) as err:
        check_config(compose_cfg("pipeline", override))
    line = next(x for x in str(err.value).splitlines() if x.strip().startswith(f"{key}="))
    assert line.strip().startswith(f"{key}={value}: ") and allowed in line


def test_the_pipeline_refuses_a_bad_level_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigSchemaError, match=r"evaluate.ci=1.5: a level in \(0, 1\)"):
        run_pipeline(compose_cfg("pipeline", f"paths.output_dir={out}", "evaluate.ci=1.5"))
    assert not out.exists()


def test_an_unknown_neighbour_course_is_refused_before_training(tmp_path, monkeypatch):
    """outputs.neighbour_course needs the data's course ids: refused once the data is
    there, before the fit (the plots, after training, raised UnknownIdError)."""
    import experiments.train_ncf as train_ncf

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the neighbour course")

    monkeypatch.setattr(train_ncf, "fit_and_test", no_training)
    cfg = _small_fit_cfg(tmp_path, "outputs.plots=true", "outputs.neighbour_course=no_such_course")
    with pytest.raises(
        ValueError,
        match=r"outputs.neighbour_course='no_such_course' \(str\): "
        r"not a course id of the data \(\d+ courses, ids like",
    ):
        train_ncf.train_and_report(cfg, None, tmp_path / "stage")
    assert not (tmp_path / "stage").exists()
    from experiments.data import prepare_data

    log = prepare_data(cfg.data, cfg.split).log
    known = log.course_ids.index[0]
    train_ncf.check_neighbour_course(OmegaConf.create({"neighbour_course": known}), log)


@pytest.mark.parametrize(
    "name, override, key, suggestion",
    [
        ("pipeline", "+evaluate.n_boots=10", "evaluate.n_boots", "evaluate.n_boot"),
        ("pipeline", "+trainer.max_epoch=3", "trainer.max_epoch", "trainer.max_epochs"),
        ("pipeline", "+export.gates.min_coverag=0.1", "export.gates.min_coverag",
         "export.gates.min_coverage"),
        ("pipeline", "+export.sink.keep_version=2", "export.sink.keep_version",
         "export.sink.keep_versions"),
        ("pipeline", "+stages.blnd=false", "stages.blnd", "stages.blend"),
        ("train_ncf", "+outputs.plot=true", "outputs.plot", "outputs.plots"),
    ],
)  # fmt: skip
def test_a_misspelt_plus_key_outside_the_schemas_fails_naming_the_closest_key(
    name, override, key, suggestion
):
    """`+key` outside the schema groups was taken silently (evaluate, stages, outputs: the key
    is read by name) or failed late (trainer: a TypeError from the Trainer; export: the gates)."""
    with pytest.raises(ConfigSchemaError) as err:
        check_config(compose_cfg(name, override))
    line = next(x for x in str(err.value).splitlines() if x.strip().startswith(f"{key}:"))
    assert f"did you mean {suggestion}" in line


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.precision=bf16-mixed",  # a Trainer keyword no yaml sets
        "+trainer.callbacks.lr_monitor={_target_: pytorch_lightning.callbacks.LearningRateMonitor}",
        "~trainer.callbacks.early_stopping",
    ],
)
def test_trainer_keywords_and_callbacks_added_with_plus_pass(override):
    check_config(compose_cfg("pipeline", override))


def test_a_run_folders_resolved_config_passes_the_known_key_check():
    """A saved config holds resolved copies (export.publish.sink, .gates): not new keys."""
    cfg = compose_cfg("pipeline", "paths.output_dir=/tmp/x")
    check_config(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
