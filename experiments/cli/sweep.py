"""``waddington sweep``: a Tune sweep of KL radius x PPO clip (and any ``--grid`` settings) over the Ray cluster, resumable with ``--resume``.

The sweep directory holds ``manifest.json`` (written first, completed last; at the end it lists each
trial's final checkpoint), the prepared dataset every trial trained on (``dataset/``), Tune's
experiment (``<name>/``), ``sweep_summary.json`` and, with ``-q``, ``ray.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

from experiments.cli.checks import (
    cli_message,
    document_defaults,
)
from experiments.cli.config_file import settings_from_args
from experiments.cli.data import checked_data_settings
from experiments.cli.errors import UsageError
from experiments.cli.options import add_run_options, float_list, sweep_axis
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
    run_command,
)
from experiments.cli.train import format_value

__all__ = ["NAME", "HELP", "add_arguments", "run", "SWEEP_KEYS"]

NAME = "sweep"
HELP = "Tune sweep of KL radius x PPO clip (plus --grid settings) over the Ray cluster; resumable with --resume"

#: YAML keys of a sweep besides the two-stage settings.
SWEEP_KEYS = ("kl_radius_grid", "clip_param_grid", "grid", "searcher", "scheduler", "num_samples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington sweep``."""
    add_run_options(parser)
    g = parser.add_argument_group("sweep")
    g.add_argument("--kl-radius", type=float_list, help="comma-separated KL radii (default 0.005,0.01,0.02)")
    g.add_argument("--clip", type=float_list, dest="clip_param", help="comma-separated PPO clips (default 0.1,0.2,0.3)")
    g.add_argument("--grid", type=sweep_axis, action="append", metavar="KEY=V1,V2",
                   help="one more setting to sweep, repeatable: e.g. --grid fcnet_hiddens=64x64,128x128 "
                        "--grid entropy_coeff=0,0.01 (YAML: grid: {key: [values]})")
    g.add_argument("--searcher", choices=["grid", "optuna"], default=None, help="grid (default) or optuna")
    g.add_argument("--scheduler", choices=["none", "asha"], default=None, help="trial scheduler (default none)")
    g.add_argument("--num-samples", type=int, default=None, help="grid repeats / optuna trials (default 1 / 8)")
    g.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    g.add_argument("--max-failures", type=int, default=2, help="Tune retries per failed trial (default 2)")
    g.add_argument("--name", default="sweep", help="experiment name inside --output (default 'sweep')")
    g.add_argument("--resume", action="store_true", help="restore an interrupted sweep in --output and finish it "
                   "(with the settings and dataset it started with)")
    g.add_argument("--overwrite", action="store_true", help="replace the sweep in --output whole (the old one is "
                   "deleted once the new sweep's manifest exists)")
    document_defaults(parser, {"kl_radius": "0.005,0.01,0.02", "clip_param": "0.1,0.2,0.3"})


def _print_results(summary: dict, summary_path: Path, axes: list[str]) -> None:
    columns = ["kl_radius", "clip_param", *axes, "status", "iterations", "stage1_final_return", "ppo_final_return",
               "handoff_max_abs_diff", "ppo_weight_change_l2", "total_wall_s"]
    from experiments.training import sweep

    print("\nTrials")
    print(sweep.format_table(summary["trials"], columns))
    best = summary["best"]
    if best:
        swept = "".join(f" {key}={best[key]}" for key in axes)
        print(f"\nbest trial (by {summary['metric']}): kl_radius={best['kl_radius']:g} clip={best['clip_param']:g}{swept} "
              f"score={best['score']:.4g} (stage 1 {format_value(best['stage1_final_return'])} -> "
              f"PPO {format_value(best['ppo_final_return'])})")
    print(f"summary: {summary_path}")


def _resume_hint(args: argparse.Namespace, out: Path) -> str:
    argv = [a for a in (getattr(args, "argv", None) or ["sweep"]) if a not in ("--overwrite", "--resume")]
    if args.output is None:
        argv += ["--output", str(out)]
    return "waddington " + " ".join(argv + ["--resume"])


def run(args: argparse.Namespace) -> int:
    """Run ``waddington sweep``; exit status 1 when any trial errored."""
    return run_command(_run, args)


@dataclasses.dataclass
class _Grid:
    """What the sweep searches: the KL x clip grid, more setting axes, the searcher and scheduler, samples per point."""

    kl: list[float]
    clips: list[float]
    searcher: str
    scheduler: str
    num_samples: int
    axes: dict[str, list] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kl_radius": self.kl, "clip_param": self.clips, **self.axes, "searcher": self.searcher,
                "scheduler": self.scheduler, "num_samples": self.num_samples}


