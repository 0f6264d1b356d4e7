"""Gene-space and distribution metrics for perturbation-response predictions.

Everything here is pure numpy / scipy / POT / tslearn (no Ray, no torch) and works on plain
arrays, so it can score any predictor: the RL policy, the baselines, or observed data itself.

Conventions (the same ones the README states):

* **Delta metrics** (:func:`delta_metrics`) are computed in gene space (log-normalized
  expression). ``delta_pred = mean(X_pred) - mean(X_ctrl)`` and
  ``delta_obs = mean(X_obs) - mean(X_ctrl)``; Pearson and MSE between the two, on all genes and
  on the top-``k`` DE genes of the perturbation. The top-``k`` set is chosen from the *observed*
  data only (default: largest ``|delta_obs|``; option: largest ``|Welch t|`` of observed vs
  control), never from the prediction. Pearson with a constant vector (e.g. a do-nothing
  prediction, ``delta_pred == 0``) is undefined and reported as ``0.0``, so "no change" scores
  exactly like the control-mean baseline.
* **E-distance** (:func:`e_distance`) is the squared form of the energy distance with
  Euclidean (not squared-Euclidean) distances and V-statistic means (all pairs, i = j included):
  ``E = 2 mean|x - y| - mean|x - x'| - mean|y - y'|``. Its square root is
  ``scipy.stats.energy_distance`` in 1-D. scPerturb/pertpy's ``edist`` default uses
  *squared* Euclidean distances, which collapses to ``2 |mean(x) - mean(y)|^2``; we do not.
* **Wasserstein** (:func:`wasserstein2`) is W2: ``sqrt(ot.emd2(a, b, M))`` with uniform weights
  and squared-Euclidean cost ``M``; exact up to ``max_exact`` cells per cloud, above that a
  documented fallback (subsample, or sliced W2), recorded in the result.
* **DTW** (:func:`dtw_distance`) is ``tslearn.metrics.dtw`` between two pseudotime-ordered mean
  trajectories: square root of the summed squared Euclidean costs along the optimal path.
* Distances between clouds are computed in one **fixed PCA space** (:func:`fixed_pca`, fitted
  on reference cells such as the training set) so numbers are comparable across predictors.
* **DE genes** (:func:`de_gene_count`): genes with Benjamini-Hochberg q < 0.05 in a Welch t-test
  of a set of cells vs the control cells; counted for the real and the predicted cells alike.
* :func:`paper_start_end_metric` reproduces the seed paper's start-vs-end metric for comparison
  only; a do-nothing policy wins it.
"""

from experiments.evaluation.metrics.deltas import (
    DE_FDR,
    DeltaMetrics,
    de_gene_count,
    delta_metrics,
    mean_expression_r2,
    pearson_or_zero,
    top_k_de_genes,
)
from experiments.evaluation.metrics.distances import DistanceResult, e_distance, wasserstein2
from experiments.evaluation.metrics.inputs import E_DISTANCE_MAX_CELLS, W2_MAX_EXACT, W2_NUM_ITER_MAX, fixed_pca
from experiments.evaluation.metrics.trajectories import (
    StartEndMetric,
    binned_mean_trajectory,
    dtw_distance,
    paper_start_end_metric,
)

__all__ = [
    "DE_FDR",
    "DeltaMetrics",
    "de_gene_count",
    "DistanceResult",
    "E_DISTANCE_MAX_CELLS",
    "StartEndMetric",
    "W2_MAX_EXACT",
    "W2_NUM_ITER_MAX",
    "binned_mean_trajectory",
    "delta_metrics",
    "dtw_distance",
    "e_distance",
    "fixed_pca",
    "mean_expression_r2",
    "paper_start_end_metric",
    "pearson_or_zero",
    "top_k_de_genes",
    "wasserstein2",
]
