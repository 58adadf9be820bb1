"""ncf: the watch-history two-tower network (LinkedIn Learning's design), trained with Lightning.

    from ncf import InputBuilder, NCFDataModule, TwoTower, NCFModule, fit_and_test, NCFRecommender

    dm = NCFDataModule(log, split, InputBuilder(lookback_days=365))   # snapshots per cutoff
    dm.setup()
    model = TwoTower(log.n_learners, log.n_courses, bag_dim=256, mlp=(128, 64))
    module = NCFModule(model, loss="full_softmax", course_popularity=dm.course_popularity())
    result = fit_and_test(dm, module, "out/")          # epoch chosen on validation, then test
    rec = NCFRecommender(model, dm.test, log.learner_ids, log.course_ids, inputs=dm.inputs)
    ids, scores = rec.recommend(["u1", "u2"], N=10)    # caller ids, best first
    table = rec.recommend_table(["u1", "u2"], N=10)    # long table (watchlog.candidates)
    later = rec.at(log, "2024-06-01")                  # histories up to a later cutoff

From the command line: `python -m experiments.train_ncf data=... ncf=...` (conf/ncf/*.yaml).
Distillation from an EASE teacher (ncf.teacher), low-rank by default (memory linear in
courses): NCFDataModule(..., teacher_l2=200, teacher_rank=256) and NCFModule(...,
distill_weight=0.5, distill_inputs="both", distill_standardize=True, distill_temperature=1.5),
the default of `conf/ncf/two_tower`.
Plots: `ncf.plots` (UMAP/PCA maps, neighbours, training curves), `ncf.run_plots.plot_run`.
"""

from ncf.ann import RETRIEVAL_METHODS, ItemIndex
from ncf.bags import Bags, csr_bags
from ncf.content import course_content
from ncf.datamodule import NCFDataModule
from ncf.inputs import (
    InputBuilder,
    Reindex,
    Snapshot,
    history_matrix,
    normalize_rows,
    split_history,
)
from ncf.model import Tower, TwoTower
from ncf.module import NCFModule
from ncf.recommender import COLD_START_POLICIES, FORMAT_VERSION, NCFRecommender
from ncf.retrieval import similar_by_cosine, top_k_by_dot
from ncf.training import PhaseTimer, TrainResult, fit_and_test

__all__ = [
    "COLD_START_POLICIES",
    "FORMAT_VERSION",
    "Bags",
    "InputBuilder",
    "ItemIndex",
    "NCFDataModule",
    "NCFModule",
    "NCFRecommender",
    "PhaseTimer",
    "RETRIEVAL_METHODS",
    "Reindex",
    "Snapshot",
    "Tower",
    "TrainResult",
    "TwoTower",
    "course_content",
    "csr_bags",
    "fit_and_test",
    "history_matrix",
    "normalize_rows",
    "similar_by_cosine",
    "split_history",
    "top_k_by_dot",
]
