"""``waddington evaluate``: baselines, trained policies and the ablation scored on held-out data.

Two ways in:

* ``--run DIR [DIR ...]``: the output of ``waddington train`` (or ``sweep``; its best trial): the
  TRPO-only and TRPO -> PPO checkpoints are scored on the data and split the run was trained on;
  the random-init PPO ablation (same total env steps) is trained here unless ``--no-ablation``.
  Several run directories (e.g. one per seed) give several seeds.
* ``--data X --split ... --seeds 0,1,2``: everything is run here, per seed: the split and the
  latent space/landscape are prepared (and saved), TRPO -> PPO and PPO-only are trained (unless
  ``--no-rl``: baselines only), and all methods are scored.

Writes ``metrics.json`` (one row per method x split x metric x seed, plus per-perturbation rows),
``report.md`` and PNGs to ``--output``. Every input is checked before Ray starts; bad input is one
``waddington evaluate: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.cli.checks import (
    cli_message,
    document_defaults,
)
from experiments.cli.config_file import load_yaml, settings_from_args
from experiments.cli.data import checked_data_settings, dataset_of_run, prepare_split_dataset
from experiments.cli.errors import UsageError
from experiments.cli.options import add_data_options, add_ray_options, int_list
from experiments.cli.run_dirs import check_output_free, guarded, start_run
from experiments.cli.runtime import (
    LIBRARY_LOG_NAME,
    LibraryLog,
    init_ray,
    output_dir,
    run_command,
)

__all__ = ["NAME", "HELP", "add_arguments", "run"]

NAME = "evaluate"
HELP = ("score baselines, TRPO-only, TRPO -> PPO and random-init PPO on held-out cells/perturbations/group; "
        "writes DIR/metrics.json, report.md and PNGs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington evaluate``."""
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--run", nargs="+", metavar="DIR", help="output dir(s) of `waddington train` / `sweep`")
    src.add_argument("--trial", help="with a sweep dir: substring of the trial dir to evaluate (default: best)")
    add_data_options(parser, data_help="'synthetic' or an .h5ad path: prepare, train and score everything here")
    tr = parser.add_argument_group("training (with --data)")
    tr.add_argument("--config", metavar="YAML", help="two-stage settings (keys of "
                    "experiments.training.settings.TwoStageSettings; `data:` is used when --data is not given)")
    tr.add_argument("--seeds", type=int_list, default=[0], metavar="0,1,..", help="seeds (default 0)")
    tr.add_argument("--trpo-iters", type=int, help="TRPO iterations")
    tr.add_argument("--ppo-iters", type=int, help="PPO iterations after TRPO (PPO-only gets trpo+ppo)")
    tr.add_argument("--train-batch-size", type=int, help="env steps per iteration")
    tr.add_argument("--no-rl", action="store_true", help="baselines only (no training)")
    tr.add_argument("--no-ablation", action="store_true", help="skip the random-init PPO run")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--max-start-cells", type=int, default=1000, help="start control cells per seed (default 1000)")
    ev.add_argument("--cell-eval", action="store_true",
                    help="also score every method with Arc Institute's cell-eval (needs the extra: pip install -e "
                         "'.[cell-eval]'); its columns join metrics.json and report.md")
    ev.add_argument("--cell-eval-cells", type=int, default=200, metavar="N",
                    help="predicted and real cells per perturbation cell-eval scores (seeded subsample; default 200)")
    ev.add_argument("--output", "-o", metavar="DIR", help="output dir (default runs/evaluate-<time>)")
    ev.add_argument("--overwrite", action="store_true", help="replace the evaluation in --output whole (the old "
                    "one is deleted once the new one's manifest exists)")
    add_ray_options(ev)
    document_defaults(parser)


# ---------------------------------------------------------------------------------------------
# checks and data (before Ray)
# ---------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One seed to score: its dataset, settings and (once trained or found) its stage checkpoints."""

    seed: int
    name: str
    settings: Any
    dataset: Any
    stage1: Path | None = None
    stage2: Path | None = None
    stage1_algorithm: str = "trpo"
    info: dict[str, Any] = field(default_factory=dict)


