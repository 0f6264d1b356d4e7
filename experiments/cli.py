"""``waddington``: the command-line entry point.

Subcommands are registered in :data:`COMMANDS` with :func:`command`; adding one (e.g.
``waddington evaluate``) is one decorated function pair in any module imported here::

    @command("evaluate", help="...")
    def _evaluate_args(parser): ...          # add its options
    def _evaluate(args) -> int: ...          # run it; attach with _evaluate_args.run = _evaluate

Every input is checked before training starts -- unknown options (argparse), settings out of
range, a sweep grid with invalid values, data that fails validation, a cluster address that does
not answer -- and reported as one ``error: ...`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main", "command", "COMMANDS", "UsageError", "init_ray", "check_address"]


class UsageError(ValueError):
    """Bad input found before any training started."""


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str):
    """Register a subcommand: decorate its ``add_arguments(parser)``; set ``.run`` via the returned object."""

    def deco(add_arguments):
        COMMANDS[name] = Command(name=name, help=help, add_arguments=add_arguments)
        return COMMANDS[name]

    return deco


# ---------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------

def _run_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--config", metavar="YAML", help="YAML file of settings (keys as in experiments.two_stage.DEFAULTS); "
                   "command-line options override it")
    g.add_argument("--data", help="'synthetic' (default) or a path to an .h5ad file / prepared dataset directory")
    g.add_argument("--perturbation-key", help="obs column with perturbation labels (real data)")
    g.add_argument("--control-value", help="control label in that column (real data)")
    g.add_argument("--trpo-iters", type=int, help="TRPO iterations (stage 1)")
    g.add_argument("--ppo-iters", type=int, help="PPO iterations (stage 2)")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--train-batch-size", type=int, help="env steps per iteration (both stages)")
    g.add_argument("--num-env-runners", type=int, help="remote env runners per run (0: sample in the trainer)")
    g.add_argument("--num-envs-per-env-runner", type=int, help="vectorized envs per env runner")
    g.add_argument("--output", "-o", metavar="DIR", help="output directory (default: runs/<command>-<time>); for a "
                   "multi-node sweep without a shared filesystem, a storage URI such as s3://bucket/path")
    g.add_argument("--address", help="Ray cluster address (host:port, 'auto'); default: $RAY_ADDRESS or a new local Ray")
    g.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (default: all)")
    g.add_argument("--quiet", "-q", action="store_true", help="less progress output")


_OPTION_TO_SETTING = {
    "data": "data",
    "perturbation_key": "perturbation_key",
    "control_value": "control_value",
    "trpo_iters": "trpo_iters",
    "ppo_iters": "ppo_iters",
    "seed": "seed",
    "train_batch_size": "train_batch_size",
    "num_env_runners": "num_env_runners",
    "num_envs_per_env_runner": "num_envs_per_env_runner",
}


def _load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--config file not found: '{p}'.")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--config '{p}' is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"--config '{p}' must hold a mapping of settings, got {type(loaded).__name__}.")
    return loaded


def _settings_from_args(args: argparse.Namespace, extra_keys: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(two-stage settings, other YAML keys such as sweep grids), validated."""
    from experiments.two_stage import DEFAULTS, SettingsError, resolve_settings

    raw = _load_yaml(args.config)
    other = {k: raw.pop(k) for k in list(raw) if k in extra_keys}
    for opt, key in _OPTION_TO_SETTING.items():
        value = getattr(args, opt, None)
        if value is not None:
            raw[key] = value
    try:
        settings = resolve_settings(raw)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    if settings["env"] != DEFAULTS["env"] and args.data is not None:
        raise UsageError(f"--data applies to the CellState env only, but env is {settings['env']!r}.")
    return settings, other


def _output_dir(args, prefix: str) -> Path:
    out = Path(args.output) if args.output else Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output '{out}' exists and is not a directory.")
    return out