def _run(args: argparse.Namespace, library_log: list) -> int:
    settings, grid = _settings_and_grid(args)
    storage = args.output if args.output and "://" in args.output else None  # shared storage URI
    out = (Path("runs") / f"sweep-{args.name}" if storage else output_dir(args, "sweep")).resolve()
    manifest, settings = _claim(args, out, storage, settings)
    if manifest is not None:  # resumed: Tune restores the trials it started; report the axes they used
        started = {k: v for k, v in (manifest.data.get("grid") or {}).items()
                   if k not in ("kl_radius", "clip_param", "searcher", "scheduler", "num_samples")}
        if args.grid and dict(args.grid) != started:
            raise UsageError(cli_message(f"--resume finishes the sweep with the axes it started with ({started}); "
                                         "drop --grid or start a new sweep.", args))
        grid = dataclasses.replace(grid, axes=started)
    dataset_dir = out / "dataset"
    resumed_with_dataset = manifest is not None and (dataset_dir / "meta.json").is_file()
    if manifest is not None and not resumed_with_dataset:  # stopped before its dataset was saved: prepare it again
        settings = settings.replace(data=(manifest.data.get("input") or {}).get("data", "synthetic"))
    source = settings.data
    if not resumed_with_dataset:
        settings = checked_data_settings(settings, args)  # a prepared dir (or URI) describes itself
    check_address(args.address)
    if args.quiet:
        library_log.append(LibraryLog().start())
    LibraryLog.quiet_ray()
    if resumed_with_dataset:
        import envs

        dataset = envs.load_dataset(dataset_dir)
        run_settings = settings.replace(data=str(dataset_dir))
    else:
        dataset = prepare_run_dataset(settings, verbose=not args.quiet)
        run_settings = settings if dataset is None else settings.replace(data=str(dataset_dir))
    manifest = _open_manifest(args, out, manifest, settings.replace(data=source), run_settings, grid)
    args.resume_hint = _resume_hint(args, out)
    # Ctrl-C stops the driver at once (one line, exit 130); Tune's state on disk is what --resume restores
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    with guarded(manifest):
        if library_log:
            library_log[0].attach(out / LIBRARY_LOG_NAME)
            manifest.update(outputs={**manifest.data.get("outputs", {}), "library_log": LIBRARY_LOG_NAME})
        if dataset is not None and not resumed_with_dataset:
            dataset.save(dataset_dir, overwrite=True)
            manifest.update(dataset="dataset")
        summary = _sweep(args, out, storage, run_settings, grid, dataset, library_log, manifest)
        manifest.finish("complete", outputs={**manifest.data.get("outputs", {}), "summary": "sweep_summary.json"})
    _print_results(summary, out / "sweep_summary.json", list(grid.axes))
    return 1 if any(row["error"] for row in summary["trials"]) else 0


def _settings_and_grid(args: argparse.Namespace):
    """Validated settings and the grid (options > YAML > defaults); bad values are one UsageError."""
    try:
        settings, other = settings_from_args(args, extra_keys=SWEEP_KEYS)
    except UsageError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc
    kl = args.kl_radius or other.get("kl_radius_grid") or [0.005, 0.01, 0.02]
    clips = args.clip_param or other.get("clip_param_grid") or [0.1, 0.2, 0.3]
    searcher = args.searcher or other.get("searcher") or "grid"
    scheduler = args.scheduler or other.get("scheduler") or "none"
    num_samples = args.num_samples or other.get("num_samples") or (8 if searcher == "optuna" else 1)
    kl, clips = _validate_grid(kl, clips, args)
    yaml_axes = other.get("grid") or {}
    if not isinstance(yaml_axes, dict):
        raise UsageError(cli_message(f"The YAML key 'grid' must map settings to lists of values, got {yaml_axes!r}.",
                                     args))
    axes = _validate_axes(settings, {**yaml_axes, **dict(args.grid or [])}, args)
    if args.resume and not args.output:
        raise UsageError("--resume needs --output DIR of the sweep to finish.")
    if args.resume and args.overwrite:
        raise UsageError("--resume finishes a sweep and --overwrite replaces one; pass only one of them.")
    return settings, _Grid(kl, clips, searcher, scheduler, num_samples, axes)


