"""ncf.teacher and ncf.losses.distillation: the EASE teacher's scores, the distillation loss
against a dense version, where the datamodule fits teachers (no leakage), and the checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from baselines.ease import ease_weights
from baselines.ease_low_rank import low_rank_ease
from ncf.bags import csr_bags
from ncf.inputs import InputBuilder, Snapshot
from ncf.losses import distillation, standardize_scores
from ncf.teacher import fit_teacher
from watchlog.cleaning import CleaningConfig, clean
from watchlog.splits import stratified_split, temporal_split


class _Dot:
    def score(self, a, b):
        return a @ b.T


def _history(rows) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_teacher_scores_are_binary_history_times_ease_weights():
    x = sp.random(40, 12, density=0.3, format="csr", random_state=0, dtype=np.float32)
    x.data = np.abs(x.data) * 3 + 0.1  # weights other than 1: the teacher reads them as watches
    snap = Snapshot("train_0", history=x, seen=x, course_bags=sp.identity(12, format="csr"))
    teacher = fit_teacher(snap, l2=5.0)
    B = ease_weights(x, 5.0)
    assert teacher.key == "teacher/train_0" and np.allclose(np.diag(B), 0)
    rows = np.array([3, 0, 17])
    got = teacher.scores(csr_bags(x, rows)).numpy()  # (3, 12)
    np.testing.assert_allclose(got, (x[rows] > 0).astype(np.float32) @ B, rtol=1e-5, atol=1e-6)


def test_low_rank_teacher_scores_are_history_times_left_times_right():
    x = sp.random(40, 12, density=0.3, format="csr", random_state=0, dtype=np.float32)
    x.data = np.abs(x.data) * 3 + 0.1
    snap = Snapshot("train_0", history=x, seen=x, course_bags=sp.identity(12, format="csr"))
    teacher = fit_teacher(snap, l2=5.0, rank=4)
    assert teacher.weights.shape == (12, 4) and teacher.right.shape == (4, 12)
    assert teacher.nbytes == 2 * 12 * 4 * 4
    rows = np.array([3, 0, 17])
    got = teacher.scores(csr_bags(x, rows)).numpy()
    xb = (x[rows] > 0).astype(np.float32).toarray()  # (3, 12) binary
    expect = xb @ teacher.weights.numpy() @ teacher.right.numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    # at full rank it is dense EASE off each learner's own courses
    full = fit_teacher(snap, l2=5.0, rank=12).scores(csr_bags(x, rows)).numpy()
    dense = xb @ ease_weights(x, 5.0)
    off = xb == 0
    np.testing.assert_allclose(full[off], dense[off], rtol=1e-3, atol=1e-4)


def test_distillation_matches_dense_cross_entropy_with_inputs_left_out():
    L, C = torch.randn(2, 3), torch.randn(5, 3)
    history = csr_bags(_history([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]]))
    teacher = torch.randn(2, 5)
    loss = distillation(L, lambda idx: C, _Dot(), teacher, history, temperature=0.5)
    keep = torch.tensor([[False, True, True, False, True], [True] * 5])
    t = torch.softmax((teacher / 0.5).masked_fill(~keep, -np.inf), 1)
    logp = torch.log_softmax((L @ C.T).masked_fill(~keep, -np.inf), 1)
    expect = -(t * logp.masked_fill(~keep, 0)).sum(1).mean()
    torch.testing.assert_close(loss, expect)
    assert torch.isfinite(loss)


def test_distillation_pulls_the_model_towards_the_teacher():
    """Its gradient vanishes where the model's logits equal the teacher's / T (up to a
    per-learner constant) on the non-input courses, and not elsewhere."""
    history = csr_bags(_history([[1, 0, 0, 0], [0, 1, 0, 0]]))
    teacher = torch.tensor([[9.0, 0.2, 0.4, 0.1], [0.3, -5.0, 0.1, 0.5]])
    T = 0.1

    def grad(logits):
        logits = logits.clone().requires_grad_(True)

        class Fixed:
            def score(self, a, b):
                return logits

        distillation(
            torch.zeros(2, 1), lambda idx: None, Fixed(), teacher, history, temperature=T
        ).backward()
        return logits.grad

    at_teacher = teacher / T + torch.tensor([[1.0], [-2.0]])  # shifted rows: same softmax
    at_teacher[0, 0] = at_teacher[1, 1] = 123.0  # input courses: any value, no gradient
    assert grad(at_teacher).abs().max() < 1e-6
    assert grad(torch.zeros(2, 4)).abs().max() > 0.1


def test_standardized_scores_have_mean_0_and_sd_1_over_each_learners_candidates():
    history = csr_bags(_history([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]))
    scores = torch.tensor([[50.0, 1.0, 3.0, -9.0, 2.0, 6.0], [0.1, 0.4, 0.2, 0.9, 0.3, 0.0]])
    z = standardize_scores(scores, history)
    keep = torch.tensor([[False, True, True, False, True, True], [True] * 6])
    for row in range(2):
        cand = z[row][keep[row]]
        torch.testing.assert_close(cand.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
        torch.testing.assert_close(cand.pow(2).mean(), torch.tensor(1.0))
        # the ranking of the candidates is the teacher's
        assert torch.equal(cand.argsort(), scores[row][keep[row]].argsort())
    assert torch.equal(z[0][~keep[0]], torch.zeros(2))  # input courses: masked later anyway


def test_standardized_distillation_ignores_each_learners_scale_and_shift():
    """EASE scores are sums over the history: a longer history is a sharper raw teacher. With
    standardize=True a learner's teacher scores a * s + b (a > 0) give the target of s."""
    L, C = torch.randn(2, 3), torch.randn(5, 3)
    history = csr_bags(_history([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]]))
    teacher = torch.randn(2, 5)
    scaled = teacher * torch.tensor([[7.0], [0.2]]) + torch.tensor([[3.0], [-1.0]])

    def loss(t, standardize):
        return distillation(
            L, lambda idx: C, _Dot(), t, history, temperature=0.5, standardize=standardize
        )

    torch.testing.assert_close(loss(scaled, True), loss(teacher, True))
    assert not torch.allclose(loss(scaled, False), loss(teacher, False))
    expect = distillation(
        L, lambda idx: C, _Dot(), standardize_scores(teacher, history), history, temperature=0.5
    )
    torch.testing.assert_close(loss(teacher, True), expect)


