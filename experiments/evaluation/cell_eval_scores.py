"""The field's yardstick: Arc Institute's cell-eval run on the same predictions (optional extra ``[cell-eval]``).

cell-eval (the Virtual Cell Challenge suite) compares a predicted and a real AnnData, each holding
control cells and perturbed cells with a perturbation column, on the same genes in the same
order. :func:`cell_eval_anndata` writes that form; :func:`cell_eval_scores` runs cell-eval's
``MetricsEvaluator`` (profile ``full``, its own DE test) and returns the mean over perturbations of
the metrics in :data:`CELL_EVAL_METRICS`, named ``cell_eval_<metric>``.

Perturbation discrimination (``discrimination_score_l1``: how well a prediction is told apart
from the other perturbations' real cells) means nothing with one perturbation and is left out
there. Predicted cells are floored at 0 already (:func:`experiments.evaluation.baselines.shifted_cells`):
cell-eval refuses negative log-expression.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["CELL_EVAL_COLUMNS", "CELL_EVAL_CONTROL", "CELL_EVAL_METRICS", "CELL_EVAL_PERT_COL", "available", "cell_eval_anndata",
           "cell_eval_scores", "score_anndata"]

#: cell-eval metrics reported (its names), in report order.
CELL_EVAL_METRICS = ("pearson_delta", "overlap_at_N", "de_direction_match", "mae", "mse", "de_nsig_counts_pred",
                     "de_nsig_counts_real", "discrimination_score_l1")
#: Their columns in evaluate's rows and report.
CELL_EVAL_COLUMNS = tuple(f"cell_eval_{m}" for m in CELL_EVAL_METRICS)
#: Columns where lower is better; the DE counts are read side by side, never ranked.
LOWER_IS_BETTER = ("cell_eval_mae", "cell_eval_mse")
UNRANKED = ("cell_eval_de_nsig_counts_pred", "cell_eval_de_nsig_counts_real")
#: Metrics that rank a prediction among several perturbations.
NEEDS_SEVERAL = ("discrimination_score_l1",)
CELL_EVAL_PERT_COL = "target"
CELL_EVAL_CONTROL = "non-targeting"


def available() -> bool:
    """Whether cell-eval is installed (``pip install -e '.[cell-eval]'``)."""
    try:
        import cell_eval  # noqa: F401
    except ImportError:
        return False
    return True


def cell_eval_anndata(control: np.ndarray, cells: Mapping[str, np.ndarray], genes: Sequence[str]):
    """Control cells and each perturbation's cells as one AnnData in cell-eval's input form."""
    import anndata as ad
    import pandas as pd

    blocks = [np.asarray(control, dtype=np.float32)] + [np.asarray(x, dtype=np.float32) for x in cells.values()]
    labels = [CELL_EVAL_CONTROL] * len(control) + [p for p, x in cells.items() for _ in range(len(x))]
    obs = pd.DataFrame({CELL_EVAL_PERT_COL: pd.Categorical(labels)}, index=[f"cell{i}" for i in range(len(labels))])
    return ad.AnnData(np.vstack(blocks), obs=obs, var=pd.DataFrame(index=[str(g) for g in genes]))


def cell_eval_scores(control: np.ndarray, observed: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray],
                     genes: Sequence[str], *, threads: int = 1) -> dict[str, float]:
    """cell-eval's metrics of ``predicted`` against ``observed`` (means over the perturbations both have)."""
    import logging

    shared = [p for p in observed if p in predicted]
    if not shared:
        return {}
    real = cell_eval_anndata(control, {p: observed[p] for p in shared}, genes)
    pred = cell_eval_anndata(control, {p: predicted[p] for p in shared}, genes)
    if float(pred.X.min()) < 0:
        raise ValueError(f"Predicted cells have negative values (min {pred.X.min():.3g}); cell-eval refuses them.")
    wanted = [m for m in CELL_EVAL_METRICS if len(shared) > 1 or m not in NEEDS_SEVERAL]
    logging.getLogger("cell_eval").setLevel(logging.ERROR)
    # cell-eval's progress bars (one per metric, on stderr) would bury evaluate's log
    with contextlib.redirect_stderr(io.StringIO()):
        return score_anndata(real, pred, wanted, threads)


def score_anndata(real, pred, wanted: Sequence[str], threads: int = 1) -> dict[str, float]:
    """cell-eval's ``wanted`` metrics of two AnnData in its input form (means over perturbations)."""
    from cell_eval import MetricsEvaluator

    with tempfile.TemporaryDirectory(prefix="waddington-cell-eval-") as outdir:
        evaluator = MetricsEvaluator(adata_pred=pred, adata_real=real, control_pert=CELL_EVAL_CONTROL,
                                     pert_col=CELL_EVAL_PERT_COL, num_threads=threads, outdir=outdir)
        results, _ = evaluator.compute(profile="full", write_csv=False,
                                       skip_metrics=["clustering_agreement"])  # needs >= a few perturbations
    table = results.to_pandas()
    return {f"cell_eval_{m}": float(np.nanmean(table[m].to_numpy(dtype=np.float64)))
            for m in wanted if m in table.columns}
