"""A design's output directory: ``design.tsv``, ``design.h5ad``, ``design.png`` and ``manifest.json``.

* ``design.tsv`` (tab-separated): one row per proposed set, columns :data:`TABLE_COLUMNS`: ``target``
  (the ``--target-obs`` value, ``target`` or ``signature``), ``rank`` (1 = best), ``set`` (members
  joined by ``+``), ``objective`` (= ``distance + effort``), ``distance``, ``effort``, ``evaluations``
  (the designer's forward-model evaluations for that target), ``designer``; the top
  :data:`TOP_SETS` per target, or every set scored when ``k = 1`` (the whole library for exhaustive).
* ``design.h5ad``: as ``waddington predict`` writes it (:func:`experiments.prediction.output.build_anndata`):
  the start cells (``obs['kind'] == 'start'``), the predicted cells of the best :data:`H5AD_SETS`
  sets per target (``'predicted'``, ``obs['perturbation']`` = the set, ``obs['target']``,
  ``obs['rank']``) and the target's cells (``'target'``, their expression in the run's genes);
  ``obsm['X_latent_end']``; ``obsm['X_latent_path']`` is ``[start, end]`` (horizon 1: the forward
  model moves cells in one hint step, not a rollout).
* ``design.png``: the best sets' objective per target, against the unmoved start cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.design.plan import DesignPlan, TargetDesign
from experiments.evaluation.baselines import shifted_cells

__all__ = ["H5AD_SETS", "TABLE_COLUMNS", "TOP_SETS", "design_anndata", "design_plot", "design_table"]

TABLE_COLUMNS = ("target", "rank", "set", "objective", "distance", "effort", "evaluations", "designer")
#: Sets per target in design.tsv (all of them when k = 1) and in design.h5ad.
TOP_SETS = 50
H5AD_SETS = 5


def design_table(plan: DesignPlan, designs: Sequence[TargetDesign], *, top: int = TOP_SETS):
    """The ``design.tsv`` table (pandas DataFrame, :data:`TABLE_COLUMNS`)."""
    import pandas as pd

    rows = []
    for design in designs:
        ranked = design.result.ranked if plan.max_size == 1 else design.result.ranked[:top]
        for rank, score in enumerate(ranked, start=1):
            rows.append({"target": design.target, "rank": rank, "set": "+".join(score.members),
                         "objective": score.objective, "distance": score.distance, "effort": score.effort,
                         "evaluations": design.result.evaluations, "designer": design.result.designer})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def design_anndata(plan: DesignPlan, designs: Sequence[TargetDesign], *, n_sets: int = H5AD_SETS,
                   command: str | None = None):
    """Start, predicted (best ``n_sets`` sets per target) and target cells as one AnnData (module docstring)."""
    import anndata as ad

    from experiments.prediction.output import build_anndata, h5ad_safe

    import pandas as pd

    blocks, uns, deltas, ranked_genes = [], None, [], {}
    for index, design in enumerate(designs):
        prediction = _prediction(plan, design, n_sets)
        adata = build_anndata([prediction], group=plan.start_group, top_genes=20, seed=plan.seed, command=command)
        uns = uns or adata.uns["waddington"]
        # one column per (target, set): the same set can be proposed for several targets
        deltas.append(adata.varm["delta_design"].add_prefix(f"{design.target}:"))
        ranked_genes.update({f"{design.target}:{k}": v for k, v in adata.uns["waddington"]["ranked_genes"].items()})
        adata.obs["target"] = np.where(adata.obs["kind"].to_numpy() == "start", "", design.target)
        ranks = {"+".join(s.members): r for r, s in enumerate(design.result.ranked[:n_sets], start=1)}
        adata.obs["rank"] = [int(ranks.get(str(p), 0)) if k == "predicted" else 0
                             for p, k in zip(adata.obs["perturbation"], adata.obs["kind"])]
        if index > 0:  # the start cells once
            adata = adata[adata.obs["kind"].to_numpy() != "start"].copy()
        adata.obs_names = [f"{design.target}:{n}" if k != "start" else n
                           for n, k in zip(adata.obs_names, adata.obs["kind"])]
        blocks.append(adata)
        target = _target_block(plan, design, adata.var_names)
        if target is not None:
            blocks.append(target)
    merged = ad.concat(blocks, join="outer", merge="first")
    for column in ("kind", "perturbation", "source_cell", "method", "run", "target"):
        merged.obs[column] = merged.obs[column].astype(str).astype("category")
    merged.obs["rank"] = merged.obs["rank"].fillna(0).astype(int)
    merged.varm["delta_design"] = pd.concat(deltas, axis=1).loc[merged.var_names]
    uns = dict(uns or {})
    uns.update({
        "perturbations": list(merged.varm["delta_design"].columns),
        "ranked_genes": ranked_genes,
        "delta": ("varm['delta_design']['TARGET:SET'] = mean(predicted cells of SET for TARGET) - mean(start cells), "
                  "per gene; ranked_genes['TARGET:SET']: the top 20 genes by |delta|"),
        "method": "design",
        "X": ("kind='start': observed expression of the start control cells; kind='predicted': start cell + the "
              "decoded latent change the forward model makes (the set's composed per-cell hint); kind='target': the "
              "target's cells, log-normalized in the run's genes"),
        "latent_kind": "hint",
        "latent_kind_note": "the forward model of waddington design: start + the set's per-cell hint, one step",
        "design": h5ad_safe(_design_record(plan, designs)),
    })
    merged.uns["waddington"] = uns
    return merged


def _prediction(plan: DesignPlan, design: TargetDesign, n_sets: int):
    """The best sets of one design as a :class:`~experiments.prediction.predict.RunPrediction` (horizon 1)."""
    from experiments.prediction.predict import RunPrediction

    model, ds = plan.model, plan.model.dataset
    rows = model.start_rows
    X0 = np.asarray(ds.expression[rows].toarray(), dtype=np.float64)
    cells, ends, paths, info = {}, {}, {}, {}
    for score in design.result.ranked[:n_sets]:
        label = "+".join(score.members)
        hint = model.hints(score.members)
        cells[label] = shifted_cells(X0, model.decode_shift(hint))
        ends[label] = model.start + hint
        paths[label] = np.stack([model.start, ends[label]], axis=1)
        info[label] = {"members": list(score.members), "objective": score.objective, "distance": score.distance,
                       "effort": score.effort}
    return RunPrediction(run=plan.run, method="design", start_rows=rows, start_expression=X0,
                         start_latent=model.start.copy(), cells=cells, latent_end=ends, latent_path=paths,
                         perturbation_info=info, latent_kind="hint", horizon=1)


def _target_block(plan: DesignPlan, design: TargetDesign, genes):
    """The target's cells (kind='target'), or ``None`` for a signature."""
    import anndata as ad
    import pandas as pd

    target = next((t for t in plan.targets if t.name == design.target), None)
    if target is None:
        return None
    n = len(target.latent)
    obs = pd.DataFrame({"kind": "target", "perturbation": design.target, "source_cell": target.obs_names,
                        "method": "observed", "run": plan.run.label, "seed": plan.run.seed, "target": design.target,
                        "rank": 0}, index=[f"{design.target}:target:{name}" for name in target.obs_names])
    block = ad.AnnData(X=target.expression.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))
    block.obsm["X_latent_end"] = target.latent.astype(np.float32)
    block.obsm["X_latent_path"] = np.full((n, 2 * plan.model.n_latent), np.nan, dtype=np.float32)
    return block


