"""The peer cases: each one prepared as ``waddington evaluate`` prepares it (README's commands)."""

from __future__ import annotations

from typing import Any

SHARED = "../shared/data"

CASES: dict[str, dict[str, Any]] = {
    "kang": {"file": "kang2018_pbmc_ifnb.h5ad", "perturbation_key": "group_id", "control_value": "ctrl",
             "split": "group", "group_key": "cluster_id", "holdout": ["CD4 T cells"], "stim": "stim"},
}


def prepare_case(name: str, seed: int = 0):
    """The case's prepared dataset and its settings."""
    import os

    import anndata as ad

    from experiments import api

    if name not in CASES:
        raise SystemExit(f"Unknown case {name!r}; choose one of {sorted(CASES)}.")
    case = CASES[name]
    root = os.environ.get("WADDINGTON_SHARED_DATA", SHARED)
    adata = ad.read_h5ad(os.path.join(root, case["file"]))
    ds = api.prepare(adata, perturbation_key=case["perturbation_key"], control_value=case["control_value"],
                     split=case["split"], group_key=case.get("group_key"), holdout=case["holdout"], seed=seed)
    return ds, case
