"""``waddington sweep``: a Tune sweep of KL radius x PPO clip over the Ray cluster, resumable with ``--resume``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from experiments.cli.config_file import settings_from_args
from experiments.cli.data import prepare_env_data
from experiments.cli.errors import UsageError
from experiments.cli.options import add_run_options, float_list
from experiments.cli.runtime import check_address, init_ray, output_dir
from experiments.cli.train import format_value

__all__ = ["NAME", "HELP", "add_arguments", "run", "SWEEP_KEYS"]

NAME = "sweep"
HELP = "Tune sweep of KL radius x PPO clip over the Ray cluster; resumable with --resume"

#: YAML keys of a sweep besides the two-stage settings.
SWEEP_KEYS = ("kl_radius_grid", "clip_param_grid", "searcher", "scheduler", "num_samples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington sweep``."""
    add_run_options(parser)
    g = parser.add_argument_group("sweep")
    g.add_argument("--kl-radius", type=float_list, help="comma-separated KL radii (default 0.005,0.01,0.02)")
    g.add_argument("--clip", type=float_list, dest="clip_param", help="comma-separated PPO clips (default 0.1,0.2,0.3)")
    g.add_argument("--searcher", choices=["grid", "optuna"], default=None, help="grid (default) or optuna")
    g.add_argument("--scheduler", choices=["none", "asha"], default=None, help="trial scheduler (default none)")
    g.add_argument("--num-samples", type=int, default=None, help="grid repeats / optuna trials (default 1 / 8)")
    g.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    g.add_argument("--max-failures", type=int, default=2, help="Tune retries per failed trial (default 2)")
    g.add_argument("--name", default="sweep", help="experiment name inside --output (default 'sweep')")
    g.add_argument("--resume", action="store_true", help="restore an interrupted sweep in --output and finish it")


def _print_results(summary: dict, summary_path: Path) -> None:
    columns = ["kl_radius", "clip_param", "status", "iterations", "stage1_final_return", "ppo_final_return",
               "handoff_max_abs_diff", "ppo_weight_change_l2", "total_wall_s"]
    from experiments.training import sweep

    print("\nTrials")
    print(sweep.format_table(summary["trials"], columns))
    best = summary["best"]
    if best:
        print(f"\nbest trial (by {summary['metric']}): kl_radius={best['kl_radius']:g} clip={best['clip_param']:g} "
              f"score={best['score']:.4g} (stage 1 {format_value(best['stage1_final_return'])} -> "
              f"PPO {format_value(best['ppo_final_return'])})")
    print(f"summary: {summary_path}")


def run(args: argparse.Namespace) -> int:
    """Run ``waddington sweep``; exit status 1 when any trial errored."""
    from experiments.training import sweep

    settings, other = settings_from_args(args, extra_keys=SWEEP_KEYS)
    kl = args.kl_radius or other.get("kl_radius_grid") or [0.005, 0.01, 0.02]
    clips = args.clip_param or other.get("clip_param_grid") or [0.1, 0.2, 0.3]
    searcher = args.searcher or other.get("searcher") or "grid"
    scheduler = args.scheduler or other.get("scheduler") or "none"
    num_samples = args.num_samples or other.get("num_samples") or (8 if searcher == "optuna" else 1)
    try:
        kl, clips = sweep.validate_grid(kl, clips)
    except sweep.SweepError as exc:
        raise UsageError(str(exc)) from exc
    if args.resume and not args.output:
        raise UsageError("--resume needs --output DIR of the sweep to finish.")
    storage = args.output if args.output and "://" in args.output else None  # shared storage URI
    out = (Path("runs") / f"sweep-{args.name}" if storage else output_dir(args, "sweep")).resolve()
    check_address(args.address)
    data = prepare_env_data(settings, verbose=not args.quiet)
    init_ray(args)
    out.mkdir(parents=True, exist_ok=True)
    print(f"waddington sweep -> {out / args.name}  kl_radius={kl} clip={clips} searcher={searcher} "
          f"scheduler={scheduler} samples={num_samples}", flush=True)
    started = time.perf_counter()
    try:
        results = sweep.run_sweep(
            settings, kl_radii=kl, clips=clips, storage_path=storage or out, name=args.name, searcher=searcher,
            scheduler=scheduler, num_samples=num_samples, max_concurrent=args.max_concurrent,
            max_failures=args.max_failures, resume=args.resume, data=data, verbose=0 if args.quiet else 1,
            # an existing cluster may autoscale: let trials wait for nodes instead of failing
            autoscaling=bool(args.address or os.environ.get("RAY_ADDRESS")),
        )
    except sweep.SweepError as exc:
        raise UsageError(str(exc)) from exc
    summary = sweep.summarize(results)
    summary["wall_s"] = time.perf_counter() - started
    sweep.write_summary(summary, out / "sweep_summary.json")
    _print_results(summary, out / "sweep_summary.json")
    return 1 if any(row["error"] for row in summary["trials"]) else 0