def _design_record(plan: DesignPlan, designs: Sequence[TargetDesign]) -> dict[str, Any]:
    return {
        "designer": plan.designer, "max_size": plan.max_size, "effort": plan.effort,
        "budget": "None" if plan.budget is None else int(plan.budget), "beam_width": plan.beam_width,
        "library": list(plan.library), "n_start_cells": len(plan.model.start_rows),
        "n_target_cells": plan.n_target_cells, "target": plan.target_source,
        "signature": {} if plan.signature is None else dict(plan.signature),
        "objective": ("E-distance 2E|P-T| - E|P-P'| - E|T-T'| (Euclidean, V-statistic) between the set's predicted "
                      "latent cells and the target's, plus effort * members; for a signature the RMS over its genes "
                      "of the decoded mean shift minus sign * tau (docs/design.md)"),
        "baseline": {d.target: d.result.baseline.objective for d in designs},
        "evaluations": {d.target: d.result.evaluations for d in designs},
        "wall_s": {d.target: round(d.result.wall_s, 3) for d in designs},
    }


def _training_record(trained: Any) -> dict[str, Any]:
    """The RL designer's training: stages, learning curve, env steps, wall time, handoff check."""
    return {"stages": trained.stages, "env_steps": trained.env_steps, "wall_s": round(trained.wall_s, 2),
            "handoff_max_abs_diff": trained.handoff_max_abs_diff, "max_size": trained.max_size,
            "curve": [[stage, int(steps), float(ret)] for stage, steps, ret in trained.curve]}


