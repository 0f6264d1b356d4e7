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
from pathlib import Path
from typing import Any

__all__ = ["EvaluateError", "add_evaluate_arguments", "run_evaluate", "main"]

HELP = ("score baselines, TRPO-only, TRPO -> PPO and random-init PPO on held-out cells/perturbations/group; "
        "writes DIR/metrics.json, report.md and PNGs")


class EvaluateError(ValueError):
    """Bad input to ``waddington evaluate``, found before any training."""


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _int_csv(text: str) -> list[int]:
    try:
        return [int(x) for x in _csv(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington evaluate``."""
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--run", nargs="+", metavar="DIR", help="output dir(s) of `waddington train` / `sweep`")
    src.add_argument("--trial", help="with a sweep dir: substring of the trial dir to evaluate (default: best)")
    src.add_argument("--data", help="'synthetic' or an .h5ad path / prepared dataset dir: run everything here")
    src.add_argument("--perturbation-key", help="obs column with perturbation labels (real data)")
    src.add_argument("--control-value", help="control label in that column (real data)")
    src.add_argument("--ignore", type=_csv, default=[], metavar="A,B", help="labels to drop first (e.g. unassigned)")
    sp = parser.add_argument_group("split")
    sp.add_argument("--split", choices=["cells", "perturbations", "group"], help="held-out cells (default), "
                    "perturbations (--holdout A,B) or group (--group-key KEY --holdout VALUE)")
    sp.add_argument("--holdout", type=_csv, default=[], metavar="A,B", help="held-out perturbations or group value")
    sp.add_argument("--group-key", help="obs column of the groups (e.g. cell_type) for --split group")
    sp.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction of cells (default 0.2)")
    tr = parser.add_argument_group("training (with --data)")
    tr.add_argument("--config", metavar="YAML", help="two-stage settings (keys of experiments.two_stage.DEFAULTS)")
    tr.add_argument("--seeds", type=_int_csv, default=[0], metavar="0,1,..", help="seeds (default 0)")
    tr.add_argument("--trpo-iters", type=int, help="TRPO iterations")
    tr.add_argument("--ppo-iters", type=int, help="PPO iterations after TRPO (PPO-only gets trpo+ppo)")
    tr.add_argument("--train-batch-size", type=int, help="env steps per iteration")
    tr.add_argument("--n-latent", type=int, help="latent dimension (default 8)")
    tr.add_argument("--no-rl", action="store_true", help="baselines only (no training)")
    tr.add_argument("--no-ablation", action="store_true", help="skip the random-init PPO run")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--max-start-cells", type=int, default=1000, help="start control cells per seed (default 1000)")
    ev.add_argument("--output", "-o", metavar="DIR", help="output dir (default runs/evaluate-<time>)")
    ev.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (default: all)")
    ev.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a new local Ray)")
    ev.add_argument("--quiet", "-q", action="store_true", help="less progress output")


# ---------------------------------------------------------------------------------------------
# checks (before Ray)
# ---------------------------------------------------------------------------------------------

def _two_stage_settings(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.two_stage import SettingsError, resolve_settings

    raw: dict[str, Any] = {}
    if args.config:
        import yaml

        path = Path(args.config).expanduser()
        if not path.is_file():
            raise EvaluateError(f"--config file not found: '{path}'.")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise EvaluateError(f"--config '{path}' must hold a mapping of settings.")
    for opt, key in (("trpo_iters", "trpo_iters"), ("ppo_iters", "ppo_iters"),
                     ("train_batch_size", "train_batch_size"), ("n_latent", "n_latent")):
        if getattr(args, opt) is not None:
            raw[key] = getattr(args, opt)
    raw.pop("data", None)
    try:
        return resolve_settings(raw)
    except SettingsError as exc:
        raise EvaluateError(str(exc)) from exc


def _check_args(args: argparse.Namespace) -> None:
    if bool(args.run) == bool(args.data):
        raise EvaluateError("Give either --run DIR (a train/sweep output) or --data X (run everything here).")
    if args.run and (args.split or args.holdout or args.group_key):
        raise EvaluateError("--split/--holdout/--group-key apply with --data; a --run is scored on the split it "
                            "was trained on.")
    if args.max_start_cells < 2:
        raise EvaluateError(f"--max-start-cells must be >= 2, got {args.max_start_cells}.")
    if args.data:
        split = args.split or ("perturbations" if args.holdout and not args.group_key else
                               "group" if args.group_key else "cells")
        args.split = split
        if split == "cells" and args.holdout:
            raise EvaluateError("--holdout needs --split perturbations or --split group (with --group-key).")
        if split == "perturbations" and not args.holdout:
            raise EvaluateError("--split perturbations needs --holdout A,B naming perturbations to hold out.")
        if split == "group" and not args.group_key:
            raise EvaluateError("--split group needs --group-key <obs column> and --holdout <group value>.")
        if split == "group" and len(args.holdout) != 1:
            raise EvaluateError(f"--split group holds out exactly one group value (--holdout VALUE), got {args.holdout}.")
        if len(set(args.seeds)) != len(args.seeds) or not args.seeds:
            raise EvaluateError(f"--seeds must be distinct integers, got {args.seeds}.")


def _prepare(args: argparse.Namespace, settings: dict[str, Any], seed: int):
    import envs

    data = args.data
    if data != "synthetic" and not Path(data).exists():
        raise EvaluateError(f"Data: no such file or directory: '{data}'.")
    if data != "synthetic" and Path(data).is_dir():
        raise EvaluateError("--data with a prepared dataset dir: its split is fixed; use `--run` on a train output "
                            "of it, or pass the .h5ad to choose the split here.")
    try:
        return envs.prepare_dataset(
            data,
            perturbation_key=args.perturbation_key,
            control_value=args.control_value,
            split=args.split,
            holdout=args.holdout,
            group_key=args.group_key,
            test_fraction=args.test_fraction,
            n_latent=settings["n_latent"],
            ignore_values=args.ignore,
            seed=seed,
            verbose=not args.quiet,
        )
    except ValueError as exc:  # envs.DataValidationError
        raise EvaluateError(f"Data failed validation: {exc}") from exc


def _dataset_of_run(settings: dict[str, Any]):
    """Rebuild the dataset a run was trained on (the same call as experiments.two_stage.prepare_data)."""
    import envs

    data = settings["data"]
    if isinstance(data, str) and data != "synthetic" and Path(data).is_dir():
        ds = envs.load_dataset(data)
        if ds.expression is None:
            raise EvaluateError(f"The run's dataset '{data}' was saved without its expression matrix "
                                "(env_view); evaluation needs gene-space cells. Re-run with --data.")
        return ds
    if isinstance(data, str) and data != "synthetic" and not Path(data).exists():
        raise EvaluateError(f"The run's data '{data}' is not reachable from here.")
    try:
        return envs.prepare_dataset(data, perturbation_key=settings["perturbation_key"],
                                    control_value=settings["control_value"], n_latent=settings["n_latent"],
                                    seed=settings["seed"])
    except ValueError as exc:
        raise EvaluateError(f"The run's data failed validation: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def _log(args, message: str, t0: float) -> None:
    if not args.quiet:
        print(f"[evaluate {time.perf_counter() - t0:7.1f}s] {message}", flush=True)


def run_evaluate(args: argparse.Namespace) -> int:
    """Entry point of ``waddington evaluate`` (registered in :mod:`experiments.cli`)."""
    try:
        return _run(args)
    except EvaluateError as exc:
        print(f"waddington evaluate: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from experiments import report
    from experiments.baselines import BASELINES
    from experiments.evaluate import evaluate_dataset, policy_predictor
    from experiments.policies import CheckpointError, find_stage_checkpoints, load_policy, train_ppo_only

    t0 = time.perf_counter()
    _check_args(args)
    out = Path(args.output or f"runs/evaluate-{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise EvaluateError(f"--output '{out}' exists and is not a directory.")

    # ---- every input checked (and every dataset prepared) before Ray starts ----
    jobs: list[dict[str, Any]] = []
    if args.run:
        for run_dir in args.run:
            try:
                ckpts = find_stage_checkpoints(run_dir, trial=args.trial)
            except CheckpointError as exc:
                raise EvaluateError(str(exc)) from exc
            settings = ckpts.settings
            _log(args, f"run {run_dir}: seed {settings['seed']}, data {settings['data']}", t0)
            jobs.append(dict(seed=int(settings["seed"]), settings=settings, dataset=_dataset_of_run(settings),
                             stage1=ckpts.stage1, stage2=ckpts.stage2, name=Path(run_dir).name,
                             stage1_algorithm=ckpts.stage1_algorithm))
        seeds = [j["seed"] for j in jobs]
        if len(set(seeds)) != len(seeds):
            raise EvaluateError(f"The runs share seeds {seeds}; each --run must be a different seed.")
    else:
        base = _two_stage_settings(args)
        for seed in args.seeds:
            ds = _prepare(args, base, seed)
            jobs.append(dict(seed=seed, settings={**base, "seed": seed}, dataset=ds, name=f"seed{seed}"))
            _log(args, f"seed {seed}: split '{ds.split.kind}', {int(ds.split.train.sum())} train / "
                       f"{int(ds.split.test.sum())} test cells", t0)
    out.mkdir(parents=True, exist_ok=True)

    needs_ray = (args.data and not args.no_rl) or (args.run and not args.no_ablation)
    if needs_ray:
        from experiments.cli import init_ray

        try:
            init_ray(args)
        except ValueError as exc:
            raise EvaluateError(str(exc)) from exc
        import envs  # noqa: F401  (registers the env in this process)

    all_rows: list[dict] = []
    per_pert: list[dict] = []
    runs_info: list[dict] = []
    example_result = None
    for job in jobs:
        seed, ds, settings = job["seed"], job["dataset"], job["settings"]
        work = out / job["name"]
        work.mkdir(parents=True, exist_ok=True)
        methods = dict(BASELINES)
        info: dict[str, Any] = {"seed": seed, "name": job["name"]}
        if not (args.data and args.no_rl):
            import ray

            from experiments.two_stage import resolve_settings, run_two_stage

            if args.data:
                data_dir = ds.save(work / "dataset", overwrite=True)
                settings = resolve_settings({**settings, "data": str(data_dir)})
                ref = ray.put(ds.env_view())
                _log(args, f"seed {seed}: TRPO {settings['trpo_iters']} it -> PPO {settings['ppo_iters']} it", t0)
                summary = None
                for m in run_two_stage(settings, work_dir=work / "checkpoints", data=ref):
                    summary = m.get("summary", summary)
                (work / "summary.json").write_text(json.dumps(summary, indent=2))
                ckpts = find_stage_checkpoints(work)
                job.update(stage1=ckpts.stage1, stage2=ckpts.stage2, stage1_algorithm=ckpts.stage1_algorithm)
                info["two_stage"] = {k: summary.get(k) for k in ("trpo_final_return", "ppo_final_return",
                                     "handoff_max_abs_diff", "ppo_weight_change_l2", "trpo_env_steps",
                                     "trpo_wall_s", "ppo_wall_s")}
            else:
                ref = None
            if job.get("stage1") is not None:
                label = "TRPO-only" if job.get("stage1_algorithm", "trpo") == "trpo" else "stage-1 PPO"
                methods[label] = policy_predictor(load_policy(job["stage1"]))
            methods["TRPO->PPO"] = policy_predictor(load_policy(job["stage2"]))
            if not args.no_ablation:
                if ref is None:
                    ref = ray.put(ds.env_view())
                n_iter = settings["trpo_iters"] + settings["ppo_iters"]
                _log(args, f"seed {seed}: ablation PPO from random init, {n_iter} it (equal env steps)", t0)
                ppo_dir, ppo_summary = train_ppo_only(settings, work_dir=work / "ppo_only", data=ref)
                methods["PPO-only"] = policy_predictor(load_policy(ppo_dir))
                info["ppo_only"] = {k: v for k, v in ppo_summary.items() if k != "returns"}
            info["settings"] = {k: settings[k] for k in ("trpo_iters", "ppo_iters", "train_batch_size", "kl_radius",
                                                         "clip_param", "n_latent", "fcnet_hiddens", "env_config")}
        _log(args, f"seed {seed}: scoring {len(methods)} methods", t0)
        result = evaluate_dataset(ds, methods, seed=seed, env_config=settings.get("env_config") or {},
                                  max_start_cells=args.max_start_cells)
        info.update(result.info)
        all_rows += result.rows
        per_pert += result.per_perturbation
        runs_info.append(info)
        if example_result is None:
            example_result = (ds, result, job)
        _log(args, f"seed {seed}: done", t0)

    command = "waddington evaluate " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    payload = {"rows": all_rows, "per_perturbation": per_pert, "runs": runs_info, "command": command,
               "conventions": report.CONVENTIONS}
    (out / "metrics.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    figures = []
    try:
        from experiments import plots

        ds, result, job = example_result
        figures = plots.write_figures(out, ds, result, all_rows)
    except Exception as exc:  # a figure must not lose the measured numbers
        print(f"warning: figures failed: {exc!r}", file=sys.stderr)
    text = report.render_report(all_rows, runs=runs_info, command=command, figures=figures)
    (out / "report.md").write_text(text)
    if not args.quiet:
        print(report.render_tables(all_rows))
    print(f"metrics: {out / 'metrics.json'}\nreport:  {out / 'report.md'}")
    return 0


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the same as ``waddington evaluate``)."""
    parser = argparse.ArgumentParser(prog="waddington evaluate", description=HELP)
    add_evaluate_arguments(parser)
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
