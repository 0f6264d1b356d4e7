"""A prediction in cell-eval's input form: ``pred.h5ad`` and ``real.h5ad`` for ``cell-eval run``.

``waddington predict ... --with-observed --cell-eval-dir DIR`` writes, from the prediction's AnnData,
the predicted cells with the start (control) cells as ``pred.h5ad`` and the data's own cells of
the same perturbations with the same start cells as ``real.h5ad``: one perturbation column
(``target``), the control label ``non-targeting``, the same genes in the same order, values floored
at 0 as predict writes them. Then::

    cell-eval run -ap DIR/pred.h5ad -ar DIR/real.h5ad --pert-col target --control-pert non-targeting
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.prediction.runs import PredictionError

__all__ = ["CELL_EVAL_COMMAND", "write_cell_eval_inputs"]

CELL_EVAL_COMMAND = ("cell-eval run -ap {dir}/pred.h5ad -ar {dir}/real.h5ad --pert-col target "
                     "--control-pert non-targeting")


def write_cell_eval_inputs(adata, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``pred.h5ad`` and ``real.h5ad`` (module docstring) from predict's AnnData; returns their paths."""
    from experiments.evaluation.cell_eval_scores import cell_eval_anndata

    kind = adata.obs["kind"].astype(str).to_numpy()
    if not np.any(kind == "observed"):
        raise PredictionError("--cell-eval-dir needs the data's own cells to compare with: add --with-observed (and "
                              "predict perturbations the data have cells of).")
    first_run = adata.obs["run"].astype(str).to_numpy()[0] if "run" in adata.obs else None
    one_run = np.ones(adata.n_obs, dtype=bool) if first_run is None else adata.obs["run"].astype(str).to_numpy() == first_run
    perturbation = adata.obs["perturbation"].astype(str).to_numpy()

    def block(mask: np.ndarray) -> np.ndarray:
        X = adata.X[mask]
        return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)

    start = block((kind == "start") & one_run)
    observed = {p: block((kind == "observed") & (perturbation == p)) for p in dict.fromkeys(perturbation[kind == "observed"])}
    predicted = {p: block((kind == "predicted") & one_run & (perturbation == p)) for p in observed}
    predicted = {p: x for p, x in predicted.items() if len(x)}
    if not predicted:
        raise PredictionError("None of the predicted perturbations has observed cells to compare with in cell-eval.")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    genes = list(adata.var_names)
    pred, real = out / "pred.h5ad", out / "real.h5ad"
    cell_eval_anndata(start, predicted, genes).write_h5ad(pred)
    cell_eval_anndata(start, {p: observed[p] for p in predicted}, genes).write_h5ad(real)
    return pred, real
