"""``waddington train``: one two-stage run (TRPO, then PPO from TRPO's exact weights) with a summary table.

The run directory holds ``manifest.json`` (written first, completed last), the prepared dataset the
policy learned on (``dataset/``, with its expression matrix, so ``evaluate``/``predict`` use exactly
that space), ``checkpoints/stage1-*`` and ``stage2-*`` and ``summary.json``; with ``-q`` also
``ray.log`` (Ray's and RLlib's messages). ``--resume DIR`` continues an interrupted run from the
last stage checkpoint its manifest lists; ``--overwrite`` replaces a run whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from experiments.cli.checks import (
    cli_message,
    document_defaults,
    quick_data_check,
)
from experiments.cli.config_file import settings_from_args
from experiments.cli.data import checked_data_settings, resolve_prepared_data
from experiments.cli.errors import UsageError
from experiments.cli.options import add_run_options
from experiments.cli.run_dirs import (
    check_output_free,
    check_resume_settings,
    guarded,
    prepare_run_dataset,
    resume_run,
    start_run,
)
from experiments.cli.runtime import (
    LIBRARY_LOG_NAME,
    LibraryLog,
    check_address,
    init_ray,
    output_dir,
    raise_if_interrupted,
    run_command,
)
from experiments.training.settings import CELLSTATE_ENV

__all__ = ["NAME", "HELP", "add_arguments", "run", "format_value"]

NAME = "train"
HELP = ("one two-stage run: TRPO, then PPO from TRPO's exact weights; writes DIR/manifest.json, DIR/summary.json, "
        "the checkpoints and the prepared dataset")


#: The main job's schedule, where it differs from ``TwoStageSettings`` (which ``evaluate`` and ``sweep``
#: keep: the results were measured with them). On the synthetic default the sampled return is flat from
#: TRPO's first iteration and the mean-action return after 10 TRPO + ~20 PPO iterations matches 40 + ~60
#: (0.840 vs 0.838 of the oracle over 3 seeds; docs/method.md, "The main job's schedule").
TRAIN_DEFAULTS = {"trpo_iters": 10, "plateau_patience": 10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington train``."""
    add_run_options(parser)
    parser.add_argument("--kl-radius", type=float, help="TRPO KL trust-region radius (> 0)")
    parser.add_argument("--clip", type=float, dest="clip_param", help="PPO clip parameter in (0, 1)")
    g = parser.add_argument_group("run directory")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --output whole (the old one is "
                   "deleted once the new run's manifest exists)")
    g.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR from the last stage "
                   "checkpoint its manifest lists, with its own settings (default: start a new run)")
    document_defaults(parser, defaults=TRAIN_DEFAULTS)


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
        ("oracle-controller return (same env)", summary.get("oracle_return")),
        ("PPO final return / oracle's", summary.get("ppo_return_fraction_of_oracle")),
        ("PPO mean-action return (same env)", summary.get("ppo_mean_action_return")),
        ("PPO mean-action return / oracle's", summary.get("ppo_mean_action_fraction_of_oracle")),
        ("guide alone (zero action) / oracle's", summary.get("guide_fraction_of_oracle")),
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


def _settings(args: argparse.Namespace):
    try:
        settings, _ = settings_from_args(args, overrides={"kl_radius": args.kl_radius, "clip_param": args.clip_param},
                                         defaults=TRAIN_DEFAULTS)
    except UsageError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc
    return settings


def run(args: argparse.Namespace) -> int:
    """Run ``waddington train``; exit status 0 when the handoff is exact and PPO trained."""
    return run_command(lambda args_, logs: _resume(args_, logs) if args_.resume else _new_run(args_, logs), args)