def design_plot(designs: Sequence[TargetDesign], path: str | Path, *, top: int = 15) -> Path:
    """Horizontal bars of the best sets' objective per target, the unmoved start cells as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(designs), figsize=(4.5 * len(designs), 0.3 * top + 1.5), squeeze=False)
    for ax, design in zip(axes[0], designs):
        ranked = design.result.ranked[:top]
        labels = ["+".join(s.members) for s in ranked][::-1]
        ax.barh(labels, [s.objective for s in ranked][::-1], color="#4c72b0")
        ax.axvline(design.result.baseline.objective, color="k", linestyle="--", linewidth=1, label="no perturbation")
        ax.set_title(f"{design.target} ({design.result.designer}, {design.result.evaluations} evals)", fontsize=9)
        ax.set_xlabel("objective (distance + effort)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def write_design(plan: DesignPlan, out: str | Path, *, overwrite: bool = False, argv: Sequence[str] | None = None,
                 log=None):
    """Run the plan and write its directory (module docstring); returns the ``design.tsv`` table.

    The directory is claimed as a run directory (:func:`experiments.cli.run_dirs.start_run`: an
    existing run is replaced only with ``overwrite``, never mixed) with a ``manifest.json``
    (:mod:`experiments.runs.manifest`) marked complete, failed or interrupted however it ends.
    Check the directory first with :func:`experiments.cli.run_dirs.check_output_free`, before planning.
    """
    import argparse

    from experiments.cli.run_dirs import guarded, start_run
    from experiments.design.plan import run_design
    from experiments.prediction.output import write_h5ad_atomic
    from experiments.runs.manifest import write_json_atomic

    out = Path(out).expanduser()
    argv = [str(a) for a in (argv or ["design"])]
    settings = {"designer": plan.designer, "max_size": plan.max_size, "effort": plan.effort, "budget": plan.budget,
                "beam_width": plan.beam_width, "library_size": len(plan.library),
                "n_start_cells": len(plan.model.start_rows), "n_target_cells": plan.n_target_cells,
                "start_group": None if plan.start_group is None else "=".join(plan.start_group),
                "run": str(plan.run.path) if plan.run.path is not None else plan.run.label}
    manifest = start_run(out, kind="design", args=argparse.Namespace(argv=argv), overwrite=overwrite,
                         settings=settings, seed=plan.seed, input={"target": plan.target_source})
    with guarded(manifest):
        designs = run_design(plan, log=log)
        table = design_table(plan, designs)
        staging = out / ".design.tsv.partial"
        table.to_csv(staging, sep="\t", index=False, float_format="%.6g")
        staging.replace(out / "design.tsv")
        command = "waddington " + " ".join(argv)
        write_h5ad_atomic(design_anndata(plan, designs, command=command), out / "design.h5ad", overwrite=True)
        design_plot(designs, out / "design.png")
        write_json_atomic(out / "library.json", {"library": plan.library})
        outputs = {"table": "design.tsv", "cells": "design.h5ad", "plot": "design.png", "library": "library.json"}
        if plan.trained is not None and plan.rl.checkpoint is None:  # trained by this design
            outputs["designer"] = plan.trained.save(out / "designer.pt").name
            write_json_atomic(out / "designer_training.json", _training_record(plan.trained))
            outputs["designer_training"] = "designer_training.json"
        manifest.finish("complete", outputs=outputs,
                        evaluations={d.target: d.result.evaluations for d in designs},
                        wall_s={d.target: round(d.result.wall_s, 3) for d in designs})
    return table
