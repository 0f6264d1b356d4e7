"""Cost of the distribution metrics in experiments/metrics.py at the sizes the docs promise.

Times, in a fixed 50-d PCA-like space:
  * exact W2 (POT ot.emd2, network simplex) on 2k x 2k cells   (budget: <= 2 s)
  * E-distance on 10k x 10k cells, chunked                      (budget: <= 2 s)
  * the fallbacks above the size limits: W2 subsample / sliced on 5k x 5k cells,
    E-distance subsample on 20k x 20k cells
  * optionally the same on real data (Papalexi 2021 THP-1, log-normalized, PCA fitted on all
    cells) with --real PATH.

Each case is run --repeats times (after one untimed warm-up call); median and min wall time
are reported. Prints a table and writes JSON (default benchmarks/results/metrics_cost.json,
gitignored).

    python benchmarks/metrics_cost.py [--repeats 3] [--dim 50] [--real PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.evaluation import metrics as M  # noqa: E402

BUDGET_S = 2.0


def _cloud(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    """Anisotropic Gaussian mixture shaped like PCA coordinates (variance decays with rank)."""
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))
    centres = rng.standard_normal((4, d)) * 2.0 * scale
    labels = rng.integers(0, 4, size=n)
    return centres[labels] + rng.standard_normal((n, d)) * scale + shift * scale


def _time(fn: Callable[[], M.DistanceResult], repeats: int) -> tuple[M.DistanceResult, list[float]]:
    res = fn()  # warm-up (imports, allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, times


def _row(case: str, d: int, res: M.DistanceResult, times: list[float], budget: float | None) -> dict[str, Any]:
    med = statistics.median(times)
    return {
        "case": case,
        "metric": res.metric,
        "method": res.method,
        "n_x": res.n_x,
        "n_y": res.n_y,
        "n_x_used": res.n_x_used,
        "n_y_used": res.n_y_used,
        "dim": d,
        "value": res.value,
        "median_s": med,
        "min_s": min(times),
        "times_s": times,
        "budget_s": budget,
        "within_budget": None if budget is None else bool(med <= budget),
        "converged": res.info.get("converged"),
    }


def _synthetic_cases(d: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []

    X, Y = _cloud(rng, 2000, d, 0.0), _cloud(rng, 2000, d, 0.5)
    res, t = _time(lambda: M.wasserstein2(X, Y), repeats)
    rows.append(_row("W2 exact 2k x 2k", d, res, t, BUDGET_S))

    X, Y = _cloud(rng, 10_000, d, 0.0), _cloud(rng, 10_000, d, 0.5)
    res, t = _time(lambda: M.e_distance(X, Y), repeats)
    rows.append(_row("E-distance 10k x 10k", d, res, t, BUDGET_S))
    res, t = _time(lambda: M.e_distance(X, Y, blas_threads=None), repeats)
    rows.append(_row("E-distance 10k x 10k, BLAS threads not limited", d, res, t, None))

    X, Y = _cloud(rng, 5000, d, 0.0), _cloud(rng, 5000, d, 0.5)
    res, t = _time(lambda: M.wasserstein2(X, Y, fallback="subsample"), repeats)
    rows.append(_row("W2 fallback subsample 5k x 5k", d, res, t, BUDGET_S))
    res, t = _time(lambda: M.wasserstein2(X, Y, fallback="sliced", n_projections=256), repeats)
    rows.append(_row("W2 fallback sliced (256 proj) 5k x 5k", d, res, t, BUDGET_S))

    X, Y = _cloud(rng, 20_000, d, 0.0), _cloud(rng, 20_000, d, 0.5)
    res, t = _time(lambda: M.e_distance(X, Y), repeats)
    rows.append(_row("E-distance fallback subsample 20k x 20k", d, res, t, BUDGET_S))
    return rows


def _real_cases(path: str, d: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    import anndata as ad
    import scipy.sparse

    adata = ad.read_h5ad(path)
    counts = adata.X.toarray() if scipy.sparse.issparse(adata.X) else np.asarray(adata.X)
    counts = counts.astype(np.float64)
    lib = counts.sum(axis=1, keepdims=True)
    logn = np.log1p(counts / np.maximum(lib, 1.0) * 1e4)  # scanpy normalize_total + log1p
    pca = M.fixed_pca(logn, d, seed=seed)
    Z = pca.transform(logn)
    pert = adata.obs["perturbation_confident"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    ctrl_idx = np.flatnonzero(pert == "non-targeting")
    other_idx = np.flatnonzero((pert != "non-targeting") & (pert != "unassigned"))
    ctrl = Z[rng.choice(ctrl_idx, size=min(2000, ctrl_idx.size), replace=False)]
    pert_cells = Z[rng.choice(other_idx, size=2000, replace=False)]
    rows = []
    res, t = _time(lambda: M.wasserstein2(ctrl, pert_cells), repeats)
    rows.append(_row("real: W2 exact non-targeting vs perturbed, 2k x 2k", d, res, t, BUDGET_S))
    perm = rng.permutation(Z.shape[0])
    A, B = Z[perm[:10_000]], Z[perm[10_000:20_000]]
    res, t = _time(lambda: M.e_distance(A, B), repeats)
    rows.append(_row("real: E-distance random halves, 10k x 10k", d, res, t, BUDGET_S))
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'case':<52} {'method':<9} {'used':>13} {'value':>10} {'median s':>9} {'min s':>7} {'<=2s':>5}"
    print(head)
    print("-" * len(head))
    for r in rows:
        used = f"{r['n_x_used']}x{r['n_y_used']}"
        ok = "" if r["within_budget"] is None else ("yes" if r["within_budget"] else "NO")
        print(
            f"{r['case']:<52} {r['method']:<9} {used:>13} {r['value']:>10.4f} "
            f"{r['median_s']:>9.3f} {r['min_s']:>7.3f} {ok:>5}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (after one warm-up)")
    parser.add_argument("--dim", type=int, default=50, help="dimension of the PCA space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", default=None, help="optional h5ad (Papalexi 2021 layout) for real-data cases")
    parser.add_argument("--out", default="benchmarks/results/metrics_cost.json", help="JSON output path")
    args = parser.parse_args(argv)

    import ot
    import scipy
    import sklearn

    load_before = os.getloadavg()
    rows = _synthetic_cases(args.dim, args.repeats, args.seed)
    if args.real:
        rows += _real_cases(args.real, args.dim, args.repeats, args.seed)
    _print_table(rows)

    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pot": ot.__version__,
        "sklearn": sklearn.__version__,
        "limits": {
            "e_distance_max_cells": M.E_DISTANCE_MAX_CELLS,
            "w2_max_exact": M.W2_MAX_EXACT,
            "w2_num_iter_max": M.W2_NUM_ITER_MAX,
        },
        "repeats": args.repeats,
        "seed": args.seed,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"\nwrote {out}  (load average before/after: {load_before[0]:.2f} / {meta['loadavg_after'][0]:.2f})")
    return 0 if all(r["within_budget"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