def check_address(address: str | None, timeout_s: float = 3.0) -> str | None:
    """Fail fast when a given cluster address does not answer (instead of Ray's long retries)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return address
    target = address
    for scheme in ("ray://", "http://", "https://"):
        if target.startswith(scheme):
            target = target[len(scheme):]
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"Cluster address {address!r} is not host:port (e.g. 10.0.0.5:6379 or 'auto').")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UsageError(
            f"No Ray cluster answers at {address!r} ({exc.strerror or exc}). Start one with `ray start --head` "
            "or check the address."
        ) from exc
    return address


def init_ray(args) -> None:
    """Join ``--address``/``$RAY_ADDRESS`` (checked to answer first) or start a loopback-only local Ray."""
    import ray

    address = check_address(getattr(args, "address", None))
    if ray.is_initialized():
        return
    if address is None:
        from experiments.ray_runtime import start_local_ray

        start_local_ray(num_cpus=args.num_cpus, log_to_driver=not args.quiet)
        return
    try:
        ray.init(address=address, log_to_driver=not args.quiet)
    except ConnectionError as exc:
        raise UsageError(f"Could not connect to a Ray cluster at {address!r}: {exc}") from exc


def _prepare_data(settings: dict, *, verbose: bool):
    """Validate and prepare the dataset once in the driver (clear error before any training)."""
    from experiments.two_stage import prepare_data

    try:
        return prepare_data(settings, verbose=verbose)
    except FileNotFoundError as exc:
        raise UsageError(f"Data: {exc}") from exc
    except ValueError as exc:  # envs.DataValidationError is a ValueError
        raise UsageError(f"Data failed validation: {exc}") from exc


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

@command("train", help="one two-stage run: TRPO, then PPO from TRPO's exact weights; writes DIR/summary.json")
def _train_args(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    parser.add_argument("--kl-radius", type=float, help="TRPO KL trust-region radius (> 0)")
    parser.add_argument("--clip", type=float, dest="clip_param", help="PPO clip parameter in (0, 1)")


def _train(args: argparse.Namespace) -> int:
    from experiments.two_stage import resolve_settings, run_two_stage

    settings, _ = _settings_from_args(args)
    for key in ("kl_radius", "clip_param"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    try:
        settings = resolve_settings(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out = _output_dir(args, "train")
    t0 = time.perf_counter()
    check_address(args.address)  # fast; before the (slower) data preparation
    data = _prepare_data(settings, verbose=not args.quiet)
    init_ray(args)
    out.mkdir(parents=True, exist_ok=True)
    import envs  # noqa: F401  (registers the env in this process)

    print(f"waddington train -> {out}  (TRPO {settings['trpo_iters']} it, PPO {settings['ppo_iters']} it, "
          f"kl_radius={settings['kl_radius']:g}, clip={settings['clip_param']:g}, seed={settings['seed']})", flush=True)
    summary = None
    for m in run_two_stage(settings, work_dir=out / "checkpoints", data=data):
        if not args.quiet:
            print(f"[{time.perf_counter() - t0:6.1f}s] {m['stage']:>4} it {m['stage_iteration']:>3}  "
                  f"return {_fmt(m.get('episode_return_mean'))}  steps {_fmt(m.get('num_env_steps_sampled_lifetime'))}  "
                  f"iter {m.get('time_this_iter_s', 0.0):.2f}s", flush=True)
        if "checkpoint_dir" in m:
            print(f"         checkpoint ({m['stage']} done): {m['checkpoint_dir']}", flush=True)
        if "summary" in m:
            summary = m["summary"]
    summary = {**summary, "wall_s": time.perf_counter() - t0, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = [
        ("stage 1 algorithm", summary["stage1_algorithm"]),
        ("TRPO final return", summary["trpo_final_return"]),
        ("PPO final return", summary["ppo_final_return"]),
        ("TRPO wall s", summary["trpo_wall_s"]),
        ("PPO wall s", summary["ppo_wall_s"]),
        ("TRPO weight change L2", summary["trpo_weight_change_l2"]),
        ("handoff max |diff| (learner + runners)", summary["handoff_max_abs_diff"]),
        ("samplers checked", summary["handoff_num_samplers_checked"]),
        ("PPO weight change L2", summary["ppo_weight_change_l2"]),
        ("total wall s (incl. data + Ray)", summary["wall_s"]),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nSummary")
    print("-" * (width + 14))
    for k, v in rows:
        print(f"{k:<{width}}  {_fmt(v)}")
    print("-" * (width + 14))
    ok = summary["handoff_max_abs_diff"] <= 1e-6 and summary["ppo_weight_change_l2"] > 0
    print(f"both stages trained and the handoff is exact: {'yes' if ok else 'NO'}")
    print(f"summary: {out / 'summary.json'}")
    return 0 if ok else 1


COMMANDS["train"].run = _train


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------

def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


@command("sweep", help="Tune sweep of KL radius x PPO clip over the Ray cluster; resumable with --resume")
def _sweep_args(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    g = parser.add_argument_group("sweep")
    g.add_argument("--kl-radius", type=_float_list, help="comma-separated KL radii (default 0.005,0.01,0.02)")
    g.add_argument("--clip", type=_float_list, dest="clip_param", help="comma-separated PPO clips (default 0.1,0.2,0.3)")
    g.add_argument("--searcher", choices=["grid", "optuna"], default=None, help="grid (default) or optuna")
    g.add_argument("--scheduler", choices=["none", "asha"], default=None, help="trial scheduler (default none)")
    g.add_argument("--num-samples", type=int, default=None, help="grid repeats / optuna trials (default 1 / 8)")
    g.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    g.add_argument("--max-failures", type=int, default=2, help="Tune retries per failed trial (default 2)")
    g.add_argument("--name", default="sweep", help="experiment name inside --output (default 'sweep')")
    g.add_argument("--resume", action="store_true", help="restore an interrupted sweep in --output and finish it")


SWEEP_KEYS = ("kl_radius_grid", "clip_param_grid", "searcher", "scheduler", "num_samples")


def _sweep(args: argparse.Namespace) -> int:
    from experiments import sweep

    settings, other = _settings_from_args(args, extra_keys=SWEEP_KEYS)
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
    out = Path("runs") / f"sweep-{args.name}" if storage else _output_dir(args, "sweep")
    out = out.resolve()
    check_address(args.address)
    data = _prepare_data(settings, verbose=not args.quiet)
    init_ray(args)
    out.mkdir(parents=True, exist_ok=True)
    print(f"waddington sweep -> {out / args.name}  kl_radius={kl} clip={clips} searcher={searcher} "
          f"scheduler={scheduler} samples={num_samples}", flush=True)
    t0 = time.perf_counter()
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
    summary["wall_s"] = time.perf_counter() - t0
    sweep.write_summary(summary, out / "sweep_summary.json")
    cols = ["kl_radius", "clip_param", "status", "iterations", "trpo_final_return", "ppo_final_return",
            "handoff_max_abs_diff", "ppo_weight_change_l2", "total_wall_s"]
    print("\nTrials")
    print(sweep.format_table(summary["trials"], cols))
    best = summary["best"]
    if best:
        print(f"\nbest trial (by {summary['metric']}): kl_radius={best['kl_radius']:g} clip={best['clip_param']:g} "
              f"score={best['score']:.4g} (TRPO {_fmt(best['trpo_final_return'])} -> PPO {_fmt(best['ppo_final_return'])})")
    print(f"summary: {out / 'sweep_summary.json'}")
    errors = [r for r in summary["trials"] if r["error"]]
    return 1 if errors else 0


COMMANDS["sweep"].run = _sweep

# evaluate: defined in experiments/evaluate_cli.py (registered here so `python -m experiments.cli` sees it)
from experiments.evaluate_cli import HELP as _EVAL_HELP, add_evaluate_arguments, run_evaluate  # noqa: E402
command("evaluate", help=_EVAL_HELP)(add_evaluate_arguments).run = run_evaluate


# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waddington",
        description="Steer single cells across a learned Waddington landscape: TRPO -> PPO with Ray RLlib/Tune.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # unknown options: argparse prints usage + error, exit 2
    cmd = COMMANDS[args.command]
    try:
        return int(cmd.run(args) or 0)
    except UsageError as exc:
        print(f"waddington {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
