"""One design, checked then run: every input is checked (:func:`plan_design`) before any set is scored (:func:`run_design`).

Bad input is one :class:`~experiments.design.errors.DesignError` each, in this order: the run,
the target (exactly one of cells or a signature; a file in another gene space, naming the overlap;
an empty target), the start cells, the library (a member the run cannot express), the set size (k
larger than the library; k > 1 on a run without sets), the designer and its budget (exhaustive
beyond the budget).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.design.errors import DesignError
from experiments.design.objective import DEFAULT_N_START, DEFAULT_N_TARGET, DesignObjective, ForwardModel
from experiments.design.search import DEFAULT_BEAM_WIDTH, DESIGNERS, DesignResult, check_size, n_sets, run_designer

#: Every designer: the searches, and ``rl`` (a trained policy, :mod:`experiments.design.rl_designer`).
ALL_DESIGNERS = (*DESIGNERS, "rl")
from experiments.design.targets import TargetCells

__all__ = ["ALL_DESIGNERS", "DesignPlan", "RLDesignSettings", "TargetDesign", "plan_design", "run_design"]


@dataclass
class RLDesignSettings:
    """How ``--designer rl`` gets its policy and how many rollouts it proposes with.

    Attributes
    ----------
    checkpoint
        A ``designer.pt`` to reuse (``None``: train one on the run, then write it to the output).
    training_targets
        Targets the policy is trained on (random sets applied to other start cells).
    iterations
        Training iterations: a third TRPO, the rest PPO from TRPO's weights.
    rollouts
        Episodes per target at query time (the first greedy).
    width
        Members the policy-led beam keeps and tries per step at query time.
    """

    checkpoint: str | None = None
    training_targets: int = 512
    iterations: int = 60
    rollouts: int = 32
    width: int = 32


@dataclass
class DesignPlan:
    """A checked design: the run, its start cells, the targets, the library and the search settings."""

    run: Any
    model: ForwardModel
    library: list[str]
    targets: list[TargetCells] = field(default_factory=list)  # cell targets (empty with a signature)
    signature: dict[str, int] | None = None
    max_size: int = 1
    effort: float = 0.0
    designer: str = "beam"
    budget: int | None = None
    beam_width: int = DEFAULT_BEAM_WIDTH
    n_target_cells: int = DEFAULT_N_TARGET
    seed: int = 0
    start_group: tuple[str, str] | None = None
    target_source: str = ""
    rl: RLDesignSettings = field(default_factory=RLDesignSettings)
    trained: Any = None  # the RL designer, once trained or loaded

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets] if self.targets else ["signature"]


@dataclass
class TargetDesign:
    """One target's design: its name, the designer's result and the target cells used (``None``: a signature)."""

    target: str
    result: DesignResult
    target_rows: np.ndarray | None  # rows of the target's cells the objective compared with (a subsample)


def plan_design(run: Any, *, target_cells: str | os.PathLike | None = None, target_obs: str | None = None,
                input_kind: str | None = None, target_genes: str | Mapping[str, Any] | None = None,
                start_group: Any = None, library: Any = "seen", max_size: int = 1, effort: float = 0.0,
                designer: str = "beam", budget: int | None = None, beam_width: int = DEFAULT_BEAM_WIDTH,
                n_cells: int = DEFAULT_N_START, n_target_cells: int = DEFAULT_N_TARGET, seed: int = 0,
                trial: str | None = None, rl: RLDesignSettings | None = None) -> DesignPlan:
    """Check every input of a design and build its forward model (no set is scored yet).

    ``run``: a run directory or a :class:`~experiments.prediction.runs.Run`. The other arguments are
    :func:`experiments.api.design`'s.
    """
    from experiments.design.library import resolve_library
    from experiments.design.targets import parse_signature, read_target_cells
    from experiments.prediction.predict import parse_group, select_start_rows
    from experiments.prediction.runs import Run, load_run

    if designer not in ALL_DESIGNERS:
        raise DesignError(f"Unknown designer {designer!r}; choose one of {list(ALL_DESIGNERS)}.")
    rl = rl or RLDesignSettings()
    for name, value, least in (("--rollouts", rl.rollouts, 0), ("--width", rl.width, 0),
                               ("--rl-targets", rl.training_targets, 1), ("--rl-iterations", rl.iterations, 2)):
        if value < least:
            raise DesignError(f"{name} must be >= {least}, got {value}.")
    if rl.rollouts + rl.width == 0:
        raise DesignError("--rollouts and --width are both 0: the RL designer would propose nothing.")
    if (target_cells is None) == (target_genes is None):
        raise DesignError("Give one target: --target-cells FILE.h5ad or --target-genes GENE:up,GENE:down.")
    if target_obs is not None and target_cells is None:
        raise DesignError("--target-obs selects cells of --target-cells; a signature target has none.")
    for name, value in (("--n-cells", n_cells), ("--n-target-cells", n_target_cells)):
        if value < 1:
            raise DesignError(f"{name} must be >= 1, got {value}.")
    if effort < 0:
        raise DesignError(f"--effort must be >= 0, got {effort}.")
    if budget is not None and budget < 1:
        raise DesignError(f"--budget must be >= 1, got {budget}.")
    run = run if isinstance(run, Run) else load_run(run, trial=trial, need_checkpoints=False)
    ds = run.dataset
    targets, signature = [], None
    if target_cells is not None:
        targets = read_target_cells(target_cells, ds, target_obs=target_obs, input_kind=input_kind)
    else:
        signature = parse_signature(target_genes, ds)
    group = parse_group(start_group)
    rows = select_start_rows(ds, group=group, n_cells=n_cells, seed=seed)
    members = resolve_library(ds, library)
    check_size(members, max_size)
    model = ForwardModel(ds, run.env_config, rows)
    if max_size > 1:
        model.label(members[:2])  # a run without sets cannot compose: one error now, not mid-search
    trained = None
    if designer == "rl":
        if signature is not None:
            raise DesignError("--designer rl observes the gap to the target's cells: give --target-cells.")
        if rl.checkpoint is not None:
            from experiments.design.rl_designer import TrainedDesigner

            trained = TrainedDesigner.load(rl.checkpoint)
            if trained.library != members or trained.max_size < max_size:
                raise DesignError(f"--designer-checkpoint {rl.checkpoint} was trained on another library or a smaller "
                                  f"--max-size ({len(trained.library)} members, k <= {trained.max_size}); this design "
                                  f"has {len(members)} members and k = {max_size}. Train it again (leave the checkpoint "
                                  "out).")
    if designer == "naive" and signature is not None:
        raise DesignError("--designer naive ranks members by the target cells' mean shift: give --target-cells.")
    if designer == "exhaustive" and budget is not None and n_sets(len(members), max_size) > budget:
        raise DesignError(f"--designer exhaustive: the sets of up to {max_size} of {len(members)} members are "
                          f"{n_sets(len(members), max_size)}, more than the budget of {budget} evaluations. Raise "
                          "--budget, lower --max-size, or use --designer beam, greedy or random.")
    return DesignPlan(run=run, model=model, library=members, targets=targets, signature=signature,
                      max_size=int(max_size), effort=float(effort), designer=designer, budget=budget,
                      beam_width=int(beam_width), n_target_cells=int(n_target_cells), seed=int(seed),
                      start_group=group, target_source=str(target_cells) if target_cells is not None
                      else f"signature {signature}", rl=rl, trained=trained)


def _rl_designer(plan: DesignPlan, log: Callable[[str], None] | None):
    """The plan's trained designer: loaded, or trained now on targets the run's forward model makes."""
    if plan.trained is None:
        from experiments.design.amortised import member_features, training_problems
        from experiments.design.rl_designer import train_designer

        if log:
            log(f"training the RL designer: {plan.rl.training_targets} targets, {plan.rl.iterations} iterations "
                "(TRPO then PPO)")
        problems = training_problems(plan.model, plan.library, max_size=plan.max_size, effort=plan.effort,
                                     n_targets=plan.rl.training_targets, group=plan.start_group, seed=plan.seed)
        trpo = max(1, plan.rl.iterations // 3)
        plan.trained = train_designer(problems, member_features(plan.model, plan.library), max_size=plan.max_size,
                                      trpo_iters=trpo, ppo_iters=max(1, plan.rl.iterations - trpo),
                                      seed=plan.seed, log=log)
    return plan.trained


def run_design(plan: DesignPlan, log: Callable[[str], None] | None = None) -> list[TargetDesign]:
    """Run the plan's designer on each target (each with its own budget); results in target order."""
    out = []
    jobs = plan.targets or [None]
    for index, target in enumerate(jobs):
        started = time.perf_counter()
        rows = None
        if target is not None:
            rows = np.arange(len(target.latent))
            if len(rows) > plan.n_target_cells:  # seeded subsample of the target, as the start cells are
                rng = np.random.default_rng([plan.seed, index])
                rows = np.sort(rng.choice(rows, size=plan.n_target_cells, replace=False))
            objective = DesignObjective(plan.model, target_latent=target.latent[rows], effort=plan.effort,
                                        budget=plan.budget)
        else:
            objective = DesignObjective(plan.model, signature=plan.signature, effort=plan.effort, budget=plan.budget)
        name = target.name if target is not None else "signature"
        prefix = f"target {name}"

        def progress(message: str, prefix=prefix) -> None:
            if log:
                log(f"{prefix}: {message}")

        if plan.designer == "rl":
            from experiments.design.rl_designer import propose

            result = propose(_rl_designer(plan, log), objective, plan.library, max_size=plan.max_size,
                             rollouts=plan.rl.rollouts, width=plan.rl.width, seed=plan.seed)
        else:
            result = run_designer(objective, plan.library, designer=plan.designer, max_size=plan.max_size,
                                  beam_width=plan.beam_width, seed=plan.seed, log=progress)
        if log and result.ranked:
            best = result.ranked[0]
            log(f"{prefix}: best {'+'.join(best.members)} objective {best.objective:.4g} (no perturbation "
                f"{result.baseline.objective:.4g}); {result.evaluations} evaluations, "
                f"{time.perf_counter() - started:.1f}s")
        out.append(TargetDesign(target=name, result=result, target_rows=rows))
    return out
