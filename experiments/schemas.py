"""Structured-config schemas of the ncf, data, blend and glmix groups, in Hydra's ConfigStore.

Hydra's schema pattern (https://hydra.cc/docs/tutorials/structured_config/schema/): each
dataclass is stored under its group (`ncf/base_ncf`, `data/base_synthetic`, `glmix/base_glmix`,
...) and each yaml of the group names it first in its defaults list (an option that extends
another option names that one; it names the schema), `_self_` after it:

    defaults:
      - base_ncf
      - _self_

The yaml files stay the place to read and set values: the schemas hold names and types only
(every field is `???` here: a key a yaml leaves out stays `???` and fails where it is read;
tests/test_config_schemas.py checks that every option sets every key). When a config is
composed, a misspelt key in a yaml or an override (`ncf.model.bag_dimm=256`,
`glmix.model.passes_=2`) and an ill-typed value (`ncf.model.bag_dim=abc`) fail at once with
the key's full name. Hydra's `+key=value` adds a key past any schema (it is its explicit "add"
and its own error message suggests it), so `check_config` finds such keys in the typed nodes;
the entry points call it before any work.

To expose a new constructor argument (say of `TwoTower` or `glmix.FixedEffect`), add it to the
yaml and to the schema here. Data sources differ in structure by kind, so there is one data
schema per kind (the platform, the MovieLens loaders, mapped tables). `Any` is used only where
OmegaConf cannot type a value: a null-or-mapping
(`ncf.content`, `glmix.features.label_factors`, `glmix.features.*.scaled`: see NCFSchema;
`check_config` checks them against the schema or value types in their field's metadata) and
an int-or-float (`glmix.features.*.min_frequency`; `check_config` checks the types in its
metadata). Mappings whose keys are data or names the config chooses (column maps, fixed blend
weights, GLMix's coordinates and random effects) are typed dict[str, ...].

Importing `experiments` registers the schemas (`experiments/__init__.py`), so every entry
point, test and benchmark that imports from it before composing gets them.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

__all__ = [
    "BlendSchema",
    "ConfigSchemaError",
    "GLMixSchema",
    "MovieLensDataSchema",
    "NCFSchema",
    "SyntheticDataSchema",
    "TablesDataSchema",
    "check_config",
    "register",
]

# OmegaConf reads these annotations at runtime: no `from __future__ import annotations` here.


# --- ncf: conf/ncf/*.yaml -----------------------------------------------------------------


@dataclass
class NCFInputsSchema:  # ncf.inputs.InputBuilder
    _target_: str = MISSING
    lookback_days: float | None = MISSING
    weighting: str = MISSING
    weight_column: str | None = MISSING
    half_life_days: float = MISSING
    cowatch_measure: str = MISSING
    cowatch_top_k: int | None = MISSING
    self_weight: float = MISSING
    label_weighting: str = MISSING
    exclude_seen_from_labels: bool = MISSING


@dataclass
class NCFDataModuleSchema:  # ncf.datamodule.NCFDataModule (partial: log, split, inputs in code)
    _target_: str = MISSING
    _partial_: bool = MISSING
    training: str = MISSING
    n_cutoffs: int = MISSING
    horizon_days: float | None = MISSING
    spacing_days: float | None = MISSING
    label_fraction: float = MISSING
    normalize: str = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    # a number, a list of numbers (chosen on validation) or null: Any, as OmegaConf 2.3 has
    # no union of a float and a list
    teacher_l2: Any = MISSING
    teacher_rank: int | None = MISSING
    seed: int = MISSING


@dataclass
class NCFContentSchema:  # keywords of ncf.content.course_content (those unset keep its defaults)
    categorical: list[str] = MISSING
    multi_hot: list[str] = MISSING
    title_column: str | None = MISSING
    title_tfidf: int = MISSING


@dataclass
class NCFModelSchema:  # ncf.model.TwoTower (partial: n_learners, n_courses in code)
    _target_: str = MISSING
    _partial_: bool = MISSING
    bag_dim: int = MISSING
    mlp: list[int] = MISSING
    activation: str = MISSING
    dropout: float = MISSING
    norm: str = MISSING
    init_std: float = MISSING
    pooling: str = MISSING
    learner_history: bool = MISSING
    course_cowatch: bool = MISSING
    learner_ids: bool = MISSING
    course_ids: bool = MISSING
    course_bias: bool = MISSING
    score: str = MISSING
    temperature: float = MISSING


@dataclass
class NCFModuleSchema:  # ncf.module.NCFModule (partial: model, course_popularity in code)
    _target_: str = MISSING
    _partial_: bool = MISSING
    loss: str = MISSING
    lr: float = MISSING
    lr_decay_epochs: int | None = MISSING
    lr_final_ratio: float = MISSING
    weight_decay: float = MISSING
    n_negatives: int = MISSING
    negative_alpha: float = MISSING
    extra_negatives: int = MISSING
    eval_ks: list[int] = MISSING
    distill_weight: float = MISSING
    distill_temperature: float = MISSING
    distill_inputs: str = MISSING
    distill_standardize: bool = MISSING
    seed: int = MISSING


@dataclass
class NCFSchema:
    name: str = MISSING
    inputs: NCFInputsSchema = MISSING
    datamodule: NCFDataModuleSchema = MISSING
    # null or a mapping of NCFContentSchema keys. Typed Any because OmegaConf 2.3 cannot merge
    # an override mapping into a null structured node (`ncf.content={categorical: [language]}`
    # raises AttributeError in OmegaConf.update); check_config validates it against the schema.
    content: Any = field(default=MISSING, metadata={"schema": NCFContentSchema})
    model: NCFModelSchema = MISSING
    module: NCFModuleSchema = MISSING
    monitor: str = MISSING
    patience: int = MISSING
    refit: bool = MISSING
    ema_decay: float | None = MISSING
    ensemble_size: int = MISSING


# --- data: conf/data/*.yaml ---------------------------------------------------------------


@dataclass
class CleaningSchema:  # watchlog.cleaning.CleaningConfig
    _target_: str = MISSING
    duplicates: str = MISSING
    min_watch_seconds: float | None = MISSING
    min_watch_fraction: float | None = MISSING
    lookback_days: float | None = MISSING
    end: str | None = MISSING
    min_learner_watches: int = MISSING
    min_course_watches: int = MISSING
    iterate: bool = MISSING
    activity_before: str | None = MISSING


@dataclass
class SyntheticSourceSchema:  # watchlog.synthetic.generate_platform (-> simulate_tables)
    _target_: str = MISSING
    n_learners: int = MISSING
    n_courses: int = MISSING
    n_days: int = MISSING
    start: str = MISSING
    slate_size: int = MISSING
    candidates_per_slot: int = MISSING
    policy_affinity_weight: float = MISSING
    chunk_learners: int = MISSING
    seed: int = MISSING


@dataclass
class MovieLensSourceSchema:  # watchlog.loaders.load_movielens / _100k / _1m
    _target_: str = MISSING
    path: str = MISSING
    watch: str = MISSING
    seconds_per_star: float = MISSING
    seconds: float = MISSING
    min_rating: float | None = MISSING
    click_threshold: float = MISSING
    segment_column: str | None = MISSING
    duplicates: str = MISSING


@dataclass
class TableSpecSchema:  # watchlog.loaders.tabular.TableSpec as a mapping
    path: str = MISSING
    format: str | None = MISSING
    # contract column -> your column (null: not mapped), and constants for contract columns
    # you lack (null: not filled): the yaml lists every contract column of the table, so a
    # plain override sets any of them
    columns: dict[str, str | None] = MISSING
    fill: dict[str, Any] = MISSING
    extra: list[str] | None = MISSING
    delimiter: str | None = MISSING
    encoding: str = MISSING
    quoting: bool = MISSING
    multiline: bool = MISSING


@dataclass
class EntityTableSpecSchema(TableSpecSchema):  # learners / courses: path null = no table
    path: str | None = MISSING


@dataclass
class TablesSourceSchema:  # watchlog.loaders.load_tables
    _target_: str = MISSING
    events: TableSpecSchema = MISSING
    learners: EntityTableSpecSchema = MISSING
    courses: EntityTableSpecSchema = MISSING
    ts_unit: str | None = MISSING
    duplicates: str = MISSING
    strict_clicked: bool = MISSING


@dataclass
class SyntheticDataSchema:
    name: str = MISSING
    source: SyntheticSourceSchema = MISSING
    cleaning: CleaningSchema = MISSING


@dataclass
class MovieLensDataSchema:
    name: str = MISSING
    source: MovieLensSourceSchema = MISSING
    cleaning: CleaningSchema = MISSING


@dataclass
class TablesDataSchema:
    name: str = MISSING
    source: TablesSourceSchema = MISSING
    cleaning: CleaningSchema = MISSING


# --- blend: conf/blend/*.yaml -------------------------------------------------------------


@dataclass
class ItemItemSchema:  # blend.ItemItem
    _target_: str = MISSING
    l2: float = MISSING
    rank: int = MISSING
    seed: int = MISSING


@dataclass
class CandidatesSchema:  # blend.CandidateBuilder
    _target_: str = MISSING
    n_retrieve: int = MISSING
    n_fallback: int = MISSING
    popularity_days: float | None = MISSING
    group_columns: list[str] = MISSING
    item_item: ItemItemSchema | None = MISSING
    learner_learner: ItemItemSchema | None = None  # blend.LearnerLearner (same arguments)


@dataclass
class LogisticGridSchema:  # blend.LogisticBlender argument -> values to try
    l2: list[float] = MISSING


@dataclass
class RankGridSchema:  # blend.RankBlender argument -> values to try
    tau: list[float] = MISSING
    objective: list[str] = MISSING


@dataclass
class PersonalizedGridSchema:  # blend.PersonalizedBlender argument -> values to try
    learner_l2: list[float] = MISSING
    segment_l2: list[float] = MISSING
    intercept_l2: list[float] = MISSING


@dataclass
class VariantsSchema:  # blend.make_variants
    kinds: list[str] = MISSING
    # feature -> weight of the fixed-weight baseline: open, the features are the candidates'
    fixed_weights: dict[str, float] = MISSING
    rrf_columns: list[str] = MISSING
    rrf_k: float = MISSING
    logistic: LogisticGridSchema = MISSING
    rank: RankGridSchema = MISSING
    personalized: PersonalizedGridSchema = MISSING


@dataclass
class ReplaySchema:  # blend.study.replay_study keywords, plus the switch
    enabled: bool = MISSING
    methods: list[str] = MISSING
    objectives: list[str] = MISSING
    tau: float = MISSING
    max_evaluations: int = MISSING


@dataclass
class RetrievalSchema:  # ncf.ann.ItemIndex
    _target_: str = MISSING
    method: str = MISSING
    hnsw_m: int = MISSING
    hnsw_ef_construction: int = MISSING
    hnsw_ef_search: int = MISSING
    ivf_nlist: int | None = MISSING
    ivf_nprobe: int = MISSING
    seed: int = MISSING


@dataclass
class BlendSchema:
    name: str = MISSING
    candidates: CandidatesSchema = MISSING
    k: int = MISSING
    gain: str = MISSING
    features: list[str] = MISSING
    normalizations: list[str] = MISSING
    variants: VariantsSchema = MISSING
    serve: str = MISSING
    serve_retrieval: RetrievalSchema = MISSING
    replay: ReplaySchema = MISSING
    n_boot: int = MISSING
    holdout_fraction: float = MISSING
    holdout_draws: int = MISSING
    learners_per_chunk: int = MISSING
    curve_k: int = MISSING  # metric-vs-K curves on test up to this K (0: none)


# --- glmix: conf/glmix/*.yaml -------------------------------------------------------------


@dataclass
class RowsSchema:  # glmix.row_sets keywords
    events: str = MISSING
    label: str = MISSING
    negatives: str = "impressions"  # impressions | sampled (implicit data: no impressions)
    negative_ratio: float = 4.0  # sampled negatives per positive (negatives=sampled)


@dataclass
class WeightingSchema:  # glmix.sample_weights / watch_time_weights keywords
    kind: str = MISSING
    scale: float = MISSING
    cap: float = MISSING
    min_watch_seconds: float = MISSING


@dataclass
class TableFeaturesSchema:  # glmix.entity_features.TableEncoder spec: FeatureEncoder + scaled
    categorical: list[str] = MISSING
    multi_hot: list[str] = MISSING
    numeric: list[str] = MISSING
    # FeatureEncoder: null, an int >= 1 (rows) or a float in (0, 1) (share of the rows): a
    # union OmegaConf cannot type (a float field would turn 5 into 5.0, a share); check_config
    # checks the type named in the metadata, FeatureEncoder the range.
    min_frequency: Any = field(default=MISSING, metadata={"types": (int, float)})
    # null or column -> factor (raw value times factor; open, the columns are the table's):
    # Any, not dict[str, float] | None, because OmegaConf 2.3 cannot merge an override mapping
    # into a null typed mapping either (see NCFSchema.content); check_config checks the values.
    scaled: Any = field(default=MISSING, metadata={"value_types": (int, float)})


@dataclass
class LabelFactorsSchema:  # EntityFeaturizer factor_rank / factor_scale
    rank: int = MISSING
    scale: float = MISSING


@dataclass
class GLMixFeaturesSchema:  # glmix.EntityFeaturizer (see experiments.train_glmix.featurizer_from)
    learner: TableFeaturesSchema = MISSING
    course: TableFeaturesSchema = MISSING
    # null or a mapping of LabelFactorsSchema keys: Any for the reason NCFSchema.content is
    # (a null structured node takes no override mapping); check_config validates it.
    label_factors: Any = field(default=MISSING, metadata={"schema": LabelFactorsSchema})


@dataclass
class DesignSchema:  # glmix.EntityFeaturizer global_terms / crosses / coordinates
    global_terms: list[str] = MISSING
    crosses: list[list[str]] = MISSING
    # coordinate name -> its terms: open, the coordinates are the config's (as model.random)
    coordinates: dict[str, list[str]] = MISSING


@dataclass
class FixedEffectSchema:  # glmix.FixedEffect (the keywords the yamls set)
    _target_: str = MISSING
    l2: float = MISSING
    tol: float | None = MISSING


@dataclass
class RandomEffectSchema:  # glmix.RandomEffect (the keywords the yamls set)
    _target_: str = MISSING
    key: str = MISSING
    l2: float = MISSING
    intercept_l2: float | None = MISSING


@dataclass
class GLMixModelSchema:  # glmix.GLMix (`distributed` is given in code)
    _target_: str = MISSING
    fixed: FixedEffectSchema = MISSING
    # coordinate name -> its random effect: open, names match design.coordinates. A new one
    # goes in a yaml option: OmegaConf 2.3 cannot add an entry to a mapping of structured
    # values from the command line (`+glmix.model.random.x={...}`: "dict is not a subclass").
    random: dict[str, RandomEffectSchema] = MISSING
    passes: int = MISSING
    keep_best: bool = MISSING


@dataclass
class GLMixSchema:
    name: str = MISSING
    rows: RowsSchema = MISSING
    weighting: WeightingSchema = MISSING
    features: GLMixFeaturesSchema = MISSING
    design: DesignSchema = MISSING
    refit: bool = MISSING
    model: GLMixModelSchema = MISSING


# (group, name in the group, schema): the names the yaml defaults lists use
SCHEMAS: tuple[tuple[str, str, type], ...] = (
    ("ncf", "base_ncf", NCFSchema),
    ("data", "base_synthetic", SyntheticDataSchema),
    ("data", "base_movielens", MovieLensDataSchema),
    ("data", "base_tables", TablesDataSchema),
    ("blend", "base_blend", BlendSchema),
    ("glmix", "base_glmix", GLMixSchema),
)


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent: storing again replaces)."""
    cs = ConfigStore.instance()
    for group, name, schema in SCHEMAS:
        cs.store(group=group, name=name, node=schema)