def _base_settings(args: argparse.Namespace):
    """Two-stage settings from ``--config`` and the options; the YAML's data keys fill options not given."""
    yaml_values = load_yaml(args.config)
    if not args.run:
        for option in ("data", "perturbation_key", "control_value"):
            if getattr(args, option) is None and yaml_values.get(option) is not None:
                setattr(args, option, str(yaml_values[option]))
    try:
        settings, _ = settings_from_args(args)
    except UsageError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc
    return settings


def _check_args(args: argparse.Namespace, settings) -> None:
    if args.cell_eval:
        from experiments.evaluation.cell_eval_scores import available

        if not available():
            raise UsageError("--cell-eval needs cell-eval, which is not installed: pip install -e '.[cell-eval]' "
                             "(or pip install cell-eval), then run again.")
        if args.cell_eval_cells < 2:
            raise UsageError(f"--cell-eval-cells must be >= 2 (a DE test needs cells), got {args.cell_eval_cells}.")
    if bool(args.run) == bool(args.data):
        raise UsageError("Give either --run DIR (a train/sweep output) or --data X (run everything here).")
    if args.run and (args.split or args.holdout or args.group_key):
        raise UsageError("--split/--holdout/--group-key apply with --data; a --run is scored on the split it "
                         "was trained on.")
    if args.max_start_cells < 2:
        raise UsageError(f"--max-start-cells must be >= 2, got {args.max_start_cells}.")
    if args.data and (len(set(args.seeds)) != len(args.seeds) or not args.seeds):
        raise UsageError(f"--seeds must be distinct integers, got {args.seeds}.")


def _jobs_from_runs(args: argparse.Namespace, log) -> list[Job]:
    from experiments.evaluation.checkpoints import (
        CheckpointError,
        find_stage_checkpoints,
    )
    from experiments.training.settings import TwoStageSettings, setting_names

    jobs = []
    for run_dir in args.run:
        try:
            ckpts = find_stage_checkpoints(run_dir, trial=args.trial)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from exc
        names = set(setting_names())
        settings = TwoStageSettings.from_mapping({k: v for k, v in ckpts.settings.items() if k in names})
        log(f"run {run_dir}: seed {settings.seed}, data {settings.data}")
        jobs.append(Job(seed=settings.seed, name=Path(run_dir).name, settings=settings,
                        dataset=dataset_of_run(settings), stage1=ckpts.stage1, stage2=ckpts.stage2,
                        stage1_algorithm=ckpts.stage1_algorithm))
    seeds = [job.seed for job in jobs]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"The runs share seeds {seeds}; each --run must be a different seed.")
    return jobs


def _jobs_from_data(args: argparse.Namespace, base, log) -> list[Job]:
    jobs = []
    for seed in args.seeds:
        dataset = prepare_split_dataset(args.data, base, seed, verbose=not args.quiet)
        jobs.append(Job(seed=seed, name=f"seed{seed}", settings=base.replace(seed=seed), dataset=dataset))
        log(f"seed {seed}: split '{dataset.split.kind}', {int(dataset.split.train.sum())} train / "
            f"{int(dataset.split.test.sum())} test cells")
    return jobs


# ---------------------------------------------------------------------------------------------
# training and scoring (after Ray)
# ---------------------------------------------------------------------------------------------