def test_datamodule_fits_a_teacher_per_denoising_snapshot_on_its_history(small_platform):
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    dm = NCFDataModule(log, split, InputBuilder(), teacher_l2=20.0, teacher_rank=None)
    dm.setup()
    (teacher,) = dm.teachers()
    np.testing.assert_array_equal(teacher.weights.numpy(), ease_weights(dm.valid.history, 20.0))
    # by default the teacher is low-rank: the factors of the same snapshot's history
    (low,) = NCFDataModule(log, split, InputBuilder(), teacher_l2=20.0, teacher_rank=8).teachers()
    expect = low_rank_ease(dm.valid.history, 20.0, rank=8, seed=0)
    np.testing.assert_array_equal(low.weights.numpy(), expect.left)
    np.testing.assert_array_equal(low.right.numpy(), expect.right)
    # the history it is fitted on holds no validation or test pair (asserted in
    # test_ncf_inputs); the refit's teacher moves to the test snapshot with the validation pairs
    (refit_teacher,) = dm.for_refit().teachers()
    assert refit_teacher.key == "teacher/test"
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher"].key == "teacher/valid"
    assert NCFDataModule(log, split, InputBuilder()).teachers() == [None]


def _snapshot_with_labels(seed: int = 0) -> Snapshot:
    """Two blocks of courses watched together: the labels are the block's unwatched courses."""
    rng = np.random.default_rng(seed)
    hist = np.zeros((60, 12), np.float32)
    labels = np.zeros_like(hist)
    for u in range(60):
        block = np.arange(6) if u % 2 else np.arange(6, 12)
        seen = rng.choice(block, 3, replace=False)
        hist[u, seen] = 1.0
        labels[u, rng.choice(np.setdiff1d(block, seen), 1)] = 1.0
    h = sp.csr_matrix(hist)
    return Snapshot("valid", h, h.copy(), sp.csr_matrix((12, 12), dtype=np.float32),
                    labels=sp.csr_matrix(labels))  # fmt: skip


