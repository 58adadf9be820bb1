"""Models the two-tower is measured against and learns from, scikit-learn style, on a
learner x course CSR matrix:

    model = EASE(l2=500.0).fit(X_train)                       # (n_learners, n_courses) CSR
    topk = full_ranking_topk(model.score, 10, users=users, exclude=X_train)
    # temporal splits: score from the pre-cutoff history instead of the fitted matrix
    topk = full_ranking_topk(partial(model.score, X_input=X_history), 10, users=users, ...)

- `Popularity` (baselines.popularity), `ItemKNN` on co-watch similarity (baselines.item_knn),
  `EASE` (baselines.ease_model: dense while it fits in memory, else low rank);
- the EASE maths: `ease_weights` in its dense closed form (baselines.ease) and
  `low_rank_ease` with the Gram matrix as diagonal plus low rank, whose memory grows linearly
  in courses (baselines.ease_low_rank; also the two-tower's distillation teacher);
- `Window`, `Candidate`, `baseline_rows` (baselines.selection): each baseline's parameter
  chosen on validation, then one test evaluation, on the inputs the two-tower sees.
  `python -m experiments.baselines` runs them on any data.
"""

from baselines.base import Baseline
from baselines.ease import ease_weights
from baselines.ease_low_rank import LowRankEASE, low_rank_ease
from baselines.ease_model import EASE, dense_ease_peak_gib
from baselines.item_knn import ItemKNN
from baselines.popularity import Popularity
from baselines.selection import (
    EASE_L2,
    KNN_K,
    Candidate,
    Window,
    baseline_rows,
    default_candidates,
)

__all__ = [
    "EASE_L2",
    "KNN_K",
    "Baseline",
    "Candidate",
    "EASE",
    "ItemKNN",
    "LowRankEASE",
    "Popularity",
    "Window",
    "baseline_rows",
    "default_candidates",
    "dense_ease_peak_gib",
    "ease_weights",
    "low_rank_ease",
]
