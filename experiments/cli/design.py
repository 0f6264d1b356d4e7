"""``waddington design``: which set of library perturbations moves a run's start cells closest to a target?

``waddington design --run RUN --target-cells T.h5ad [--target-obs KEY=VALUE | --target-obs KEY] --max-size 2
-o DIR`` scores sets of up to ``--max-size`` library members with the run as forward model (start cells
moved by the sets' composed per-cell hints, :mod:`experiments.design.objective`) against the target's
cells projected into the run's latent space (or a ``--target-genes`` signature), and writes
``design.tsv``, ``design.h5ad``, ``design.png`` and ``manifest.json`` (:mod:`experiments.design.output`).
Every input is checked before any set is scored; bad input is one ``waddington design: error: ...``
line and exit status 2. An existing output directory is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments.cli.errors import UsageError

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "design"
HELP = ("the inverse question: rank perturbation sets (up to --max-size members of a library) by how close the run "
        "predicts they move its start cells to a target population or gene signature; writes design.tsv/h5ad")

#: Kept here so ``--help`` needs no heavy import (:data:`experiments.design.search.DESIGNERS`).
DESIGNER_CHOICES = ("beam", "greedy", "exhaustive", "random", "naive", "rl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington design``."""
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="output dir of `waddington train` / `sweep` (best trial) / one seed of `evaluate`; its "
                             "dataset is the forward model (no policy is needed)")
    parser.add_argument("--trial", help="with a sweep dir: substring of the trial dir (default: best trial)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-cells", metavar="FILE.h5ad",
                        help="target cells, on the run's genes; projected into the run's latent space as its data were")
    target.add_argument("--target-genes", metavar="G:up,G:down",
                        help="a signature target: genes of the run's gene space to push up or down")
    parser.add_argument("--target-obs", metavar="KEY[=VALUE]",
                        help="KEY=VALUE: the target is those cells of --target-cells; KEY: one design per value "
                             "(default: all cells, one target)")
    parser.add_argument("--input-kind", choices=["counts", "log-normalized"],
                        help="what the target file's X holds (default: as the run's data)")
    parser.add_argument("--start-group", metavar="KEY=VALUE",
                        help="start from the control cells of one group (default: the run's training control cells)")
    parser.add_argument("--library", default="seen", metavar="seen|panel|all|FILE",
                        help="members to build sets from: the run's training perturbations (seen, default), a "
                             "knockdown of each panel gene (panel), both (all), or a file of labels, one a line")
    parser.add_argument("--max-size", type=int, default=1, metavar="K", help="most members per set (default 1)")
    parser.add_argument("--effort", type=float, default=0.0, metavar="E",
                        help="cost per member, added to the distance (default 0)")
    parser.add_argument("--designer", choices=DESIGNER_CHOICES, default="beam",
                        help="search: beam (default), greedy, exhaustive, random; naive ranks singles by mean shift; "
                             "rl: a policy trained (TRPO then PPO) on targets the run itself makes, then a few "
                             "rollouts and a policy-led beam per target")
    rl = parser.add_argument_group("--designer rl")
    rl.add_argument("--designer-checkpoint", metavar="FILE",
                    help="designer.pt of an earlier `design --designer rl` on this run and library (default: train "
                         "one, written to the output dir)")
    rl.add_argument("--rl-targets", type=int, default=512, metavar="N",
                    help="training targets: random sets of up to K members moving other start cells (default 512)")
    rl.add_argument("--rl-iterations", type=int, default=60, metavar="N",
                    help="training iterations, a third TRPO and the rest PPO (default 60)")
    rl.add_argument("--rollouts", type=int, default=32, metavar="N", help="policy episodes per target (default 32)")
    rl.add_argument("--width", type=int, default=32, metavar="W",
                    help="members the policy-led beam keeps and tries per step (default 32)")
    parser.add_argument("--budget", type=int, metavar="N",
                        help="most forward-model evaluations per target (default: none for exhaustive/greedy/beam; "
                             "random draws library size x K sets)")
    parser.add_argument("--beam-width", type=int, default=8, metavar="W", help="sets kept per size by beam (default 8)")
    parser.add_argument("--n-cells", type=int, default=256, metavar="N",
                        help="start cells the forward model moves, a seeded subsample (default 256)")
    parser.add_argument("--n-target-cells", type=int, default=256, metavar="N",
                        help="target cells compared with, a seeded subsample (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsamples and the random designer")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing design directory")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Run ``waddington design``; 0 when the directory is written."""
    from envs.validation import DataValidationError
    from experiments.cli.run_dirs import check_output_free
    from experiments.design.output import write_design
    from experiments.design.plan import RLDesignSettings, plan_design
    from experiments.prediction.runs import PredictionError

    started = time.perf_counter()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[design {time.perf_counter() - started:6.1f}s] {message}", flush=True)

    out = Path(args.output).expanduser()
    check_output_free(out, overwrite=args.overwrite, resume_hint=None)  # before anything slow
    try:
        log(f"checking run {args.run} and the target")
        plan = plan_design(args.run, target_cells=args.target_cells, target_obs=args.target_obs,
                           input_kind=args.input_kind, target_genes=args.target_genes, start_group=args.start_group,
                           library=args.library, max_size=args.max_size, effort=args.effort, designer=args.designer,
                           budget=args.budget, beam_width=args.beam_width, n_cells=args.n_cells,
                           n_target_cells=args.n_target_cells, seed=args.seed, trial=args.trial,
                           rl=RLDesignSettings(checkpoint=args.designer_checkpoint, training_targets=args.rl_targets,
                                               iterations=args.rl_iterations, rollouts=args.rollouts,
                                               width=args.width))
        log(f"{args.designer} over sets of up to {plan.max_size} of {len(plan.library)} members, "
            f"{len(plan.model.start_rows)} start cells, {len(plan.target_names)} target(s)")
        table = write_design(plan, out, overwrite=args.overwrite, argv=getattr(args, "argv", None), log=log)
    except (PredictionError, DataValidationError) as exc:
        raise UsageError(str(exc)) from exc
    extra = ", designer.pt" if plan.trained is not None and args.designer_checkpoint is None else ""
    print(f"wrote {out}: design.tsv ({len(table)} sets), design.h5ad, design.png, manifest.json{extra}")
    for name, rows in table.groupby("target", sort=False):
        best = rows.iloc[0]
        print(f"  {name}: {best['set']} objective {best['objective']:.4g} ({int(best['evaluations'])} evaluations)")
    return 0