def test_teacher_l2_is_chosen_on_the_snapshots_labels_by_ndcg():
    from baselines.ease_model import EASE
    from baselines.selection import Window
    from ncf.teacher import choose_teacher_l2

    snap = _snapshot_with_labels()
    choice = choose_teacher_l2(snap, [0.5, 1e6], rank=None)
    # a huge L2 shrinks EASE to co-occurrence counts scaled to nothing: the rankings differ
    window = Window(snap.history, snap.labels, exclude=snap.seen)
    for l2 in (0.5, 1e6):
        expect = window.evaluate(EASE(l2, rank=None, max_dense_gib=None))["ndcg@10"]
        assert choice.valid_ndcg[l2] == pytest.approx(expect)
    assert choice.l2 == max(choice.valid_ndcg, key=choice.valid_ndcg.get)
    # equal scores: the first value listed
    same = choose_teacher_l2(snap, [7.0, 7.0 + 1e-9], rank=None)
    assert same.l2 == 7.0
    with pytest.raises(ValueError, match="empty"):
        choose_teacher_l2(snap, [])
    unlabelled = Snapshot("valid", snap.history, snap.seen, snap.course_bags)
    with pytest.raises(ValueError, match="no labels"):
        choose_teacher_l2(unlabelled, [1.0, 2.0])


def test_low_rank_choice_pays_one_svd_and_scores_as_the_ease_baseline(monkeypatch):
    import baselines.ease_low_rank as elr
    from baselines.ease_model import EASE
    from baselines.selection import Window
    from ncf.teacher import choose_teacher_l2

    snap = _snapshot_with_labels()
    window = Window(snap.history, snap.labels, exclude=snap.seen)
    want = {l2: window.evaluate(EASE(l2, rank=4, max_dense_gib=None))["ndcg@10"]
            for l2 in (0.5, 5.0, 1e6)}  # fmt: skip
    svds = []
    real = elr.randomized_svd
    monkeypatch.setattr(elr, "randomized_svd", lambda *a, **k: svds.append(1) or real(*a, **k))
    choice = choose_teacher_l2(snap, [0.5, 5.0, 1e6], rank=4)
    assert len(svds) == 1  # one SVD for the whole grid
    assert choice.valid_ndcg == pytest.approx(want)
    assert choice.l2 == max(want, key=want.get)
    expect = low_rank_ease(snap.history, choice.l2, rank=4)
    np.testing.assert_array_equal(choice.teacher.weights.numpy(), expect.left)
    np.testing.assert_array_equal(choice.teacher.right.numpy(), expect.right)
    assert choice.teacher.key == "teacher/valid"


def test_the_chosen_teacher_is_reused_for_the_validation_snapshot(small_platform):
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    dm = NCFDataModule(log, split, InputBuilder(), teacher_l2=[10, 30], teacher_rank=4)
    (teacher,) = dm.teachers()
    assert teacher is dm.teacher_choice().teacher  # not fitted a second time
    (refit_teacher,) = dm.for_refit().teachers()  # another snapshot: its own fit
    assert refit_teacher.key == "teacher/test" and refit_teacher is not teacher


def test_a_snapshots_teacher_is_fitted_once_however_often_the_loader_is_built(
    small_platform, monkeypatch
):
    """train_dataloader runs at every reload (Lightning's reload_dataloaders_every_n_epochs):
    each run refitted the teacher, a randomized SVD of the same history per epoch (measured:
    3 SVDs of the validation history in a 3-epoch fit with a fixed teacher_l2)."""
    import baselines.ease_low_rank as elr
    from ncf.datamodule import NCFDataModule

    svds = []
    real = elr.randomized_svd
    monkeypatch.setattr(elr, "randomized_svd", lambda *a, **k: svds.append(1) or real(*a, **k))
    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    dm = NCFDataModule(log, split, InputBuilder(), teacher_l2=20.0, teacher_rank=4, batch_size=16)
    dm.setup()  # as Lightning does before building a loader
    loaders = [dm.train_dataloader() for _ in range(3)]  # three epochs' reloads
    assert len(svds) == 1
    (teacher,) = dm.teachers()
    assert all(loader.dataset.teachers[0] is teacher for loader in loaders)
    expect = low_rank_ease(dm.valid.history, 20.0, rank=4, seed=0)  # the same numbers
    np.testing.assert_array_equal(teacher.weights.numpy(), expect.left)
    np.testing.assert_array_equal(teacher.right.numpy(), expect.right)
    refit = dm.for_refit()  # other snapshots: their own teacher, once
    svds.clear()
    for _ in range(3):
        (refit_teacher,) = refit.train_dataloader().dataset.teachers
    assert len(svds) == 1
    assert refit_teacher.key == "teacher/test" and refit.teachers()[0] is refit_teacher
    assert dm.teachers()[0] is teacher and len(svds) == 1  # the copy left the original's alone