def _new_run(args: argparse.Namespace, library_log: list) -> int:
    from experiments.runs.manifest import describe_input

    settings = _settings(args)
    out = output_dir(args, "train")
    # cheap checks first (no heavy import): the output dir, the data file and its obs, the cluster address
    check_output_free(out, overwrite=args.overwrite, resume_hint=f"`waddington train --resume {out}` to continue it")
    source = settings.data
    settings = checked_data_settings(settings, args)  # a prepared dir (or URI) describes itself
    check_address(args.address)
    started = time.perf_counter()
    if args.quiet:
        library_log.append(LibraryLog().start())
    dataset = prepare_run_dataset(settings, verbose=not args.quiet)
    run_settings = settings if dataset is None else settings.replace(data=str(out / "dataset"))
    manifest = start_run(out, kind="train", args=args, overwrite=args.overwrite, settings=run_settings.to_dict(),
                         seed=settings.seed, input=describe_input(source),  # the URI, not this machine's cache
                         dataset=None if dataset is None else "dataset")
    args.resume_hint = f"waddington train --resume {out}"
    with guarded(manifest):
        if library_log:
            library_log[0].attach(out / LIBRARY_LOG_NAME)
            manifest.update(outputs={**manifest.data["outputs"], "library_log": LIBRARY_LOG_NAME})
        if dataset is not None:
            dataset.save(out / "dataset")  # the full dataset (with expression): evaluation's gene space
        init_ray(args)
        return _train(args, manifest, run_settings, dataset, started, resume_from=None)


def _resume(args: argparse.Namespace, library_log: list) -> int:
    from experiments.training.settings import TwoStageSettings, setting_names

    out = Path(args.resume).expanduser().resolve()
    if args.output and Path(args.output).expanduser().resolve() != out:
        raise UsageError(f"--resume {args.resume} continues that directory; drop --output {args.output}.")
    if args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces one; pass only one of them.")
    manifest = resume_run(out, kind="train", args=args)
    check_resume_settings(args, manifest)
    names = set(setting_names())
    recorded = TwoStageSettings.from_mapping({k: v for k, v in manifest.data["settings"].items() if k in names})
    if manifest.status == "complete" and (out / "summary.json").is_file():
        print(f"waddington train: '{out}' is already complete; nothing to resume.")
        _print_summary(json.loads((out / "summary.json").read_text()))
        return 0
    check_address(args.address)
    started = time.perf_counter()
    dataset = None
    dataset_dir = out / "dataset"
    if manifest.data.get("dataset") and not (dataset_dir / "meta.json").is_file():
        # interrupted before the dataset was saved: prepare it again from the recorded input
        source = recorded.replace(data=(manifest.data.get("input") or {}).get("data", "synthetic"))
        source = resolve_prepared_data(source, keep_seed=True)  # a storage URI: fetched again on this machine
        quick_data_check(source)
        dataset = prepare_run_dataset(source, verbose=not args.quiet)
    if manifest.data.get("dataset"):
        recorded = recorded.replace(data=str(dataset_dir))
    if args.quiet:
        library_log.append(LibraryLog().start())
    manifest.resumed(getattr(args, "argv", None))
    args.resume_hint = f"waddington train --resume {out}"
    with guarded(manifest):
        if library_log:
            library_log[0].attach(out / LIBRARY_LOG_NAME)
        if dataset is not None:
            dataset.save(dataset_dir, overwrite=True)
        resume_from = _last_checkpoint(manifest)
        _drop_unlisted_checkpoints(out, manifest)
        if manifest.data.get("dataset"):
            import envs

            dataset = envs.load_dataset(dataset_dir)
        init_ray(args)
        return _train(args, manifest, recorded, dataset, started, resume_from=resume_from)


def _last_checkpoint(manifest) -> Path | None:
    """The last stage checkpoint the manifest lists that is complete on disk (``state.json`` written)."""
    for path in reversed(manifest.checkpoint_paths()):
        if (path / "state.json").is_file():
            return path
    return None


def _drop_unlisted_checkpoints(out: Path, manifest) -> None:
    """Remove stage checkpoints of this run that its manifest never listed (a save cut short by Ctrl-C)."""
    listed = set(manifest.checkpoint_paths())
    for path in sorted((out / "checkpoints").glob("stage[12]-*")):
        if path.resolve() not in listed:
            shutil.rmtree(path, ignore_errors=True)
    manifest.update(checkpoints=[c for c in manifest.data.get("checkpoints", [])
                                 if (manifest.resolve(c["path"]) / "state.json").is_file()])