def _claim(args: argparse.Namespace, out: Path, storage: str | None, settings):
    """(the manifest of the sweep to resume or None, the settings it ran with); a busy output is refused."""
    from experiments.training.settings import TwoStageSettings, setting_names

    manifest = None
    if args.resume and not storage and not (out / args.name).is_dir():
        raise UsageError(f"Nothing to resume at '{out / args.name}': no sweep there (check --output and --name).")
    if args.resume:
        if out.is_dir() and (out / "manifest.json").exists():
            manifest = resume_run(out, kind="sweep", args=args)
            check_resume_settings(args, manifest, ignore=("kl_radius", "clip_param",
                                                          *((manifest.data.get("grid") or {}).keys())))
            names = set(setting_names())
            settings = TwoStageSettings.from_mapping({k: v for k, v in manifest.data["settings"].items()
                                                      if k in names})
        # else: a sweep written before manifests existed: resumed from the options given, as before
    else:
        check_output_free(out, overwrite=args.overwrite, resume_hint=f"`{_resume_hint(args, out)}` to finish it")
    return manifest, settings


def _open_manifest(args: argparse.Namespace, out: Path, manifest, settings, run_settings, grid: _Grid):
    """The sweep's manifest: a new one, one adopted by an older sweep dir, or the resumed one marked so."""
    from experiments.runs.manifest import RunManifest, describe_input

    if manifest is None and args.resume:  # adopt an older sweep dir: it gets a manifest now
        out.mkdir(parents=True, exist_ok=True)
        return RunManifest.create(out, kind="sweep", argv=getattr(args, "argv", None),
                                  settings=run_settings.to_dict(), seed=settings.seed,
                                  input=describe_input(settings.data), adopted=True)
    if manifest is None:
        return start_run(out, kind="sweep", args=args, overwrite=args.overwrite, settings=run_settings.to_dict(),
                         seed=settings.seed, input=describe_input(settings.data), experiment=args.name,
                         grid=grid.as_dict())
    manifest.resumed(getattr(args, "argv", None))
    return manifest


def _sweep(args: argparse.Namespace, out: Path, storage, run_settings, grid: _Grid, dataset, library_log,
           manifest) -> dict:
    """Run the Tune sweep; its summary (written to ``sweep_summary.json``); the trials' checkpoints to the manifest."""
    from experiments.training import sweep

    init_ray(args)
    swept = "".join(f" {key}={values}" for key, values in grid.axes.items())
    print(f"waddington sweep -> {out / args.name}  kl_radius={grid.kl} clip={grid.clips}{swept} searcher={grid.searcher} "
          f"scheduler={grid.scheduler} samples={grid.num_samples}", flush=True)
    started = time.perf_counter()
    quiet = library_log[0].library_prints() if library_log else contextlib.nullcontext()
    try:
        with quiet:  # -q: Tune's own progress boxes go to the log file
            results = sweep.run_sweep(
                run_settings, kl_radii=grid.kl, clips=grid.clips, storage_path=storage or out, name=args.name,
                searcher=grid.searcher, scheduler=grid.scheduler, num_samples=grid.num_samples,
                max_concurrent=args.max_concurrent, max_failures=args.max_failures, resume=args.resume,
                data=None if dataset is None else dataset.env_view(), verbose=0 if args.quiet else 1,
                # an existing cluster may autoscale: let trials wait for nodes instead of failing
                autoscaling=bool(args.address or os.environ.get("RAY_ADDRESS")), axes=grid.axes,
            )
    except sweep.SweepError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc
    summary = sweep.summarize(results, axes=list(grid.axes))
    summary["wall_s"] = time.perf_counter() - started
    sweep.write_summary(summary, out / "sweep_summary.json")
    manifest.update(checkpoints=_trial_checkpoints(results, manifest))
    return summary


def _validate_grid(kl, clips, args):
    from experiments.training import (
        sweep as sweep_grid,  # light: no Ray import at module level
    )

    try:
        return sweep_grid.validate_grid(kl, clips)
    except sweep_grid.SweepError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc


def _validate_axes(settings, axes: dict, args) -> dict[str, list]:
    from experiments.training import sweep as sweep_grid

    try:
        return sweep_grid.validate_axes(settings, axes)
    except sweep_grid.SweepError as exc:
        raise UsageError(cli_message(str(exc), args)) from exc


def _trial_checkpoints(results, manifest) -> list[dict]:
    """Each trial's final checkpoint (relative to the sweep dir when it is local)."""
    rows = []
    for result in results:
        checkpoint = getattr(result, "checkpoint", None)
        path = getattr(checkpoint, "path", None)
        if not path or "://" in str(path):
            continue
        stage = None
        try:
            stage = json.loads((Path(path) / "state.json").read_text()).get("stage_done")
        except (OSError, ValueError):
            pass
        rows.append({"trial": Path(str(result.path)).name, "stage": stage, "path": manifest.relative(path)})
    return rows
