"""The Python API: AnnData in, AnnData out, keyword-only options (as scanpy does).

>>> from experiments import api
>>> ds = api.prepare(adata, perturbation_key="perturbation", control_value="control",
...                  split="perturbations", holdout=["STAT1"])
>>> run = api.train(ds, output="runs/t1", trpo_iters=10, ppo_iters=10)
>>> pred = api.predict(run, perturbations=["STAT1", "JAK2"])        # an AnnData
>>> pred.uns["waddington"]["ranked_genes"]["STAT1"].head()            # which genes move
>>> rows = api.evaluate(run)                                          # held-out scores, one dict per number

Each function is the library behind a command: :func:`prepare` is ``envs.prepare_dataset`` on an
AnnData or an ``.h5ad`` path (``waddington prepare``; large files streamed out of core), :func:`train` the two-stage run of ``waddington train`` (it starts a loopback-only
local Ray when none is running), :func:`predict` builds exactly the AnnData ``waddington predict``
writes, and :func:`evaluate` scores methods like ``waddington evaluate``; :func:`design` ranks perturbation sets
for a target as ``waddington design`` does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad

    from envs.dataset import PreparedDataset

__all__ = ["design", "evaluate", "predict", "prepare", "train"]

#: Methods :func:`evaluate` scores by default (baselines; a run adds its policies).
DEFAULT_BASELINES = ("control-mean", "train-mean", "perturbation-mean", "ridge", "drift", "additive")


def prepare(
    adata: ad.AnnData,
    *,
    perturbation_key: str,
    control_value: str,
    split: str = "cells",
    holdout: Sequence[str] = (),
    group_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    ignore_values: Sequence[str] = (),
    layer: str | None = None,
    input_kind: str = "counts",
    n_latent: int = 8,
    n_top_genes: int = 2000,
    test_fraction: float = 0.2,
    seed: int = 0,
    verbose: bool = False,
    **options: Any,
) -> PreparedDataset:
    """Prepare an AnnData or an ``.h5ad`` file: validation, split, latent space, landscape, OT pairings.

    Parameters
    ----------
    adata
        Cells x genes, in memory or as the path of an ``.h5ad`` file (a file larger than memory is
        streamed out of core; ``out_of_core=True/False`` among ``options`` forces the route, and
        ``dataset.save(dir)`` writes what ``waddington prepare -o dir`` writes). Raw counts in ``X``
        (or ``layer``), or already log-normalized values with ``input_kind="log-normalized"`` (as
        many public perturbation files ship); data that are neither as declared is one clear
        ``envs.DataValidationError``. Not modified.
    perturbation_key, control_value
        obs column of perturbation labels and its control label.
    split, holdout, group_key, test_fraction
        ``"cells"`` (held-out cells), ``"perturbations"`` (``holdout=[...]`` never seen in
        training) or ``"group"`` (``group_key`` column, ``holdout=[value]``).
    covariate_keys
        obs columns within which controls are paired with perturbed cells (cell type, donor, batch);
        they also become start groups for :func:`predict`'s ``start_group``.
    ignore_values
        Labels dropped first (e.g. ``"unassigned"``).
    n_latent, n_top_genes, seed, verbose
        Latent cell PCs, highly variable genes kept, seed of everything, print each stage.
    **options
        Further keywords of :func:`envs.prepare_dataset`.

    Returns
    -------
    The :class:`envs.PreparedDataset` (with the cells' obs names, so predictions name their start
    cells, and a synthetic AnnData's known truth).
    """
    import anndata as ad

    import envs

    if not isinstance(adata, (ad.AnnData, str, os.PathLike)):
        raise TypeError(f"prepare() takes an AnnData or the path of an .h5ad file; got {type(adata).__name__}.")
    if input_kind != "counts":
        options["input_kind"] = input_kind
    dataset = envs.prepare_dataset(
        adata, perturbation_key=perturbation_key, control_value=control_value, split=split, holdout=list(holdout),
        group_key=group_key, covariate_keys=list(covariate_keys), ignore_values=list(ignore_values), layer=layer,
        n_latent=n_latent, n_top_genes=n_top_genes, test_fraction=test_fraction, seed=seed, verbose=verbose,
        **options,
    )
    return dataset


def _settings_for(dataset, output: Path, settings: Any, overrides: Mapping[str, Any]):
    """Two-stage settings that train on the dataset saved in ``output/dataset`` and describe its split."""
    from experiments.training.settings import TwoStageSettings, dataset_settings

    base = settings.to_dict() if isinstance(settings, TwoStageSettings) else dict(settings or {})
    described = {**dataset_settings(dataset), "data": str(output / "dataset")}
    return TwoStageSettings.from_mapping({**base, **described, **overrides})


def train(
    data: Any = "synthetic",
    *,
    output: str | os.PathLike,
    perturbation_key: str | None = None,
    control_value: str | None = None,
    trpo_iters: int = 40,
    ppo_iters: int = 40,
    seed: int | None = None,
    settings: Any = None,
    overwrite: bool = False,
    num_cpus: int | None = None,
    truth_check: bool | None = None,
    verbose: bool = True,
    **setting_overrides: Any,
) -> Path:
    """Two-stage TRPO -> PPO training; returns the run directory for :func:`predict` / :func:`evaluate`.

    Parameters
    ----------
    data
        A :class:`~envs.PreparedDataset` (from :func:`prepare`; its split is kept), an AnnData
        (prepared here with ``perturbation_key``/``control_value`` and ``split``/``holdout``/...
        among ``setting_overrides``), an ``.h5ad`` path, or ``"synthetic"`` (the default).
    output
        Run directory: ``dataset/`` (the full prepared dataset, so predictions use exactly the
        space the policy learned), ``checkpoints/stage1-*``, ``stage2-*`` and ``summary.json``.
    trpo_iters, ppo_iters, seed
        Iterations of each stage; seed (default: the dataset's).
    settings
        Further settings: a dict or :class:`~experiments.training.settings.TwoStageSettings`
        (keys: its fields); ``setting_overrides`` (e.g. ``kl_radius=0.02``, ``train_batch_size=1024``)
        win over it.
    overwrite
        Reuse an output directory that already holds a run.
    num_cpus
        CPUs of the local Ray started when none is running (stopped again at the end).
    truth_check
        Compare predictions with the generator's truth (``truth_check.tsv``/``.png``); default:
        when the data have one (the synthetic default).
    verbose
        One line per training iteration and the summary.
    """
    import ray

    import envs
    from experiments.training.settings import DATASET_FIXED_SETTINGS, setting_names
    from experiments.training.two_stage import run_two_stage

    out = Path(output).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"'{out}' is not empty; pass overwrite=True or choose another output.")
    split_keys = set(DATASET_FIXED_SETTINGS)
    prep = {k: setting_overrides.pop(k) for k in list(setting_overrides) if k in split_keys}
    unknown = sorted(set(setting_overrides) - set(setting_names()))
    if unknown:
        raise TypeError(f"train() got unknown settings {unknown}; known: {sorted(setting_names())}.")
    if isinstance(data, envs.PreparedDataset):
        dataset = data
        if prep:
            raise TypeError(f"{sorted(prep)} shape the data: pass them to prepare(), not with a prepared dataset.")
    else:
        import anndata as ad

        if isinstance(data, ad.AnnData):
            if perturbation_key is None or control_value is None:
                raise TypeError("train(adata) needs perturbation_key= and control_value=.")
            dataset = prepare(data, perturbation_key=perturbation_key, control_value=control_value,
                              seed=seed or 0, verbose=verbose, **prep)
        else:
            dataset = envs.prepare_dataset(str(data), perturbation_key=perturbation_key, control_value=control_value,
                                           seed=seed or 0, verbose=verbose, **prep)
    if dataset.expression is None:
        raise ValueError("train() needs the full dataset (with expression), not env_view(): predictions decode "
                         "to genes from it.")
    overrides = {"trpo_iters": trpo_iters, "ppo_iters": ppo_iters, **setting_overrides}
    if seed is not None:
        overrides["seed"] = seed
    s = _settings_for(dataset, out, settings, overrides)
    out.mkdir(parents=True, exist_ok=True)
    dataset.save(out / "dataset", overwrite=True)
    started_ray = False
    if not ray.is_initialized():
        from experiments.training.ray_runtime import start_local_ray

        start_local_ray(num_cpus=num_cpus, log_to_driver=False)
        started_ray = True
    started = time.perf_counter()
    summary = None
    try:
        for metrics in run_two_stage(s, work_dir=out / "checkpoints", data=ray.put(dataset.env_view())):
            if verbose:
                ret = metrics.get("episode_return_mean")
                print(f"[{time.perf_counter() - started:6.1f}s] {metrics['stage']:>4} it "
                      f"{metrics['stage_iteration']:>3}  return {'-' if ret is None else f'{ret:.4g}'}", flush=True)
            summary = metrics.get("summary", summary)
    finally:
        if started_ray:
            ray.shutdown()
    summary = {**(summary or {}), "wall_s": time.perf_counter() - started, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if verbose:
        print(f"run: {out} (PPO final return {summary.get('ppo_final_return')}, handoff max |diff| "
              f"{summary.get('handoff_max_abs_diff')})")
    if truth_check or (truth_check is None and dataset.truth):
        from experiments.prediction.synthetic_check import summarize_truth

        summarize_truth(out, out_dir=out, verbose=verbose)
    return out


def predict(
    run: Any,
    *,
    perturbations: str | Sequence[str],
    method: str = "trpo-ppo",
    start_group: str | tuple[str, str] | Mapping[str, str] | None = None,
    n_cells: int | None = 1000,
    seed: int = 0,
    with_observed: bool = False,
    top_genes: int = 50,
    trial: str | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ad.AnnData:
    """Predicted cells of one or more runs as an AnnData (the object ``waddington predict`` writes).

    Parameters
    ----------
    run
        A run directory (:func:`train`'s return value), several (seeds: one file, ``obs['run']``),
        or :class:`experiments.prediction.predict.Run` objects.
    perturbations
        Labels of the run's data (seen or held out) or panel genes; ``"A,B"`` or a list.
    method
        ``"trpo-ppo"`` (default), ``"trpo"``, ``"ppo-only"``, or a baseline (``"train-mean"``,
        ``"perturbation-mean"``, ``"ridge"``, ``"drift"``, ``"control-mean"``).
    start_group
        ``"KEY=VALUE"`` (or ``(key, value)``): start from that group's control cells.
    n_cells, seed
        Start cells per run (seeded subsample) and the seed of the subsample and rollout noise.
    with_observed
        Add the data's own cells of each perturbation (``obs['kind'] == 'observed'``).
    top_genes
        Genes per perturbation in ``uns['waddington']['ranked_genes']``.
    trial
        With a sweep directory: a substring of the trial to use (default: the best).
    output, overwrite
        Also write the ``.h5ad`` (atomically; an existing file only with ``overwrite``).

    Raises
    ------
    experiments.prediction.predict.PredictionError
        What cannot be predicted (unknown or non-expressible perturbation, unknown group, missing
        checkpoint or dataset); the message lists what can.
    """
    from experiments.prediction.output import (
        check_output_path,
        predict_anndata,
        write_h5ad_atomic,
    )
    from experiments.prediction.runs import Run

    if output is not None:
        check_output_path(output, overwrite=overwrite)
    if isinstance(perturbations, str):
        perturbations = [p.strip() for p in perturbations.split(",") if p.strip()]
    runs = [run] if isinstance(run, (str, os.PathLike, Run)) else list(run)
    adata = predict_anndata(runs, perturbations=list(perturbations), method=method, start_group=start_group,
                            n_cells=n_cells, seed=seed, with_observed=with_observed, top_genes=top_genes,
                            trial=trial, command="experiments.api.predict")
    if output is not None:
        write_h5ad_atomic(adata, output, overwrite=overwrite)
    return adata


def evaluate(
    data: Any,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    max_start_cells: int = 1000,
    per_perturbation: bool = False,
    trial: str | None = None,
    references: bool = False,
) -> list[dict[str, Any]]:
    """Score methods on the held-out part of a dataset's split, in gene space (as ``waddington evaluate``).

    Parameters
    ----------
    data
        A run directory (its dataset and policies) or a full :class:`~envs.PreparedDataset`
        (baselines only).
    methods
        Names as in :func:`predict`; default: the baselines, plus ``trpo`` and ``trpo-ppo`` for a run
        (and ``ppo-only`` where it has one).
    seed, max_start_cells
        Seed of the start-cell subsample, noise and metric subsamples; start cells at most.
    per_perturbation
        Return one row per method x perturbation x metric instead of the means.
    references
        Also score the reference rows (``latent-ceiling``, ``oracle-controller`` and
        ``heldout-ceiling``, :mod:`experiments.evaluation.references`) where they exist; off by
        default, so the rows are the methods asked for.

    Returns
    -------
    Rows ``{method, split, metric, seed, value, n_perturbations}`` (``pandas.DataFrame(rows)``).
    """
    from envs.dataset import PreparedDataset
    from experiments.evaluation import baselines as B
    from experiments.evaluation.evaluate import evaluate_dataset, policy_predictor
    from experiments.prediction.runs import (
        METHODS,
        POLICY_METHODS,
        PredictionError,
        load_run,
        run_from_dataset,
    )

    if isinstance(data, PreparedDataset):
        run = run_from_dataset(data)
    else:
        run = load_run(data, trial=trial)
    if methods is None:
        methods = [*DEFAULT_BASELINES, *[m for m in ("trpo", "trpo-ppo", "ppo-only") if m in run.policies]]
    baselines = {"control-mean": B.control_mean, "train-mean": B.train_mean,
                 "perturbation-mean": B.perturbation_mean, "ridge": B.ridge, "drift": B.drift,
                 "additive": B.additive}  # additive: sets only (skipped for singles)
    predictors = {}
    for name in methods:
        if name not in METHODS:
            raise PredictionError(f"Unknown method {name!r}; choose from {list(METHODS)}.")
        predictors[name] = policy_predictor(run.policy(name)) if name in POLICY_METHODS else baselines[name]
    result = evaluate_dataset(run.dataset, predictors, seed=seed, env_config=run.env_config,
                              max_start_cells=max_start_cells, keep_examples=0, references=references)
    return result.per_perturbation if per_perturbation else result.rows


def design(
    run: Any,
    *,
    target_cells: str | os.PathLike | None = None,
    target_obs: str | None = None,
    input_kind: str | None = None,
    target_genes: str | Mapping[str, Any] | None = None,
    start_group: str | tuple[str, str] | Mapping[str, str] | None = None,
    library: str | Sequence[str] = "seen",
    max_size: int = 1,
    effort: float = 0.0,
    designer: str = "beam",
    budget: int | None = None,
    beam_width: int = 8,
    n_cells: int = 256,
    n_target_cells: int = 256,
    seed: int = 0,
    trial: str | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    designer_checkpoint: str | os.PathLike | None = None,
    rl_targets: int = 512,
    rl_iterations: int = 60,
    rollouts: int = 32,
    width: int = 32,
):
    """Rank perturbation sets by how close the run predicts they move its start cells to a target (``waddington design``).

    Parameters
    ----------
    run
        A run directory (its dataset is the forward model; no policy is needed) or a
        :class:`experiments.prediction.runs.Run`.
    target_cells, target_obs, input_kind
        An ``.h5ad`` of target cells on the run's genes (projected as the run's data were);
        ``target_obs="KEY=VALUE"`` selects cells, ``"KEY"`` makes one target per value;
        ``input_kind`` ``"counts"`` / ``"log-normalized"`` (default: as the run's data).
    target_genes
        Instead of cells, a signature ``"GENE:up,GENE:down"`` (or ``{gene: "up"}``).
    start_group
        ``"KEY=VALUE"``: start from that group's control cells.
    library
        ``"seen"``, ``"panel"``, ``"all"``, a file of labels, or a list of members.
    max_size, effort
        Most members per set; cost per member added to the distance.
    designer, budget, beam_width
        ``"beam"``, ``"greedy"``, ``"exhaustive"``, ``"random"``, ``"naive"`` or ``"rl"``; most
        forward-model evaluations per target; sets kept per size by beam.
    designer_checkpoint, rl_targets, rl_iterations, rollouts, width
        ``designer="rl"``: a trained ``designer.pt`` to reuse (default: train one on ``rl_targets``
        targets the run makes, for ``rl_iterations`` TRPO-then-PPO iterations), and the policy
        episodes and policy-led beam width per target.
    n_cells, n_target_cells, seed
        Start and target cells used (seeded subsamples) and the seed.
    output, overwrite
        Also write the output directory (``design.tsv``, ``design.h5ad``, ``design.png``, ``manifest.json``).

    Returns
    -------
    The ``design.tsv`` table as a pandas DataFrame (``target, rank, set, objective, distance,
    effort, evaluations, designer``).

    Raises
    ------
    experiments.design.errors.DesignError
        Bad input, before any set is scored (docs/design.md lists them).
    """
    from experiments.design.output import design_table, write_design
    from experiments.design.plan import RLDesignSettings, plan_design, run_design

    if output is not None:
        from experiments.cli.errors import UsageError
        from experiments.cli.run_dirs import check_output_free
        from experiments.design.errors import DesignError

        try:
            check_output_free(Path(output).expanduser(), overwrite=overwrite, resume_hint=None)
        except UsageError as exc:
            raise DesignError(str(exc)) from exc
    plan = plan_design(run, target_cells=target_cells, target_obs=target_obs, input_kind=input_kind,
                       target_genes=target_genes, start_group=start_group,
                       library=list(library) if isinstance(library, (list, tuple)) else library, max_size=max_size,
                       effort=effort, designer=designer, budget=budget, beam_width=beam_width, n_cells=n_cells,
                       n_target_cells=n_target_cells, seed=seed, trial=trial,
                       rl=RLDesignSettings(checkpoint=None if designer_checkpoint is None else str(designer_checkpoint),
                                           training_targets=rl_targets, iterations=rl_iterations, rollouts=rollouts,
                                           width=width))
    if output is not None:
        return write_design(plan, output, overwrite=overwrite, argv=["experiments.api.design"])
    return design_table(plan, run_design(plan))
