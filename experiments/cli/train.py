"""``waddington train``: one two-stage run (TRPO, then PPO from TRPO's exact weights) with a summary table."""

from __future__ import annotations

import argparse
import json
import time

from experiments.cli.config_file import settings_from_args
from experiments.cli.data import prepare_env_data
from experiments.cli.options import add_run_options
from experiments.cli.runtime import check_address, init_ray, output_dir

__all__ = ["NAME", "HELP", "add_arguments", "run", "format_value"]

NAME = "train"
HELP = "one two-stage run: TRPO, then PPO from TRPO's exact weights; writes DIR/summary.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington train``."""
    add_run_options(parser)
    parser.add_argument("--kl-radius", type=float, help="TRPO KL trust-region radius (> 0)")
    parser.add_argument("--clip", type=float, dest="clip_param", help="PPO clip parameter in (0, 1)")


def format_value(value) -> str:
    """A number in 4 significant digits, ``-`` for None."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_iteration(metrics: dict, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {metrics['stage']:>4} it {metrics['stage_iteration']:>3}  "
          f"return {format_value(metrics.get('episode_return_mean'))}  "
          f"steps {format_value(metrics.get('num_env_steps_sampled_lifetime'))}  "
          f"iter {metrics.get('time_this_iter_s', 0.0):.2f}s", flush=True)


def _print_summary(summary: dict) -> bool:
    """The summary table; True when both stages trained and the handoff is exact."""
    stage1 = "TRPO" if summary["stage1_algorithm"] == "trpo" else "stage-1 PPO"
    rows = [
        ("stage 1 algorithm", summary["stage1_algorithm"]),
        (f"{stage1} final return", summary["stage1_final_return"]),
        ("PPO final return", summary["ppo_final_return"]),
        (f"{stage1} wall s", summary["stage1_wall_s"]),
        ("PPO wall s", summary["ppo_wall_s"]),
        (f"{stage1} weight change L2", summary["stage1_weight_change_l2"]),
        ("handoff max |diff| (learner + runners)", summary["handoff_max_abs_diff"]),
        ("samplers checked", summary["handoff_num_samplers_checked"]),
        ("PPO weight change L2", summary["ppo_weight_change_l2"]),
        ("total wall s (incl. data + Ray)", summary["wall_s"]),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nSummary")
    print("-" * (width + 14))
    for key, value in rows:
        print(f"{key:<{width}}  {format_value(value)}")
    print("-" * (width + 14))
    ok = summary["handoff_max_abs_diff"] <= 1e-6 and summary["ppo_weight_change_l2"] > 0
    print(f"both stages trained and the handoff is exact: {'yes' if ok else 'NO'}")
    return ok


def run(args: argparse.Namespace) -> int:
    """Run ``waddington train``; exit status 0 when the handoff is exact and PPO trained."""
    from experiments.training.two_stage import run_two_stage

    settings, _ = settings_from_args(args, overrides={"kl_radius": args.kl_radius, "clip_param": args.clip_param})
    out = output_dir(args, "train")
    started = time.perf_counter()
    check_address(args.address)  # fast; before the (slower) data preparation
    data = prepare_env_data(settings, verbose=not args.quiet)
    init_ray(args)
    out.mkdir(parents=True, exist_ok=True)
    import envs  # noqa: F401  (registers the env in this process)

    print(f"waddington train -> {out}  (TRPO {settings.trpo_iters} it, PPO {settings.ppo_iters} it, "
          f"kl_radius={settings.kl_radius:g}, clip={settings.clip_param:g}, seed={settings.seed})", flush=True)
    summary = None
    for metrics in run_two_stage(settings, work_dir=out / "checkpoints", data=data):
        if not args.quiet:
            _print_iteration(metrics, started)
        if "checkpoint_dir" in metrics:
            print(f"         checkpoint ({metrics['stage']} done): {metrics['checkpoint_dir']}", flush=True)
        summary = metrics.get("summary", summary)
    summary = {**summary, "wall_s": time.perf_counter() - started, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ok = _print_summary(summary)
    print(f"summary: {out / 'summary.json'}")
    return 0 if ok else 1