class ConfigSchemaError(KeyError):
    """A composed config holds a key its schema does not have (added with Hydra's `+`), or
    an open (`Any`) node whose value breaks the schema or the types named in its field's
    metadata."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigSchemaError` naming every key of a typed node that its schema lacks, and
    every problem of an `Any` field that carries a schema (`ncf.content`,
    `glmix.features.label_factors`), a union of types (`min_frequency`) or the types of a
    mapping's values (`scaled`) in its metadata.

    Composition already rejects unknown keys from yaml files and plain overrides; only Hydra's
    `+key=value` gets them in, and a constructor would then fail far later (after the data
    stage) or, for a key read by name, the value would be ignored."""
    problems = _problems(cfg, "") + _unknown_key_problems(cfg)
    if problems:
        raise ConfigSchemaError(
            "config keys outside their group's schema or yaml files (experiments/schemas.py):\n"
            + "\n".join(f"  {key}: {why}" for key, why in problems)
            + "\nFix the spelling or the type; a new key goes in the yaml (and in its schema)."
        )
    bad = _value_problems(cfg)
    if bad:
        raise ConfigSchemaError(
            "config values a stage would refuse (out of range, unknown or of the wrong type), "
            "found before any work:\n"
            + "\n".join(f"  {key}={value!r}: {rule}" for key, value, rule in bad)
        )