def test_datamodule_chooses_the_teacher_l2_on_validation_once_and_the_refit_keeps_it(
    small_platform, monkeypatch
):
    import ncf.datamodule as datamodule
    from ncf.teacher import TeacherChoice

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    calls = []

    def spy(snapshot, grid, rank=None, seed=0):
        calls.append((snapshot.name, list(grid), rank))
        return TeacherChoice(30.0, {10.0: 0.1, 30.0: 0.2})

    monkeypatch.setattr(datamodule, "choose_teacher_l2", spy)
    dm = datamodule.NCFDataModule(log, split, InputBuilder(), teacher_l2=[10, 30], teacher_rank=4)
    (teacher,) = dm.teachers()
    expect = low_rank_ease(dm.valid.history, 30.0, rank=4, seed=0)
    np.testing.assert_array_equal(teacher.weights.numpy(), expect.left)
    (refit_teacher,) = dm.for_refit().teachers()  # fitted on the test snapshot's history...
    assert refit_teacher.key == "teacher/test"
    refit_expect = low_rank_ease(dm.test.history, 30.0, rank=4, seed=0)
    np.testing.assert_array_equal(refit_teacher.weights.numpy(), refit_expect.left)
    assert calls == [("valid", [10, 30], 4)]  # ...with the L2 chosen once, on validation
    one = datamodule.NCFDataModule(log, split, InputBuilder(), teacher_l2=30.0)
    assert one.teacher_choice() == TeacherChoice(30.0, {}) and len(calls) == 1


def test_rolling_snapshots_get_no_teacher(small_platform):
    """A teacher fitted at a later cutoff would know a rolling snapshot's labels."""
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    dm = NCFDataModule(
        log, split, InputBuilder(lookback_days=90), training="rolling+denoising",
        n_cutoffs=2, spacing_days=10, teacher_l2=20.0,
    )  # fmt: skip
    dm.setup()
    teachers = dm.teachers()
    assert teachers[:2] == [None, None] and teachers[2].key == "teacher/valid"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distill_weight": 1.5}, "distill_weight"),
        ({"distill_temperature": 0.0}, "temperature"),
        ({"distill_inputs": "labels"}, "distill_inputs"),
        ({"lr_decay_epochs": 0}, "lr_decay_epochs"),
        ({"lr_final_ratio": 2.0}, "lr_final_ratio"),
    ],
)
def test_module_rejects_bad_distillation_settings(kwargs, match):
    from ncf.model import TwoTower
    from ncf.module import NCFModule

    with pytest.raises(ValueError, match=match):
        NCFModule(TwoTower(5, 7), **kwargs)