def _train(args, manifest, settings, dataset, started: float, *, resume_from: Path | None) -> int:
    """Both stages (or what is left of them), the manifest kept current, summary.json and the table."""
    import ray.rllib  # noqa: F401  (imported here so that -q can take its terminal handler off first)

    import envs  # noqa: F401  (registers the env in this process)
    from experiments.runs.manifest import write_json_atomic
    from experiments.training.two_stage import read_checkpoint_state, run_two_stage

    LibraryLog.quiet_ray()

    out = manifest.run_dir
    verb = f"resuming from {manifest.relative(resume_from)}" if resume_from else "starting"
    print(f"waddington train -> {out}  {verb}  (TRPO {settings.trpo_iters} it, PPO {settings.ppo_iters} it, "
          f"kl_radius={settings.kl_radius:g}, clip={settings.clip_param:g}, seed={settings.seed})", flush=True)
    summary, final_checkpoint = None, None
    data = dataset.env_view() if dataset is not None else None
    for metrics in run_two_stage(settings, work_dir=out / "checkpoints", resume_from=resume_from, data=data):
        raise_if_interrupted()  # a Ctrl-C that a finalizer swallowed stops the run at the next iteration
        if metrics.get("done_before_resume"):  # stage 2 had finished: its summary is in the checkpoint
            summary = read_checkpoint_state(resume_from)["summary"]
            continue
        if not args.quiet:
            _print_iteration(metrics, started)
        if "checkpoint_dir" in metrics:
            final_checkpoint = metrics["checkpoint_dir"]
            manifest.add_checkpoint(metrics["stage"], metrics["checkpoint_dir"])
            print(f"         checkpoint ({metrics['stage']} done): {metrics['checkpoint_dir']}", flush=True)
        summary = metrics.get("summary", summary)
    raise_if_interrupted()
    summary = {**summary, **_against_the_oracle(summary, settings, dataset, final_checkpoint)}
    summary = {**summary, "wall_s": time.perf_counter() - started, "output": str(out),
               "resumed_from": manifest.relative(resume_from) if resume_from else None}
    write_json_atomic(out / "summary.json", summary)
    manifest.finish("complete", outputs={**manifest.data.get("outputs", {}), "summary": "summary.json"})
    ok = _print_summary(summary)
    print(f"summary: {out / 'summary.json'}")
    if dataset is not None and dataset.truth is not None and dataset.expression is not None:
        # the main job shows the answer: every synthetic perturbation predicted vs the known truth
        from experiments.prediction.synthetic_check import summarize_truth

        summarize_truth(out, out_dir=out)
    return 0 if ok else 1


def _against_the_oracle(summary: dict, settings, dataset, checkpoint) -> dict:
    """The scripted oracle's return on this env, and PPO's as a fraction of it: its last sampled
    return (exploration noise included) and its mean action's (what it predicts with). With guided
    actions also the guide's alone (a zero action on the same episodes): what the learning added."""
    if dataset is None or settings.env != CELLSTATE_ENV:
        return {}
    import numpy as np

    from experiments.evaluation.baselines import make_dynamics
    from experiments.evaluation.checkpoints import load_policy
    from experiments.training.oracle_return import oracle_return, policy_return

    view = dataset.env_view()
    oracle = oracle_return(view, settings.env_config, seed=settings.seed)
    final = summary.get("ppo_final_return")
    greedy = policy_return(view, load_policy(checkpoint), settings.env_config, seed=settings.seed) \
        if checkpoint else None
    guide = None
    if make_dynamics(view, settings.env_config).guided:
        d = view.n_latent
        guide = policy_return(view, lambda obs: np.zeros((len(obs), d)), settings.env_config, seed=settings.seed)

    def fraction(value):
        return value / oracle if value is not None and oracle > 0 else None

    return {"oracle_return": oracle, "ppo_return_fraction_of_oracle": fraction(final),
            "ppo_mean_action_return": greedy, "ppo_mean_action_fraction_of_oracle": fraction(greedy),
            "guide_return": guide, "guide_fraction_of_oracle": fraction(guide)}