def _train_two_stage(job: Job, work: Path, data_ref, log) -> None:
    """TRPO -> PPO on the job's dataset (saved next to the checkpoints); fills the job's checkpoints."""
    from experiments.evaluation.checkpoints import find_stage_checkpoints
    from experiments.training.two_stage import run_two_stage

    data_dir = job.dataset.save(work / "dataset", overwrite=True)
    job.settings = job.settings.replace(data=str(data_dir))
    log(f"seed {job.seed}: TRPO {job.settings.trpo_iters} it -> PPO {job.settings.ppo_iters} it")
    summary = None
    for metrics in run_two_stage(job.settings, work_dir=work / "checkpoints", data=data_ref):
        summary = metrics.get("summary", summary)
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    ckpts = find_stage_checkpoints(work)
    job.stage1, job.stage2, job.stage1_algorithm = ckpts.stage1, ckpts.stage2, ckpts.stage1_algorithm
    job.info["two_stage"] = {k: summary.get(k) for k in (
        "stage1_algorithm", "stage1_final_return", "ppo_final_return", "handoff_max_abs_diff",
        "ppo_weight_change_l2", "stage1_env_steps", "stage1_wall_s", "ppo_wall_s", "stage1_iterations",
        "ppo_iterations", "stage1_curve", "ppo_curve")}


def _trained_methods(args: argparse.Namespace, job: Job, work: Path, log) -> dict[str, Any]:
    """The policies of one job (trained here with --data), each as an evaluation predictor."""
    import ray

    from experiments.evaluation.checkpoints import load_policy
    from experiments.evaluation.evaluate import policy_predictor
    from experiments.training.two_stage import train_ppo_only

    methods: dict[str, Any] = {}
    data_ref = ray.put(job.dataset.env_view()) if (args.data or not args.no_ablation) else None
    if args.data:
        _train_two_stage(job, work, data_ref, log)
    if job.stage1 is not None:
        label = "TRPO-only" if job.stage1_algorithm == "trpo" else "stage-1 PPO"
        methods[label] = policy_predictor(load_policy(job.stage1))
    methods["TRPO->PPO"] = policy_predictor(load_policy(job.stage2))
    if not args.no_ablation:
        # equal env steps: as many iterations as the two-stage run used (fewer than asked after a plateau)
        used = job.info.get("two_stage") or {}
        n_iter = (used.get("stage1_iterations") or job.settings.trpo_iters) + (
            used.get("ppo_iterations") or job.settings.ppo_iters)
        log(f"seed {job.seed}: ablation PPO from random init, up to {n_iter} it (equal env steps)")
        ppo_dir, ppo_summary = train_ppo_only(job.settings, work_dir=work / "ppo_only", data=data_ref,
                                              iterations=n_iter)
        methods["PPO-only"] = policy_predictor(load_policy(ppo_dir))
        job.info["ppo_only"] = {k: v for k, v in ppo_summary.items() if k != "returns"}
    s = job.settings
    job.info["settings"] = {"trpo_iters": s.trpo_iters, "ppo_iters": s.ppo_iters, "train_batch_size": s.train_batch_size,
                            "kl_radius": s.kl_radius, "clip_param": s.clip_param, "n_latent": s.n_latent,
                            "fcnet_hiddens": list(s.fcnet_hiddens), "env_config": dict(s.env_config)}
    return methods