# blend.variants.KINDS and "best" (written out: importing blend would import torch here;
# tests/test_config_schemas.py checks they agree)
SERVE_CHOICES = ("best", "fixed", "rrf", "logistic", "rank", "personalized")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _share(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1


def _open_share(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1


# Values a stage would refuse only when it runs (after the earlier stages trained): checked
# up front. (dotted key, test, the rule); a key the config lacks is not checked.
_VALUE_RULES: tuple[tuple[str, Any, str], ...] = (
    ("seed", _int, "an int (it seeds the data, the models' fits and the intervals)"),
    ("threads", lambda v: v is None or _positive_int(v), "null or an int >= 1"),
    ("trainer.max_epochs", lambda v: v is None or _positive_int(v), "null or an int >= 1"),
    ("ncf.module.lr", lambda v: isinstance(v, int | float) and v > 0, "a number > 0"),
    ("glmix.model.passes", _positive_int, "an int >= 1"),
    ("blend.k", _positive_int, "an int >= 1 (the served list length)"),
    ("blend.candidates.n_retrieve", _positive_int, "an int >= 1"),
    ("blend.candidates.n_fallback", _positive_int, "an int >= 1"),
    ("blend.n_boot", _positive_int, "an int >= 1"),
    ("blend.holdout_fraction", _open_share, "a share in (0, 1) of the validation labels"),
    ("blend.holdout_draws", _positive_int, "an int >= 1 (random divisions of the labels)"),
    ("blend.serve", lambda v: v in SERVE_CHOICES, f"one of {', '.join(SERVE_CHOICES)}"),
    ("evaluate.ks", lambda v: len(v) > 0 and all(_positive_int(k) for k in v),
     "a list of ints >= 1"),
    ("evaluate.n_boot", _positive_int, "an int >= 1"),
    ("export.gates.k", _positive_int, "an int >= 1"),
    ("export.gates.min_coverage", _share, "a share in [0, 1]"),
    ("export.gates.max_fallback_share", _share, "a share in [0, 1]"),
    ("export.sink.keep_versions", _positive_int,
     "an int >= 1 (versions kept, the current one included)"),
    ("evaluate.ci", _open_share, "a level in (0, 1), e.g. 0.95"),
)  # fmt: skip


# Values that must be one of the code's own names: (dotted key, module, constant). The
# constant is imported when a config is checked (importing blend or ncf here, at import, would
# load torch for every command); a key whose value is a list checks each item.
_CHOICE_RULES: tuple[tuple[str, str, str], ...] = (
    ("export.sink.kind", "export.sinks", "SINK_KINDS"),
    ("outputs.plot_method", "ncf.plots", "METHODS"),
    ("blend.variants.kinds", "blend.variants", "KINDS"),
    ("blend.variants.rank.objective", "blend.blenders", "RANK_OBJECTIVES"),
    ("blend.replay.methods", "blend.replay", "METHODS"),
    ("blend.replay.objectives", "blend.replay", "OBJECTIVES"),
)


# The rules above that judge null too (for the others null is left to the code reading it).
_CHECKED_WHEN_NULL = ("seed", "threads", "trainer.max_epochs")

# Values that must agree with another key: (key, other key, test(value, other), the rule).
_RELATION_RULES: tuple[tuple[str, str, Any, str], ...] = (
    ("blend.candidates.n_fallback", "blend.k", lambda n, k: n >= k,
     "at least blend.k={other}: a learner without history is served its fallback list "
     "alone, so fewer gives it a list shorter than k (and the export gate, exactly k rows per "
     "learner, refuses the version)"),
)  # fmt: skip


def _select(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key, resolved; not found when the config lacks it (a null
    value is found) or it cannot resolve here."""
    absent = object()
    try:
        node = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve here (e.g. hydra:...)
        return False, None
    if node is absent:
        return False, None
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return True, value


def _value_problems(cfg: DictConfig) -> list[tuple[str, Any, str]]:
    out = []
    for key, test, rule in _VALUE_RULES:
        found, value = _select(cfg, key)
        if not found or (value is None and key not in _CHECKED_WHEN_NULL):
            continue
        try:
            ok = bool(test(value))
        except TypeError:
            ok = False
        if not ok:
            out.append((key, value, rule))
    out.extend(_choice_problems(cfg))
    for key, other_key, test, rule in _RELATION_RULES:
        (found, value), (found_other, other) = _select(cfg, key), _select(cfg, other_key)
        if not (found and found_other) or value is None or other is None:
            continue
        try:
            ok = bool(test(value, other))
        except TypeError:
            ok = True  # an ill-typed value: its own rule (or schema) names it
        if not ok:
            out.append((key, value, rule.format(other=other)))
    return out


# Groups and nodes without a schema: their known keys are those their yaml files set (the
# group's options, conf/<group>/*.yaml; for `stages` and `outputs` the commands' own configs,
# conf/*.yaml) and, for `trainer`, the keywords of Lightning's Trainer too. Nested keys are
# checked below the yaml's own mappings, except under `trainer.callbacks` (named by the user).
_CONF = Path(__file__).resolve().parents[1] / "conf"
_UNSCHEMED_NODES = ("trainer", "export", "evaluate", "stages", "outputs")


def _unknown_key_problems(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, why) of every key of an unschemed node (`_UNSCHEMED_NODES`) that its yaml files
    do not set, with the closest known keys; for `trainer`, Lightning's Trainer keywords
    count as known."""
    from experiments.objective import closest

    out: list[tuple[str, str]] = []
    for name in _UNSCHEMED_NODES:
        node = cfg.get(name) if isinstance(cfg, DictConfig) else None
        if not isinstance(node, DictConfig):
            continue
        known = _yaml_keys(name)
        unknown = [k for k in _dotted_keys(node, name, known) if k not in known]
        if name == "trainer" and unknown:
            known |= {f"trainer.{k}" for k in _trainer_keywords()}
            unknown = [k for k in unknown if k not in known]
        where = "Lightning's Trainer keywords and " if name == "trainer" else ""
        for key in unknown:
            parent, leaf = key.rsplit(".", 1)
            siblings = sorted(k.rsplit(".", 1)[1] for k in known if k.rsplit(".", 1)[0] == parent)
            close = [f"{parent}.{k}" for k in closest(leaf, siblings)]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            out.append((key, f"not a known key of {name} ({where}its yaml files){hint}"))
    return out


def _dotted_keys(node: DictConfig, prefix: str, known: set[str]) -> list[str]:
    """The node's keys as dotted names, into the mappings the yaml files have too (a key
    the yaml holds as a value, e.g. the resolved copy `export.publish.sink`, is a leaf)."""
    keys = []
    for key in node:
        full = f"{prefix}.{key}"
        keys.append(full)
        child = node._get_node(key)
        branch = any(k.startswith(f"{full}.") for k in known)
        if isinstance(child, DictConfig) and not _is_value_less(child) and branch:
            keys.extend(_dotted_keys(child, full, known))
    return keys


@cache
def _yaml_keys(name: str) -> set[str]:
    """Dotted keys of `name` as its yaml files set them: conf/<name>/*.yaml (a group) and the
    `name` node of the commands' configs (conf/*.yaml); none under `trainer.callbacks`."""
    trees = [OmegaConf.load(p) for p in sorted((_CONF / name).glob("*.yaml"))]
    trees += [c[name] for c in (OmegaConf.load(p) for p in sorted(_CONF.glob("*.yaml")))
              if isinstance(c.get(name), DictConfig)]  # fmt: skip
    keys: set[str] = set()
    for tree in trees:
        keys |= _tree_keys(tree, name)
    return keys


def _tree_keys(node: DictConfig, prefix: str) -> set[str]:
    keys: set[str] = set()
    for key in node:
        if key == "defaults":
            continue
        full = f"{prefix}.{key}"
        keys.add(full)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and full != "trainer.callbacks":
            keys |= _tree_keys(child, full)
    return keys


@cache
def _trainer_keywords() -> tuple[str, ...]:
    import inspect

    from pytorch_lightning import Trainer  # here: only when a trainer key is not the yaml's

    return tuple(p for p in inspect.signature(Trainer.__init__).parameters if p != "self")


def _choice_problems(cfg: DictConfig) -> list[tuple[str, Any, str]]:
    """(key, value, rule) of every `_CHOICE_RULES` key whose value (or an item of its list)
    is not one of the code's names for it."""
    from importlib import import_module

    out = []
    for key, module, constant in _CHOICE_RULES:
        found, value = _select(cfg, key)
        if not found or value is None:
            continue
        choices = tuple(getattr(import_module(module), constant))
        items = value if isinstance(value, list) else [value]
        unknown = [v for v in items if not isinstance(v, str) or v not in choices]
        if not unknown:
            continue
        rule = f"one of {', '.join(choices)} ({module}.{constant})"
        if isinstance(value, list):
            rule = f"a list of {rule[7:]}; unknown: {', '.join(map(repr, unknown))}"
        out.append((key, value, rule))
    return out


def _problems(node: Any, prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, ListConfig) and not _is_value_less(node):
        for i in range(len(node)):
            out.extend(_problems(node._get_node(i), f"{prefix}{i}."))
    if not isinstance(node, DictConfig) or _is_value_less(node):
        return out
    schema = OmegaConf.get_type(node)
    declared = {f.name: f for f in fields(schema)} if is_dataclass(schema) else None
    for key in node:
        full, child = f"{prefix}{key}", node._get_node(key)
        if declared is None:
            out.extend(_problems(child, f"{full}."))
        elif key not in declared:
            out.append((full, f"not a key of {schema.__name__} (added with `+`?)"))
        elif "schema" in declared[key].metadata:
            out.extend(_open_node_problems(child, full, declared[key].metadata["schema"]))
        elif "types" in declared[key].metadata:
            out.extend(_value_type_problems(child, full, declared[key].metadata["types"]))
        elif "value_types" in declared[key].metadata:
            out.extend(_mapping_problems(child, full, declared[key].metadata["value_types"]))
        else:
            out.extend(_problems(child, f"{full}."))
    return out


def _open_node_problems(node: Any, full: str, schema: type) -> list[tuple[str, str]]:
    if not isinstance(node, DictConfig) or _is_value_less(node):
        return []  # null (or a scalar the code using it will reject with its own message)
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except (ConfigKeyError, ValidationError) as e:
        key = getattr(e, "full_key", "") or ""
        why = str(e).splitlines()[0]
        return [(f"{full}.{key}" if key else full, f"{why} ({schema.__name__})")]
    return []


def _value_type_problems(
    node: Any, full: str, types: tuple[type, ...], nullable: bool = True
) -> list[tuple[str, str]]:
    if nullable and _is_value_less(node):
        return []  # null; `???` and interpolations fail or resolve where they are read
    value = node if isinstance(node, DictConfig | ListConfig) else node._value()
    if isinstance(value, types) and not isinstance(value, bool):  # YAML's true is no count
        return []
    names = " or ".join(t.__name__ for t in types)
    expected = f"null or {names}" if nullable else names
    return [(full, f"expected {expected}; got {value!r} ({type(value).__name__})")]


def _mapping_problems(node: Any, full: str, types: tuple[type, ...]) -> list[tuple[str, str]]:
    """Null, or a mapping whose every value is one of `types` (not null)."""
    if _is_value_less(node):
        return []
    if not isinstance(node, DictConfig):
        names = " or ".join(t.__name__ for t in types)
        return [(full, f"expected null or a mapping {{name: {names}}}; got {node._value()!r}")]
    out: list[tuple[str, str]] = []
    for key in node:
        out.extend(_value_type_problems(node._get_node(key), f"{full}.{key}", types, False))
    return out


def _is_value_less(node: Any) -> bool:
    return node._is_none() or node._is_missing() or node._is_interpolation()
