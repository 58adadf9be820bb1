"""evaluation: ranking and classification metrics, protocols, breakdowns, bootstrap.

Used by every model stage; imports no model package. Typical full-ranking use:

    topk = full_ranking_topk(score_fn, k=10, users=users, exclude=train_csr)  # (n, 10) int
    res = ranking_metrics(topk, test_csr, ks=(5, 10), users=users)
    res.summary()  # {"ndcg@10": ..., "map@10": ..., "n_skipped_empty": ...}

or in one call `evaluate_full_ranking(score_fn, test_csr, ks=(5, 10), exclude=train_csr)`.
Scores that are a product can be given as `Factors(user_emb, item_emb)` (or a callable for
the users' rows): the CPU then multiplies and ranks block by block, never holding a chunk of
scores (`evaluation.threshold_select`).
Embedding quality: `knn_label_agreement(course_emb, languages, k=10)` -> agreement vs chance.
"""

from evaluation.bootstrap import (
    BootstrapCI,
    PairedComparison,
    bootstrap_ci,
    paired_bootstrap,
    percentile_interval,
    segment_breakdown,
)
from evaluation.classification import (
    EntityAUC,
    auc,
    calibration_table,
    entity_bootstrap_auc,
    log_loss,
    per_entity_auc,
)
from evaluation.embedding import knn_label_agreement
from evaluation.full_ranking import (
    Factors,
    TargetRanks,
    evaluate_full_ranking,
    full_ranking_topk,
    resolve_device,
    target_ranks,
)
from evaluation.ranking import (
    MAP_DENOMINATORS,
    NDCG_GAINS,
    RankingMetrics,
    catalogue_coverage,
    intra_list_diversity,
    novelty,
    ranking_metrics,
)
from evaluation.sampled import evaluate_sampled, sample_negatives, sampled_metrics

__all__ = [
    "MAP_DENOMINATORS",
    "NDCG_GAINS",
    "BootstrapCI",
    "EntityAUC",
    "PairedComparison",
    "RankingMetrics",
    "TargetRanks",
    "auc",
    "bootstrap_ci",
    "calibration_table",
    "catalogue_coverage",
    "entity_bootstrap_auc",
    "Factors",
    "evaluate_full_ranking",
    "evaluate_sampled",
    "full_ranking_topk",
    "intra_list_diversity",
    "knn_label_agreement",
    "log_loss",
    "novelty",
    "paired_bootstrap",
    "per_entity_auc",
    "percentile_interval",
    "ranking_metrics",
    "resolve_device",
    "sample_negatives",
    "sampled_metrics",
    "segment_breakdown",
    "target_ranks",
]
