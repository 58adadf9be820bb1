"""Two CPU processes over gloo fit the same model as one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glmix import FixedEffect, GLMix, RandomEffect, run_distributed


def make_model(distributed: bool) -> GLMix:
    return GLMix(
        # on the CPU: gloo processes, forked below (a child cannot use CUDA once the parent
        # has, and with device "auto" the single-process fit would have)
        fixed=FixedEffect(l2=1.0, device="cpu"),
        random={
            "per_learner": RandomEffect(
                key="learner", l2=2.0, dtype="float64", variances=True, device="cpu"
            ),
            "per_course": RandomEffect(key="course", l2=2.0, dtype="float64", device="cpu"),
        },
        passes=2,
        distributed=distributed,
    )


def load_data(path):
    with np.load(path) as z:
        designs = {"global": z["g"], "per_learner": z["cf"], "per_course": z["lf"]}
        return designs, {"learner": z["li"], "course": z["ci"]}, z["y"], z["w"]


def _worker(rank: int, world_size: int, data_path: str, out_path: str) -> None:
    designs, keys, y, w = load_data(data_path)
    model = make_model(distributed=True).fit(designs, keys, y, sample_weight=w)
    assert model.coordinates_["per_learner"].fit_stats_["solved"] == 60  # all ranks' entities
    if rank == 0:
        model.save(out_path)


def test_two_processes_equal_one(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    li, ci = rng.integers(0, 60, n), rng.integers(0, 25, n)
    lf, cf = rng.standard_normal((60, 2))[li], rng.standard_normal((25, 3))[ci]
    z = lf[:, 0] - cf[:, 1] + 0.5 * (li % 4) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    data = tmp_path / "data.npz"
    np.savez(data, g=np.c_[lf, cf], lf=lf, cf=cf, li=li, ci=ci, y=y, w=rng.uniform(0.5, 2, n))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        designs, keys, y, w = load_data(data)
        single = make_model(distributed=False).fit(designs, keys, y, sample_weight=w)
    finally:
        torch.set_num_threads(n_threads)
    # fork: the children reuse this interpreter's imports (spawn re-imports torch & co.)
    run_distributed(_worker, 2, str(data), str(tmp_path / "model"), start_method="fork")
    two = GLMix.load(tmp_path / "model")
    for name, c in single.coordinates_.items():
        np.testing.assert_allclose(two.coordinates_[name].coef_, c.coef_, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        two.coordinates_["per_learner"].coef_var_,
        single.coordinates_["per_learner"].coef_var_,
        rtol=1e-6,
    )
    obj1 = [h["objective"] for h in single.history_]
    obj2 = [h["objective"] for h in two.history_]
    assert obj2 == pytest.approx(obj1, rel=1e-9)