def _write_outputs(args: argparse.Namespace, out: Path, rows, per_perturbation, runs_info, example) -> None:
    from experiments.evaluation import report

    command = "waddington " + " ".join(getattr(args, "argv", None) or ["evaluate"])
    payload = {"rows": rows, "per_perturbation": per_perturbation, "runs": runs_info, "command": command,
               "conventions": report.CONVENTIONS}
    (out / "metrics.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    figures = []
    try:
        from experiments.evaluation import plots

        dataset, result = example
        figures = plots.write_figures(out, dataset, result, rows, runs=runs_info)
    except Exception as exc:  # a figure must not lose the measured numbers
        print(f"warning: figures failed: {exc!r}", file=sys.stderr)
    (out / "report.md").write_text(report.render_report(rows, runs=runs_info, command=command, figures=figures))
    if not args.quiet:
        print(report.render_tables(rows))
    print(f"metrics: {out / 'metrics.json'}\nreport:  {out / 'report.md'}")


def run(args: argparse.Namespace) -> int:
    """Run ``waddington evaluate``: check and prepare everything, then train (if asked) and score each seed."""
    return run_command(_run, args)


def _manifest_input(args: argparse.Namespace) -> dict[str, Any]:
    """What was evaluated: the data (and its sha256), or each run dir with its run id and status."""
    from experiments.runs.manifest import (
        ManifestError,
        describe_input,
        read_manifest,
    )

    if args.data:
        return describe_input(args.data)
    runs = []
    for run_dir in args.run:
        try:
            manifest = read_manifest(run_dir) or {}
        except ManifestError:
            manifest = {}
        runs.append({"run": str(Path(run_dir).resolve()), "run_id": manifest.get("run_id"),
                     "kind": manifest.get("kind"), "status": manifest.get("status")})
    return {"runs": runs}


def _run(args: argparse.Namespace, library_log: list) -> int:
    started = time.perf_counter()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[evaluate {time.perf_counter() - started:7.1f}s] {message}", flush=True)

    base = _base_settings(args)
    _check_args(args, base)
    out = output_dir(args, "evaluate")
    check_output_free(out, overwrite=args.overwrite, resume_hint=None)
    if args.data:
        base = checked_data_settings(base.replace(data=args.data), args, keep_seed=True)  # a prepared dir (or URI)
        args.data = base.data
    if args.quiet:
        library_log.append(LibraryLog().start())
    from experiments.evaluation.baselines import BASELINES
    from experiments.evaluation.evaluate import evaluate_dataset

    # every input is checked (and every dataset prepared) before Ray starts
    jobs = _jobs_from_runs(args, log) if args.run else _jobs_from_data(args, base, log)
    manifest = start_run(out, kind="evaluate", args=args, overwrite=args.overwrite, settings=base.to_dict(),
                         seed=[job.seed for job in jobs], input=_manifest_input(args))
    with guarded(manifest):
        if library_log:
            library_log[0].attach(out / LIBRARY_LOG_NAME)
            manifest.update(outputs={"library_log": LIBRARY_LOG_NAME})
        trains = not (args.data and args.no_rl)
        if (args.data and not args.no_rl) or (args.run and not args.no_ablation):
            init_ray(args)
            import envs  # noqa: F401  (registers the env in this process)

        rows: list[dict] = []
        per_perturbation: list[dict] = []
        runs_info: list[dict] = []
        example = None
        for job in jobs:
            work = out / job.name
            work.mkdir(parents=True, exist_ok=True)
            methods = dict(BASELINES)
            job.info.update(seed=job.seed, name=job.name)
            if trains:
                methods.update(_trained_methods(args, job, work, log))
                _record_checkpoints(manifest, job, work)
            log(f"seed {job.seed}: scoring {len(methods)} methods")
            result = evaluate_dataset(job.dataset, methods, seed=job.seed, env_config=job.settings.env_config,
                                      max_start_cells=args.max_start_cells, cell_eval=args.cell_eval,
                                      cell_eval_cells=args.cell_eval_cells)
            job.info.update(result.info)
            rows += result.rows
            per_perturbation += result.per_perturbation
            runs_info.append(job.info)
            example = example or (job.dataset, result)
            log(f"seed {job.seed}: done")
        _write_outputs(args, out, rows, per_perturbation, runs_info, example)
        manifest.finish("complete", outputs={**manifest.data.get("outputs", {}), "metrics": "metrics.json",
                                             "report": "report.md"})
    return 0


def _record_checkpoints(manifest, job: Job, work: Path) -> None:
    """The checkpoints scored for one seed (those trained here lie under the output dir)."""
    entries = [("trpo", job.stage1), ("ppo", job.stage2)]
    if (work / "ppo_only" / "state.json").is_file():
        entries.append(("ppo_only", work / "ppo_only"))
    for stage, path in entries:
        if path is not None:
            manifest.data.setdefault("checkpoints", []).append({"stage": stage, "seed": job.seed,
                                                                "path": manifest.relative(path)})
    manifest.write()


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
