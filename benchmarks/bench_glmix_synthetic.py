"""GLMix on the synthetic platform: do per-learner coefficients follow the true topic interests,
and does watch-time weighting rank long watches higher?

    python -m benchmarks.bench_glmix_synthetic                       # 10,000 learners, seeds 0-4
    python -m benchmarks.bench_glmix_synthetic --learners 2000 --seeds 0   # smoke run

Data: `watchlog.synthetic.generate_platform` (1,000 courses per 10,000 learners, 450 days),
cleaned (60-second watch threshold), temporal split (45 + 45 days), through the repository's
own `glmix=default` config: training rows = impressions before the validation cutoff, label =
clicked; fixed effect on learner + course features; per-learner coefficients on course
category, difficulty and language; per-course coefficients on learner segment, industry,
seniority, language; 2 passes, the update best on validation kept. Two models per seed, the
same in every way but the sample weights: unweighted, and watch-time weighted (log1p: a click
followed by watching weighs 1 + log1p(watch seconds / 60), every other impression 1).

(a) Topic interests. The platform's true click/watch logit has 6 x interest[learner, topic of
course]; a learner's fitted coefficients on the 12 `course.category=...` features should
follow that learner's row of `truth.learner_interest`. Pearson r per learner over the topics
the learner saw at least `--min-topic-rows` training impressions of, for learners with at least
`--min-rows` training impressions and 3 such topics; reported as the mean and median over those
learners, and pooled over all their (learner, topic) pairs after centring each learner's
coefficients and interests (the per-learner intercept makes only differences identifiable).
Peer, same learners and topics: the smoothed empirical click logit of each (learner, topic),
log((clicks + 1) / (non-clicks + 1)) -- what the raw data say without a model.

(b) Watch-time-graded ranking. Each test learner's distinct impressed (learner, course) pairs
in the test window are ranked by the model's score; NDCG@10 with linear gain = the seconds
watched after those impressions (watched clicks only, 0 otherwise), and with gain = the
watched fraction of the course; learners without a watched click in the test window are left
out (counted). Same learners for both models; paired bootstrap (users resampled) for the
difference. Click AUC alongside, to show what the weighting trades.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks.common import peak_rss_gib, print_table, write_result

WEIGHTINGS = ("none", "log1p")


def prepare(n_learners: int, seed: int, fixed_tol: float):
    from hydra import compose, initialize_config_dir

    from benchmarks.common import RESULTS
    from experiments.data import prepare_data
    from experiments.train_glmix import featurizer_from
    from glmix import row_designs, row_sets
    from glmix.training import fit_featurizer

    conf = RESULTS.parents[1] / "conf"
    n_courses = max(100, n_learners // 10)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "train_glmix",
            overrides=["data=synthetic", f"data.source.n_learners={n_learners}",
                       f"data.source.n_courses={n_courses}", f"seed={seed}",
                       f"glmix.model.fixed.tol={fixed_tol}", "paths.output_dir=."],
        )  # fmt: skip
    data = prepare_data(cfg.data, cfg.split)
    g = cfg.glmix
    rows = row_sets(data.split, events=g.rows.events, label=g.rows.label)
    feats = fit_featurizer(featurizer_from(g, seed), data.log, rows["train"])
    enc = feats.encode(data.log.learners, data.log.courses)
    sets = {
        k: (row_designs(feats, enc, rows[k]), rows[k].keys, rows[k].y)
        for k in ("train", "valid", "test")
    }
    return cfg, data, rows, sets


def topic_agreement(model, data, train_rows, min_rows: int, min_topic_rows: int) -> dict:
    """(a): per-learner coefficients on course.category=T against truth.learner_interest."""
    truth, log = data.truth, data.log
    re = model.coordinates_["per_learner"]
    names = list(re.feature_names_)
    topics = list(truth.topics)
    cols = [names.index(f"course.category={t}") for t in topics]  # (12,) coefficient columns
    lidx = log.learner_ids.to_index(re.ids_.to_ids(np.arange(len(re.ids_))))  # entity -> idx
    coef = np.asarray(re.coef_)[:, cols]  # (E, 12)
    # training impressions and clicks per (learner, topic), in the model's entity order
    pos = np.full(log.n_learners, -1)
    pos[lidx] = np.arange(len(lidx))
    e = pos[train_rows.learner_idx]
    t = truth.course_topic[train_rows.course_idx].astype(np.int64)
    n_t = len(topics)
    rows_et = np.bincount(e * n_t + t, minlength=len(lidx) * n_t).reshape(-1, n_t)
    clicks_et = np.bincount(e * n_t + t, weights=train_rows.y, minlength=len(lidx) * n_t)
    clicks_et = clicks_et.reshape(-1, n_t)
    empirical = np.log((clicks_et + 1) / (rows_et - clicks_et + 1))  # (E, 12) the peer
    interest = truth.learner_interest[lidx]  # (E, 12)
    seen = rows_et >= min_topic_rows  # (E, 12)
    keep = (rows_et.sum(1) >= min_rows) & (seen.sum(1) >= 3)
    out: dict[str, Any] = {"r_learners": int(keep.sum()), "r_pairs": int(seen[keep].sum())}
    for name, est in (("glmix", coef), ("empirical", empirical)):
        r = _rowwise_r(est[keep], interest[keep], seen[keep])
        pooled = _pooled_r(est[keep], interest[keep], seen[keep])
        out[f"{name}_r_mean"] = float(np.nanmean(r))
        out[f"{name}_r_median"] = float(np.nanmedian(r))
        out[f"{name}_r_pooled"] = pooled
    return out


def _centred(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row minus its mean over the masked entries; unmasked entries 0."""
    m = np.where(mask, x, 0.0)
    mean = m.sum(1, keepdims=True) / np.maximum(mask.sum(1, keepdims=True), 1)
    return np.where(mask, x - mean, 0.0)


