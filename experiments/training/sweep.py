"""KL radius x clip sweep of the two-stage run with Ray Tune (plus any other settings as axes), resumable after the driver dies.

Each trial is one :func:`experiments.training.trainable.two_stage_trainable` run: TRPO with ``kl_radius``,
then PPO with ``clip_param``, reporting every iteration with its stage and checkpointing at the
end of each stage. The default search is the full grid; an Optuna searcher and an ASHA scheduler
are optional. Trial resources are sized explicitly (PPO's default request, 3 CPUs, never starts on
a 2-CPU machine) and checked against the cluster before anything is submitted.

A sweep directory holds Tune's experiment state: ``run_sweep(..., resume=True)`` (CLI:
``waddington sweep --resume``) calls ``Tuner.restore``; finished trials are kept as they are,
unfinished ones resume from their last stage checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.training.algorithm_configs import trial_bundles
from experiments.training.settings import TwoStageSettings
from experiments.training.trainable import two_stage_trainable

__all__ = [
    "SweepError",
    "validate_grid",
    "validate_axes",
    "build_param_space",
    "check_resources",
    "run_sweep",
    "summarize",
    "format_table",
    "METRIC",
]

#: Metric a scheduler/searcher optimizes and the best trial is chosen by: the latest finite mean
#: episode return (in the last report that is PPO's final return).
METRIC = "score"
MODE = "max"


class SweepError(ValueError):
    """The sweep cannot start as configured; the message says what to change."""


def validate_grid(kl_radii, clips) -> tuple[list[float], list[float]]:
    """Check the grid values: every KL radius > 0, every clip in (0, 1), no empty axis."""
    out = []
    for name, values, ok, rule in (
        ("kl_radius", kl_radii, lambda v: v > 0, "> 0"),
        ("clip_param", clips, lambda v: 0 < v < 1, "in (0, 1)"),
    ):
        if isinstance(values, (int, float)):
            values = [values]
        values = list(values or [])
        if not values:
            raise SweepError(f"The {name} grid is empty; give at least one value.")
        bad = [
            v for v in values
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v)
        ]
        if bad:
            raise SweepError(f"Invalid {name} value(s) {bad}: every {name} must be {rule}.")
        out.append([float(v) for v in values])
    return out[0], out[1]


def build_param_space(settings: TwoStageSettings, kl_radii, clips, *, searcher: str = "grid",
                      axes: dict[str, list] | None = None) -> dict[str, Any]:
    """Tune param space: the base settings plus the swept keys (grid: each ``num_samples`` times).

    ``axes`` (:func:`validate_axes`) adds settings to the search: a grid axis each, or with Optuna a
    choice among their values.
    """
    from ray import tune

    kl_radii, clips = validate_grid(kl_radii, clips)
    space = {k: v for k, v in settings.to_dict().items() if k not in ("kl_radius", "clip_param")}
    if searcher == "grid":
        space["kl_radius"] = tune.grid_search(kl_radii)
        space["clip_param"] = tune.grid_search(clips)
    elif searcher == "optuna":
        lo, hi = min(kl_radii), max(kl_radii)
        space["kl_radius"] = tune.loguniform(lo, hi) if hi > lo else lo
        lo, hi = min(clips), max(clips)
        space["clip_param"] = tune.uniform(lo, hi) if hi > lo else lo
    else:
        raise SweepError(f"Unknown searcher {searcher!r}; choose 'grid' or 'optuna'.")
    for key, values in validate_axes(settings, axes).items():
        space[key] = tune.grid_search(values) if searcher == "grid" else tune.choice(values)
    return space


def check_resources(settings: TwoStageSettings, cluster: dict[str, float] | None = None, *, autoscaling: bool = False):
    """Placement group for one trial, checked against the cluster's CPUs.

    Returns the :class:`PlacementGroupFactory`. Raises :class:`SweepError` when one trial needs
    more CPUs than the cluster has (unless the cluster autoscales).
    """
    from ray import tune

    bundles = trial_bundles(settings)
    need = sum(b.get("CPU", 0.0) for b in bundles)
    if cluster is not None and not autoscaling:
        have = float(cluster.get("CPU", 0.0))
        if need > have:
            raise SweepError(
                f"One trial needs {need:g} CPUs (1 for the trainable + {settings.num_env_runners} env "
                f"runner(s)) but the cluster has {have:g}. Lower num_env_runners (0 samples in the "
                "trainable's own process) or add nodes."
            )
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


#: Settings a sweep axis may not vary: the KL x clip grid has its own options, and every trial trains
#: on one prepared dataset.
_NOT_AXES = ("kl_radius", "clip_param", "env", "env_config", "data", "perturbation_key", "control_value",
             "num_env_runners")  # the last sizes every trial's placement group


def validate_axes(settings: TwoStageSettings, axes: dict[str, list] | None) -> dict[str, list]:
    """Check more sweep axes (setting name -> values): every name a setting, every value valid for it.

    Raises :class:`SweepError` naming the setting and the value that is wrong.
    """
    from experiments.training.settings import DATASET_FIXED_SETTINGS, SettingsError, setting_names

    out = {}
    for key, values in (axes or {}).items():
        if key not in setting_names():
            raise SweepError(f"Unknown setting {key!r} on a sweep axis; known settings: {sorted(setting_names())}.")
        if key in _NOT_AXES or key in DATASET_FIXED_SETTINGS:
            hint = ("use --kl-radius / --clip" if key in ("kl_radius", "clip_param") else
                    "it sizes every trial's CPUs; set it for the whole sweep" if key == "num_env_runners" else
                    "every trial trains on one prepared dataset; run one sweep per data setting")
            raise SweepError(f"{key!r} cannot be a sweep axis: {hint}.")
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise SweepError(f"The {key} axis is empty; give at least one value.")
        if isinstance(getattr(settings, key), list):  # a list setting: one layer size is a one-layer list
            values = [value if isinstance(value, list) else [value] for value in values]
        for value in values:
            try:
                settings.replace(**{key: value})
            except (SettingsError, TypeError) as exc:
                raise SweepError(f"Invalid {key} value {value!r} on a sweep axis: {exc}") from exc
        out[key] = values
    return out


def _searcher_and_scheduler(settings: TwoStageSettings, searcher: str, scheduler: str, max_concurrent: int | None):
    search_alg = None
    if searcher == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401
        except ImportError as exc:
            raise SweepError("searcher='optuna' needs the optuna package: pip install optuna") from exc
        search_alg = OptunaSearch(metric=METRIC, mode=MODE, seed=settings.seed)
        if max_concurrent:
            from ray.tune.search import ConcurrencyLimiter

            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=max_concurrent)
    sched = None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        total = settings.trpo_iters + settings.ppo_iters
        # Compare trials only inside the PPO stage: a trial is never cut during TRPO.
        grace = min(total, settings.trpo_iters + max(1, settings.ppo_iters // 3))
        sched = ASHAScheduler(time_attr="training_iteration", max_t=total, grace_period=grace, reduction_factor=2)
    elif scheduler not in ("none", None):
        raise SweepError(f"Unknown scheduler {scheduler!r}; choose 'none' or 'asha'.")
    return search_alg, sched


def run_sweep(
    settings: TwoStageSettings,
    *,
    kl_radii,
    clips,
    storage_path: str | os.PathLike,
    name: str = "sweep",
    searcher: str = "grid",
    scheduler: str = "none",
    num_samples: int = 1,
    max_concurrent: int | None = None,
    max_failures: int = 2,
    resume: bool = False,
    data: Any = None,
    verbose: int = 1,
    autoscaling: bool = False,
    axes: dict[str, list] | None = None,
):
    """Run (or, with ``resume=True``, restore and finish) the sweep; returns Tune's ResultGrid.

    ``axes``: more settings to sweep (:func:`build_param_space`).
    """
    import ray
    from ray import tune

    storage_path = str(storage_path)
    if "://" not in storage_path:  # a local path; URIs (s3://, gs://) are shared storage for clusters
        storage_path = str(Path(storage_path).expanduser().resolve())
    exp_dir = f"{storage_path.rstrip('/')}/{name}"
    pgf = check_resources(settings, ray.cluster_resources(), autoscaling=autoscaling)
    trainable = tune.with_resources(tune.with_parameters(two_stage_trainable, data=data), pgf)

    if resume:
        if not tune.Tuner.can_restore(exp_dir):
            raise SweepError(f"Nothing to resume at '{exp_dir}': no Tune experiment state there.")
        tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit()
    if tune.Tuner.can_restore(exp_dir):
        raise SweepError(
            f"'{exp_dir}' already holds a sweep. Pass --resume to finish it, or choose another --output/--name."
        )

    search_alg, sched = _searcher_and_scheduler(settings, searcher, scheduler, max_concurrent)
    param_space = build_param_space(settings, kl_radii, clips, searcher=searcher, axes=axes)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC if (search_alg or sched) else None,
            mode=MODE if (search_alg or sched) else None,
            search_alg=search_alg,
            scheduler=sched,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            verbose=verbose,
        ),
    )
    return tuner.fit()


def summarize(result_grid, axes: Sequence[str] = ()) -> dict[str, Any]:
    """One row per trial (its swept values, stage returns, handoff check, wall) and the best trial by ``score``."""
    rows = []
    for result in result_grid:
        m = result.metrics or {}
        cfg = result.config or {}
        rows.append(
            {
                "trial_id": m.get("trial_id"),
                "kl_radius": cfg.get("kl_radius"),
                "clip_param": cfg.get("clip_param"),
                **{key: cfg.get(key) for key in axes},
                "status": "ERROR" if result.error else ("TERMINATED" if m.get("stage") == "ppo"
                                                         and m.get("stage_iteration") == cfg.get("ppo_iters")
                                                         else "STOPPED"),
                "iterations": m.get("training_iteration"),
                "stage1_final_return": m.get("stage1_final_return"),
                "trpo_final_return": m.get("trpo_final_return"),  # None when stage 1 was the PPO stand-in
                "ppo_final_return": m.get("ppo_final_return"),
                "score": m.get(METRIC),
                "handoff_max_abs_diff": m.get("handoff_max_abs_diff"),
                "ppo_weight_change_l2": m.get("ppo_weight_change_l2"),
                "total_wall_s": m.get("total_wall_s"),
                "node_id": m.get("node_id"),
                "error": str(result.error) if result.error else None,
            }
        )
    scored = [r for r in rows if isinstance(r["score"], (int, float)) and math.isfinite(r["score"])]
    best = max(scored, key=lambda r: r["score"]) if scored else None
    return {"metric": METRIC, "mode": MODE, "num_trials": len(rows), "best": best, "trials": rows}


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain fixed-width text table."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def write_summary(summary: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, default=str))

