"""``waddington predict``: predicted cells of a trained run as one ``.h5ad`` that scanpy reads as is.

``waddington predict --run DIR [DIR ...] --perturbation STAT1,JAK2 -o pred.h5ad`` rolls the run's
TRPO -> PPO policy (or ``--method``) from its control cells (or one group's, ``--start-group
KEY=VALUE``) and writes the start cells, the predicted cells, their latent paths and the ranked
predicted change per gene (:mod:`experiments.prediction.output`). Several runs (seeds) go into one
file, told apart by ``obs['run']`` / ``obs['seed']``. Every input is checked before any cell is
rolled out; bad input is one ``waddington predict: error: ...`` line and exit status 2. An existing
output file is refused unless ``--overwrite``; the file is written atomically.
"""

from __future__ import annotations

import argparse
import time

from experiments.cli.errors import UsageError
from experiments.cli.options import csv_list
from experiments.cli.runtime import LibraryLog, library_log_path, run_command

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "predict"
HELP = ("predict perturbed cells with a trained run (held-out panel genes and groups too); writes one .h5ad: "
        "start + predicted cells, latent paths, ranked gene changes")

#: ``--method`` choices (kept here so ``--help`` needs no heavy import).
METHOD_CHOICES = ("trpo-ppo", "trpo", "ppo-only", "train-mean", "perturbation-mean", "ridge", "drift", "hint-controller",
                  "control-mean", "additive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington predict``."""
    parser.add_argument("--run", nargs="+", required=True, metavar="DIR",
                        help="output dir(s) of `waddington train` / `sweep` (best trial) / one seed of `evaluate`; "
                             "several dirs (seeds) go into one file")
    parser.add_argument("--trial", help="with a sweep dir: substring of the trial dir (default: best trial)")
    parser.add_argument("--perturbation", "-p", type=csv_list, required=True, metavar="A,B",
                        help="perturbations to predict: labels of the run's data (seen or held out) or any gene of "
                             "its panel (knockdown)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--start", choices=["control"], default="control",
                       help="start cells: the run's training control cells (default)")
    start.add_argument("--start-group", metavar="KEY=VALUE",
                       help="start from the control cells of one group (KEY: the run's --group-key or a "
                            "--covariate-keys column), e.g. a held-out cell type")
    parser.add_argument("--method", choices=METHOD_CHOICES, default="trpo-ppo",
                        help="trpo-ppo (default), trpo (stage 1), ppo-only (ablation, from an evaluate seed dir), "
                             "or a baseline")
    parser.add_argument("--n-cells", type=int, default=1000, metavar="N",
                        help="start cells per run, a seeded subsample (default 1000; all if fewer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start-cell subsample and the rollout noise")
    parser.add_argument("--top-genes", type=int, default=50, metavar="K",
                        help="genes per perturbation in uns['waddington']['ranked_genes'] (default 50)")
    parser.add_argument("--with-observed", action="store_true",
                        help="also write the data's own cells of each perturbation (kind='observed')")
    parser.add_argument("--output", "-o", required=True, metavar="FILE.h5ad", help="output .h5ad file")
    parser.add_argument("--cell-eval-dir", metavar="DIR",
                        help="also write DIR/pred.h5ad and DIR/real.h5ad in cell-eval's input form (needs "
                             "--with-observed), for `cell-eval run`")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="less progress output; Ray's and RLlib's messages go to FILE.ray.log beside the output")


def run(args: argparse.Namespace) -> int:
    """Run ``waddington predict``; 0 when the file is written."""
    return run_command(_run, args)


def _check_cell_eval_dir(args: argparse.Namespace) -> None:
    from pathlib import Path

    from experiments.prediction.runs import PredictionError

    if not args.with_observed:
        raise PredictionError("--cell-eval-dir compares the prediction with the data's own cells: add --with-observed.")
    taken = [f for f in ("pred.h5ad", "real.h5ad") if (Path(args.cell_eval_dir).expanduser() / f).exists()]
    if taken and not args.overwrite:
        raise PredictionError(f"{args.cell_eval_dir} already holds {', '.join(taken)}; pass --overwrite to replace "
                              "them or choose another --cell-eval-dir.")


def _run(args: argparse.Namespace, library_log: list) -> int:
    from envs.validation import DataValidationError
    from experiments.evaluation.checkpoints import CheckpointError
    from experiments.prediction.output import (
        check_output_path,
        predict_anndata,
        write_h5ad_atomic,
    )
    from experiments.prediction.runs import PredictionError
    from experiments.training.settings import SettingsError

    started = time.perf_counter()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[predict {time.perf_counter() - started:6.1f}s] {message}", flush=True)

    command = "waddington " + " ".join(getattr(args, "argv", None) or ["predict"])
    try:
        out = check_output_path(args.output, overwrite=args.overwrite)  # before anything slow
        if args.quiet:  # RLlib's and Ray's messages go beside the output, not to the terminal
            library_log.append(LibraryLog().start())
            library_log[0].attach(library_log_path(out))
        if args.n_cells < 1:
            raise PredictionError(f"--n-cells must be >= 1, got {args.n_cells}.")
        if args.cell_eval_dir is not None:
            _check_cell_eval_dir(args)
        adata = predict_anndata(
            args.run, perturbations=args.perturbation, method=args.method, start_group=args.start_group,
            n_cells=args.n_cells, seed=args.seed, with_observed=args.with_observed, top_genes=args.top_genes,
            trial=args.trial, command=command, log=log,
        )
        write_h5ad_atomic(adata, out, overwrite=args.overwrite)
        if args.cell_eval_dir is not None:
            from experiments.prediction.cell_eval_export import CELL_EVAL_COMMAND, write_cell_eval_inputs

            write_cell_eval_inputs(adata, args.cell_eval_dir)
            log(f"wrote cell-eval inputs; score them with: {CELL_EVAL_COMMAND.format(dir=args.cell_eval_dir)}")
    except (PredictionError, DataValidationError, CheckpointError, SettingsError) as exc:
        raise UsageError(str(exc)) from exc
    info = adata.uns["waddington"]
    kinds = adata.obs["kind"].value_counts()
    print(f"wrote {out}: {adata.n_obs} cells x {adata.n_vars} genes ({int(kinds.get('predicted', 0))} predicted by "
          f"{info['method']} for {len(info['perturbations'])} perturbation(s) from {len(info['runs'])} run(s), "
          f"{int(kinds.get('start', 0))} start cells)")
    for name, table in info["ranked_genes"].items():
        top = ", ".join(f"{g} {d:+.2f}" for g, d in zip(table["gene"][:5], table["delta"][:5]))
        print(f"  {name}: {top}")
    return 0