def _rowwise_r(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n,) Pearson r of each row of a and b over its masked entries (NaN if constant)."""
    ca, cb = _centred(a, mask), _centred(b, mask)
    den = np.sqrt((ca**2).sum(1) * (cb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ca * cb).sum(1) / den, np.nan)


def _pooled_r(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    ca, cb = _centred(a, mask)[mask], _centred(b, mask)[mask]
    return float(np.corrcoef(ca, cb)[0, 1])


def graded_ndcg(scores: np.ndarray, test_rows, log, ks=(10,)) -> dict[str, Any]:
    """(b): per-learner NDCG of test impressions ranked by score, gain = watch time."""
    from evaluation import ranking_metrics

    ev = test_rows.events
    li, ci = test_rows.learner_idx, test_rows.course_idx
    watched = (ev["clicked"].to_numpy(np.float64, na_value=0) == 1) & ev["watched"].to_numpy()
    secs = np.where(watched, ev["watch_seconds"].to_numpy(np.float64, na_value=0.0), 0.0)
    dur = log.courses["duration_seconds"].to_numpy(np.float64)[ci]
    frac = np.where(watched, np.minimum(secs / dur, 1.0), 0.0)
    # distinct (learner, course) pairs: a pair's score is one number (no per-impression
    # features); its gain sums over its impressions
    pair = pd.DataFrame({"l": li, "c": ci, "s": scores, "secs": secs, "frac": frac})
    pair = pair.groupby(["l", "c"], sort=False).agg(s=("s", "first"), secs=("secs", "sum"),
                                                   frac=("frac", "sum")).reset_index()  # fmt: skip
    pair = pair.sort_values(["l", "s"], ascending=[True, False], kind="stable")
    learners, start, count = np.unique(pair["l"].to_numpy(), return_index=True, return_counts=True)
    width = int(count.max())
    rank = np.arange(len(pair)) - np.repeat(start, count)
    topk = np.full((len(learners), width), -1, dtype=np.int64)  # (n_learners, width)
    topk[np.repeat(np.arange(len(learners)), count), rank] = pair["c"].to_numpy()
    out: dict[str, Any] = {"lists": len(learners), "mean_list_length": float(count.mean())}
    per_user = {}
    for gain in ("secs", "frac"):
        row = np.repeat(np.arange(len(learners)), count)
        g = pair[gain].to_numpy()
        truth = sp.csr_matrix((g[g > 0], (row[g > 0], pair["c"].to_numpy()[g > 0])),
                              shape=(len(learners), log.n_courses))  # fmt: skip
        kk = tuple(k for k in ks if k <= width)
        res = ranking_metrics(topk, truth, kk, ndcg_gain="linear")
        for k in kk:
            out[f"ndcg@{k}_{gain}"] = float(res.per_user[f"ndcg@{k}"].mean())
            per_user[f"ndcg@{k}_{gain}"] = (res.users, res.per_user[f"ndcg@{k}"])
        out[f"users_{gain}"] = res.n_users
        out[f"skipped_no_watch_{gain}"] = res.n_skipped_empty
    return out, per_user


def one_seed(n_learners: int, seed: int, args) -> list[dict[str, Any]]:
    from omegaconf import OmegaConf

    from evaluation import paired_bootstrap
    from glmix import sample_weights

    t0 = time.perf_counter()
    cfg, data, rows, sets = prepare(n_learners, seed, args.fixed_tol)
    prep_s = time.perf_counter() - t0
    out, per_user = [], {}
    for kind in WEIGHTINGS:
        from hydra.utils import instantiate

        weighting = {**OmegaConf.to_container(cfg.glmix.weighting), "kind": kind}
        w, counts = sample_weights(rows["train"], courses=data.log.courses, **weighting)
        model = instantiate(cfg.glmix.model, _convert_="all")
        t = time.perf_counter()
        model.fit(*sets["train"], sample_weight=w, validation=sets["valid"])
        fit_s = time.perf_counter() - t
        ev = model.evaluate(*sets["test"], per_entity="learner")
        scores = model.predict_logit(sets["test"][0], sets["test"][1])
        ndcg, per_user[kind] = graded_ndcg(scores, rows["test"], data.log)
        topics = topic_agreement(model, data, rows["train"], args.min_rows, args.min_topic_rows)
        out.append({
            "seed": seed, "learners": n_learners, "weighting": kind,
            "train_rows": len(rows["train"]), "test_rows": len(rows["test"]),
            "watched_clicks_train": counts.get("watched_clicks"),
            "best_update": model.best_["update"], "click_auc": ev["auc"],
            "per_learner_auc": ev["per_entity_auc_mean"], **ndcg, **topics,
            "fit_s": fit_s, "prepare_s": prep_s,
        })  # fmt: skip
        print(f"seed {seed} {kind}: auc {ev['auc']:.4f} ndcg@10 secs "
              f"{ndcg.get('ndcg@10_secs', float('nan')):.4f} r {topics['glmix_r_mean']:.3f} "
              f"fit {fit_s:.1f}s", flush=True)  # fmt: skip
    for key in per_user["log1p"]:
        (ua, a), (ub, b) = per_user["log1p"][key], per_user["none"][key]
        assert np.array_equal(ua, ub)  # same learners, same lists
        pc = paired_bootstrap(a, b, n_boot=1000, seed=seed)
        out[-1][f"{key}_diff_vs_unweighted"] = pc.mean_diff
        out[-1][f"{key}_diff_ci"] = [pc.low, pc.high]
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--learners", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--min-rows", type=int, default=30, help="training impressions per learner")
    ap.add_argument("--min-topic-rows", type=int, default=3, help="per (learner, topic)")
    ap.add_argument("--fixed-tol", type=float, default=1e-4, help="fixed-effect tolerance")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse")
    t0 = time.perf_counter()
    rows = [r for s in args.seeds for r in one_seed(args.learners, s, args)]
    keys = ["seed", "weighting", "click_auc", "per_learner_auc", "ndcg@10_secs",
            "ndcg@10_frac", "users_secs", "glmix_r_mean", "glmix_r_median", "glmix_r_pooled",
            "empirical_r_mean", "empirical_r_pooled", "r_learners", "fit_s"]  # fmt: skip
    table = [{k: r[k] for k in keys} for r in rows]
    for kind in WEIGHTINGS:
        rr = [r for r in table if r["weighting"] == kind]
        table.append({k: ("mean" if k == "seed" else kind if k == "weighting"
                          else float(np.mean([r[k] for r in rr]))) for k in keys})  # fmt: skip
    print_table(table, f"GLMix on the synthetic platform, {args.learners:,} learners")
    write_result(
        "glmix_synthetic",
        table,
        units={
            "click_auc": "AUC of clicks, test impressions",
            "ndcg@10_secs": "NDCG@10, gain = seconds watched (test impressions per learner)",
            "ndcg@10_frac": "NDCG@10, gain = watched fraction of the course",
            "glmix_r_mean": "mean over learners of Pearson r (coefficients vs true interest)",
            "glmix_r_pooled": "Pearson r over (learner, topic) pairs, centred per learner",
            "fit_s": "seconds per GLMix fit (torch threads as run)",
        },  # fmt: skip
        per_seed=rows,
        settings=vars(args),
        total_s=time.perf_counter() - t0,
        peak_gib=peak_rss_gib(),
    )
    return table


if __name__ == "__main__":
    main()