def test_training_batches_carry_the_whole_history_where_there_is_a_teacher(small_platform):
    """The learner tower sees a learner's whole history at evaluation; distill_inputs=history
    distils on that input, so the batch carries it (row-normalized like the denoising input),
    a superset of the denoising input."""
    from ncf.datamodule import NCFDataModule
    from ncf.inputs import normalize_rows

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    dm = NCFDataModule(log, split, InputBuilder(), teacher_l2=20.0, batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    full, learners = batch["full_history"], batch["learners"].numpy()
    expect = csr_bags(normalize_rows(dm.valid.history, "mean"), learners)
    torch.testing.assert_close(full.indices, expect.indices)
    torch.testing.assert_close(full.weights, expect.weights)

    def pairs(bags):
        return set(zip(bags.bag_of_entry().tolist(), bags.indices.tolist(), strict=True))

    assert pairs(batch["history"]) < pairs(full)
    no_teacher = NCFDataModule(log, split, InputBuilder(), batch_size=16)
    no_teacher.setup()
    assert next(iter(no_teacher.train_dataloader()))["full_history"] is None


def _module_and_batch(distill_inputs, standardize=False):
    from ncf.model import TwoTower
    from ncf.module import NCFModule

    torch.manual_seed(0)
    x = _history([[1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 1]])
    snap = Snapshot("s", history=x, seen=x, course_bags=sp.identity(6, format="csr"))
    teacher = fit_teacher(snap, l2=1.0)
    module = NCFModule(
        TwoTower(3, 6, bag_dim=8, mlp=[4], dropout=0.0),
        distill_inputs=distill_inputs,
        distill_standardize=standardize,
    )
    part = _history([[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    batch = {
        "learners": torch.arange(3), "history": csr_bags(part), "full_history": csr_bags(x),
        "course_bags": csr_bags(sp.identity(6, format="csr")), "content": None,
    }  # fmt: skip
    return module, batch, teacher


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("which", ["denoised", "history", "both"])
def test_distillation_on_the_denoising_input_the_whole_history_or_both(which, standardize):
    module, batch, teacher = _module_and_batch(which, standardize)
    courses = lambda idx: module.course_embeddings(batch, idx)  # noqa: E731
    L = module.learner_embeddings(batch)
    got = module._distillation(batch, L, courses, teacher)

    def term(history):
        L_h = module.model.learners(history, batch["learners"])
        return distillation(
            L_h,
            courses,
            module.model,
            teacher.scores(history),
            history,
            temperature=0.05,
            standardize=standardize,
        )

    on_input, on_full = term(batch["history"]), term(batch["full_history"])
    expect = {"denoised": on_input, "history": on_full, "both": (on_input + on_full) / 2}[which]
    torch.testing.assert_close(got, expect)
    assert not torch.allclose(on_input, on_full)


def test_cosine_lr_decay_has_a_fixed_length_so_a_shorter_refit_follows_it():
    from ncf.model import TwoTower
    from ncf.module import NCFModule

    module = NCFModule(TwoTower(3, 6), lr=0.1, lr_decay_epochs=4, lr_final_ratio=0.01)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(
        lrs, [0.1, 0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi / 4))), 0.0505,
              0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(3 * np.pi / 4))), 0.001, 0.001],
        rtol=1e-6,
    )  # fmt: skip
    assert isinstance(NCFModule(TwoTower(3, 6)).configure_optimizers(), torch.optim.Adam)


def test_distillation_skips_a_learner_with_every_course_masked_without_nan():
    """A learner who has watched the whole catalogue has no candidate: its row was all -inf,
    the loss NaN, and the NaN reached every gradient."""
    L = torch.randn(2, 3, requires_grad=True)
    C = torch.randn(4, 3)
    history = csr_bags(_history([[1, 1, 1, 1], [1, 0, 0, 0]]))
    teacher = torch.randn(2, 4)
    loss = distillation(L, lambda idx: C, _Dot(), teacher, history, temperature=0.5)
    only = distillation(
        L[1:], lambda idx: C, _Dot(), teacher[1:], csr_bags(_history([[1, 0, 0, 0]])),
        temperature=0.5,
    )  # fmt: skip
    torch.testing.assert_close(loss, only)
    loss.backward()
    assert torch.isfinite(L.grad).all() and (L.grad[0] == 0).all()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_module_masks_the_known_courses_when_the_batch_has_them():
    """Courses watched before the lookback window (`known` / `known_full`) are masked like the
    inputs in the main loss and in both distillation terms."""
    from ncf.losses import full_softmax

    module, batch, teacher = _module_and_batch("both")
    older = _history([[0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    part = _history([[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    full = _history([[1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 1]])
    known, known_full = csr_bags(part + older), csr_bags(((full + older) > 0).astype(np.float32))
    batch = {**batch, "known": known, "known_full": known_full, "teacher": None}
    batch["labels"] = csr_bags(
        _history([[0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]])
    )
    courses = lambda idx: module.course_embeddings(batch, idx)  # noqa: E731
    L = module.learner_embeddings(batch)
    got = module.training_step(batch, 0)
    expect = full_softmax(L, courses, module.model, batch["labels"], known)
    torch.testing.assert_close(got, expect)
    assert not torch.allclose(
        got, full_softmax(L, courses, module.model, batch["labels"], batch["history"])
    )

    def term(inputs, mask):
        L_h = module.model.learners(inputs, batch["learners"])
        return distillation(
            L_h, courses, module.model, teacher.scores(inputs), mask, temperature=0.05
        )

    expect = (term(batch["history"], known) + term(batch["full_history"], known_full)) / 2
    torch.testing.assert_close(module._distillation(batch, L, courses, teacher), expect)
