"""Tests for experiments.evaluation.metrics: every metric cross-checked against an independent computation.

Tiny generated data only; the whole file runs in a few seconds (most of it tslearn's first
numba compile).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import energy_distance, pearsonr, ttest_ind

from experiments.evaluation import metrics as M


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20251013)


@pytest.fixture
def perturbation(rng):
    """Control and perturbed cells in gene space with a known shift on 5 of 40 genes."""
    n_genes = 40
    base = rng.uniform(0.5, 3.0, size=n_genes)
    shift = np.zeros(n_genes)
    de = np.array([3, 11, 17, 25, 38])
    shift[de] = np.array([2.0, -1.5, 1.2, -0.9, 0.7])
    ctrl = base + 0.3 * rng.standard_normal((60, n_genes))
    obs = base + shift + 0.3 * rng.standard_normal((50, n_genes))
    return ctrl, obs, shift, de


# ------------------------------------------------------------------------------------------
# Pearson
# ------------------------------------------------------------------------------------------
def test_pearson_matches_scipy(rng):
    for _ in range(5):
        a, b = rng.standard_normal(30), rng.standard_normal(30)
        b = b + 0.5 * a
        assert M.pearson_or_zero(a, b) == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)


def test_pearson_of_constant_vector_is_zero(rng):
    a = rng.standard_normal(10)
    assert M.pearson_or_zero(np.zeros(10), a) == 0.0
    assert M.pearson_or_zero(a, np.full(10, 3.0)) == 0.0
    assert M.pearson_or_zero([1.0], [2.0]) == 0.0


# ------------------------------------------------------------------------------------------
# top-k DE genes
# ------------------------------------------------------------------------------------------
def test_top_k_abs_delta_finds_planted_genes(perturbation):
    ctrl, obs, shift, de = perturbation
    top = M.top_k_de_genes(ctrl, obs, k=5)
    # Ordered by |shift|: 2.0, 1.5, 1.2, 0.9, 0.7 (noise on means is ~0.05).
    np.testing.assert_array_equal(top, de[np.argsort(-np.abs(shift[de]))])
    manual = np.argsort(-np.abs(obs.mean(0) - ctrl.mean(0)), kind="stable")[:20]
    np.testing.assert_array_equal(M.top_k_de_genes(ctrl, obs, k=20), manual)


def test_top_k_welch_t_matches_scipy(perturbation):
    ctrl, obs, _, _ = perturbation
    t = ttest_ind(obs, ctrl, equal_var=False).statistic
    expected = np.argsort(-np.abs(t), kind="stable")[:20]
    np.testing.assert_array_equal(M.top_k_de_genes(ctrl, obs, k=20, method="welch_t"), expected)


def test_top_k_is_clipped_and_tie_broken_by_index():
    ctrl = np.zeros((3, 4))
    obs = np.array([[1.0, 0.0, 1.0, -1.0]] * 3)
    np.testing.assert_array_equal(M.top_k_de_genes(ctrl, obs, k=10), [0, 2, 3, 1])
    with pytest.raises(ValueError, match="k=0"):
        M.top_k_de_genes(ctrl, obs, k=0)
    with pytest.raises(ValueError, match="Unknown DE method"):
        M.top_k_de_genes(ctrl, obs, method="wilcoxon")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# delta metrics
# ------------------------------------------------------------------------------------------
def test_delta_metrics_match_manual_computation(perturbation, rng):
    ctrl, obs, shift, _ = perturbation
    pred = ctrl + 0.8 * shift + 0.1 * rng.standard_normal(ctrl.shape)
    res = M.delta_metrics(ctrl, obs, pred, k=20)
    d_obs = obs.mean(0) - ctrl.mean(0)
    d_pred = pred.mean(0) - ctrl.mean(0)
    top = np.argsort(-np.abs(d_obs), kind="stable")[:20]
    assert res.pearson_all == pytest.approx(pearsonr(d_pred, d_obs).statistic, abs=1e-12)
    assert res.mse_all == pytest.approx(np.mean((d_pred - d_obs) ** 2), rel=1e-12)
    assert res.pearson_top_k == pytest.approx(pearsonr(d_pred[top], d_obs[top]).statistic, abs=1e-12)
    assert res.mse_top_k == pytest.approx(np.mean((d_pred[top] - d_obs[top]) ** 2), rel=1e-12)
    np.testing.assert_array_equal(res.top_k_genes, top)
    assert res.k == 20 and res.de_method == "abs_delta"
    assert set(res.as_dict()) == {
        "delta_pearson_all", "delta_mse_all", "delta_pearson_top20", "delta_mse_top20"
    }


def test_top_k_set_comes_from_observed_data_not_prediction(perturbation, rng):
    ctrl, obs, _, _ = perturbation
    a = M.delta_metrics(ctrl, obs, ctrl + rng.standard_normal(ctrl.shape), k=7)
    b = M.delta_metrics(ctrl, obs, ctrl[:3] + 5.0 * rng.standard_normal((3, ctrl.shape[1])), k=7)
    np.testing.assert_array_equal(a.top_k_genes, b.top_k_genes)
    np.testing.assert_array_equal(a.top_k_genes, M.top_k_de_genes(ctrl, obs, k=7))


def test_do_nothing_equals_control_mean_baseline(perturbation, rng):
    ctrl, obs, _, _ = perturbation
    do_nothing = M.delta_metrics(ctrl, obs, ctrl)
    ctrl_mean = M.delta_metrics(ctrl, obs, ctrl.mean(axis=0, keepdims=True))
    assert do_nothing.as_dict() == ctrl_mean.as_dict()
    assert do_nothing.pearson_all == 0.0 and do_nothing.pearson_top_k == 0.0
    d_obs = obs.mean(0) - ctrl.mean(0)
    assert do_nothing.mse_all == pytest.approx(np.mean(d_obs**2), rel=1e-12)
    # Reordered control cells: the mean differs only by rounding; still "no change".
    shuffled = M.delta_metrics(ctrl, obs, ctrl[rng.permutation(ctrl.shape[0])])
    assert shuffled.pearson_all == 0.0 and shuffled.pearson_top_k == 0.0
    assert shuffled.mse_all == pytest.approx(do_nothing.mse_all, rel=1e-12)


def test_shifted_prediction_beats_no_change(perturbation, rng):
    ctrl, obs, shift, _ = perturbation
    shifted = ctrl + shift + 0.3 * rng.standard_normal(ctrl.shape)
    good = M.delta_metrics(ctrl, obs, shifted)
    none = M.delta_metrics(ctrl, obs, ctrl)
    assert good.pearson_all > 0.9 and good.pearson_top_k > 0.9
    assert good.mse_all < 0.1 * none.mse_all and good.mse_top_k < 0.1 * none.mse_top_k
    pca = M.fixed_pca(np.concatenate([ctrl, obs]), 5)
    assert M.e_distance(shifted, obs, pca=pca).value < M.e_distance(ctrl, obs, pca=pca).value
    assert M.wasserstein2(shifted, obs, pca=pca).value < M.wasserstein2(ctrl, obs, pca=pca).value


def test_delta_metrics_accepts_sparse_and_gene_names(perturbation):
    ctrl, obs, shift, _ = perturbation
    names = [f"g{i}" for i in range(ctrl.shape[1])]
    dense = M.delta_metrics(ctrl, obs, ctrl + shift, k=3, gene_names=names)
    sparse = M.delta_metrics(
        scipy.sparse.csr_matrix(ctrl), scipy.sparse.csr_matrix(obs), ctrl + shift, k=3
    )
    assert dense.as_dict() == pytest.approx(sparse.as_dict())
    assert dense.top_k_names == ("g3", "g11", "g17")


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((0, 4)), np.ones((2, 4)), np.ones((2, 4))), "X_ctrl is empty"),
        ((np.ones((2, 4)), np.ones((2, 0)), np.ones((2, 4))), "X_obs is empty"),
        ((np.ones((2, 4)), np.ones((2, 4)), np.ones((2, 5))), "X_pred has 5 features .* X_ctrl has 4"),
        ((np.ones((2, 4)), np.full((2, 4), np.nan), np.ones((2, 4))), "X_obs contains 8 NaN"),
        ((np.ones(4), np.ones((2, 4)), np.ones((2, 4))), "X_ctrl must be 2-D"),
    ],
)
def test_delta_metrics_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        M.delta_metrics(*args)


def test_distance_functions_reject_bad_input():
    with pytest.raises(ValueError, match="Y is empty"):
        M.e_distance(np.ones((3, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match="Y has 3 features"):
        M.wasserstein2(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        M.dtw_distance(np.ones((3, 2)), np.array([[0.0, np.inf]]))
    pca = M.fixed_pca(np.random.default_rng(0).standard_normal((20, 6)), 2)
    with pytest.raises(ValueError, match="fitted on 6"):
        M.e_distance(np.ones((3, 5)), np.ones((3, 5)), pca=pca)


# ------------------------------------------------------------------------------------------
# fixed PCA
# ------------------------------------------------------------------------------------------
def test_fixed_pca_defines_one_space(rng):
    ref = rng.standard_normal((50, 8)) @ rng.standard_normal((8, 8))
    pca = M.fixed_pca(ref, 3)
    X, Y = rng.standard_normal((10, 8)), rng.standard_normal((12, 8)) + 1.0
    direct = M.e_distance(pca.transform(X), pca.transform(Y)).value
    assert M.e_distance(X, Y, pca=pca).value == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="n_components=9"):
        M.fixed_pca(ref, 9)


# ------------------------------------------------------------------------------------------
# E-distance
# ------------------------------------------------------------------------------------------
def _edist_brute_force(X: np.ndarray, Y: np.ndarray) -> float:
    def mean_dist(A, B):
        total = 0.0
        for a in A:
            for b in B:
                total += math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))
        return total / (len(A) * len(B))

    return 2 * mean_dist(X, Y) - mean_dist(X, X) - mean_dist(Y, Y)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 512])
def test_e_distance_matches_double_loop(rng, chunk_size):
    X = rng.standard_normal((13, 3)) * 2.0 + 5.0
    Y = rng.standard_normal((9, 3)) + np.array([5.5, 4.0, 5.0])
    res = M.e_distance(X, Y, chunk_size=chunk_size)
    assert res.value == pytest.approx(_edist_brute_force(X, Y), rel=1e-10)
    assert res.method == "exact" and (res.n_x_used, res.n_y_used) == (13, 9)
    assert M.e_distance(Y, X, chunk_size=chunk_size).value == pytest.approx(res.value, rel=1e-10)


def test_e_distance_is_square_of_scipy_energy_distance_in_1d(rng):
    x, y = rng.standard_normal(40), 0.7 + 1.5 * rng.standard_normal(25)
    res = M.e_distance(x[:, None], y[:, None])
    ed = energy_distance(x, y)
    assert res.value == pytest.approx(ed**2, rel=1e-10)
    assert res.info["energy_distance"] == pytest.approx(ed, rel=1e-10)


def test_e_distance_zero_for_identical_clouds_and_sees_spread(rng):
    X = rng.standard_normal((30, 4)) + 100.0
    assert M.e_distance(X, X[::-1]).value == pytest.approx(0.0, abs=1e-9)
    # Same mean, different spread: the squared-Euclidean (scPerturb default) form would say ~0.
    assert M.e_distance(X, 100.0 + 3.0 * (X - 100.0)).value > 1.0


def test_e_distance_subsamples_above_limit(rng):
    X, Y = rng.standard_normal((50, 2)), rng.standard_normal((20, 2))
    res = M.e_distance(X, Y, max_cells=30, seed=1)
    assert res.method == "subsample"
    assert (res.n_x, res.n_y, res.n_x_used, res.n_y_used) == (50, 20, 30, 20)
    assert res.value == M.e_distance(X, Y, max_cells=30, seed=1).value  # seeded


# ------------------------------------------------------------------------------------------
# Wasserstein
# ------------------------------------------------------------------------------------------
def test_w2_matches_linear_sum_assignment(rng):
    X = rng.standard_normal((25, 4))
    Y = rng.standard_normal((25, 4)) * 1.3 + 0.5
    C = cdist(X, Y, "sqeuclidean")
    rows, cols = linear_sum_assignment(C)
    expected = math.sqrt(C[rows, cols].mean())
    res = M.wasserstein2(X, Y)
    assert res.value == pytest.approx(expected, rel=1e-9)
    assert res.method == "exact" and res.info["converged"]
    assert res.info["num_iter_max"] == M.W2_NUM_ITER_MAX >= 10_000_000


def test_w2_unequal_sizes_matches_assignment_on_duplicated_cloud(rng):
    # Uniform weights on 10 vs 20 points == assignment of 20 points to Y duplicated twice.
    X = rng.standard_normal((20, 3))
    Y = rng.standard_normal((10, 3)) + 1.0
    C = cdist(X, np.concatenate([Y, Y]), "sqeuclidean")
    rows, cols = linear_sum_assignment(C)
    assert M.wasserstein2(X, Y).value == pytest.approx(math.sqrt(C[rows, cols].mean()), rel=1e-9)


def test_w2_fallbacks_are_reported(rng):
    X = rng.standard_normal((80, 5))
    Y = rng.standard_normal((60, 5)) + 0.8
    exact = M.wasserstein2(X, Y)
    sub = M.wasserstein2(X, Y, max_exact=40, seed=3)
    assert sub.method == "subsample" and (sub.n_x_used, sub.n_y_used) == (40, 40)
    sliced = M.wasserstein2(X, Y, max_exact=40, fallback="sliced", n_projections=200, seed=3)
    assert sliced.method == "sliced" and sliced.info["n_projections"] == 200
    # Projections are 1-Lipschitz, so the sliced W2 never exceeds W2.
    assert 0.0 < sliced.value <= exact.value + 1e-9


def test_w2_warns_when_solver_stops_early(rng):
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((200, 3))
    with pytest.warns(RuntimeWarning, match="did not reach optimality"):
        res = M.wasserstein2(X, Y, num_iter_max=10)
    assert res.info["converged"] is False


@pytest.mark.slow
def test_w2_does_not_warn_on_2k_cells(rng):
    # POT's default numItermax (100k) stops early at this size; ours must not.
    X = rng.standard_normal((2000, 10))
    Y = rng.standard_normal((2000, 10)) + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = M.wasserstein2(X, Y)
    assert res.method == "exact" and res.info["converged"]


# ------------------------------------------------------------------------------------------
# DTW and trajectories
# ------------------------------------------------------------------------------------------
def _dtw_brute_force(A: np.ndarray, B: np.ndarray) -> float:
    n, m = len(A), len(B)
    D = np.full((n + 1, m + 1), np.inf)
    D[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = float(np.sum((A[i - 1] - B[j - 1]) ** 2))
            D[i, j] = cost + min(D[i - 1, j], D[i, j - 1], D[i - 1, j - 1])
    return math.sqrt(D[n, m])


def test_dtw_matches_brute_force_dp(rng):
    for n, m in [(6, 6), (5, 9), (12, 4)]:
        A = np.cumsum(rng.standard_normal((n, 3)), axis=0)
        B = np.cumsum(rng.standard_normal((m, 3)), axis=0)
        assert M.dtw_distance(A, B) == pytest.approx(_dtw_brute_force(A, B), rel=1e-10)
    A = rng.standard_normal((8, 2))
    assert M.dtw_distance(A, A) == 0.0
    # A time-stretched copy aligns perfectly.
    assert M.dtw_distance(A, np.repeat(A, 2, axis=0)) == pytest.approx(0.0, abs=1e-12)
    B = rng.standard_normal((8, 2))
    assert M.dtw_distance(A, B, sakoe_chiba_radius=1) >= M.dtw_distance(A, B) - 1e-12


def test_binned_mean_trajectory():
    X = np.array([[0.0], [2.0], [10.0], [20.0], [22.0]])
    t = np.array([0.0, 0.1, 0.3, 0.95, 1.0])
    np.testing.assert_allclose(M.binned_mean_trajectory(X, t, n_bins=2), [[4.0], [21.0]])
    # Empty middle bin is dropped.
    np.testing.assert_allclose(M.binned_mean_trajectory(X, t, n_bins=4), [[1.0], [10.0], [21.0]])
    with pytest.raises(ValueError, match="pseudotime has 2 values"):
        M.binned_mean_trajectory(X, t[:2])


# ------------------------------------------------------------------------------------------
# the paper's start-vs-end metric
# ------------------------------------------------------------------------------------------
def test_paper_start_end_metric_rewards_doing_nothing(rng):
    Z0 = rng.standard_normal((40, 4))
    Z1 = Z0 + np.array([1.0, 0.0, -2.0, 0.5]) + 0.1 * rng.standard_normal((40, 4))
    for kind in ("mean_abs_change", "one_minus_corr"):
        still = M.paper_start_end_metric(Z0, Z0, kind=kind)
        moved = M.paper_start_end_metric(Z0, Z1, kind=kind)
        assert still.mean == 0.0 and np.all(still.per_dim == 0.0)
        assert moved.mean > still.mean
    res = M.paper_start_end_metric(Z0, Z1)
    np.testing.assert_allclose(res.per_dim, np.abs(Z1 - Z0).mean(axis=0))
    corr = M.paper_start_end_metric(Z0, Z1, kind="one_minus_corr").per_dim
    expected = [1.0 - pearsonr(Z0[:, j], Z1[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(corr, expected, atol=1e-12)
    with pytest.raises(ValueError, match="rows must be paired"):
        M.paper_start_end_metric(Z0, Z1[:5])


def test_de_gene_count_is_zero_for_doing_nothing_and_counts_real_shifts():
    from experiments.evaluation.metrics import de_gene_count

    rng = np.random.default_rng(0)
    control = rng.normal(1.0, 0.5, size=(300, 40))
    moved = rng.normal(1.0, 0.5, size=(300, 40))
    moved[:, :5] += 1.0  # five genes really change
    assert de_gene_count(control, control[rng.permutation(300)]) == 0
    assert de_gene_count(control, moved) == 5
    # one deterministic small shift of every gene of every cell: all 40 significant
    assert de_gene_count(control, control + 0.2) == 40


def test_predicted_cells_never_go_below_the_floor_of_expression():
    from experiments.evaluation.baselines import shifted_cells

    start = np.array([[0.0, 1.0], [2.0, 0.5]])
    out = shifted_cells(start, np.array([[-1.0, -0.7]]))
    assert out.min() == 0.0 and np.allclose(out, [[0.0, 0.3], [1.0, 0.0]])
    # z-scored data (negative values are real): the floor is their own minimum, not 0
    assert shifted_cells(start - 1.0, np.array([[-5.0, 0.0]])).min() == -1.0
