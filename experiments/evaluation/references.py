"""Reference rows that locate a method's loss: the best any policy can do in the latent space, and a scripted oracle.

* ``latent-ceiling``: each start cell moved exactly onto its OT-paired observed *training* cell
  of the perturbation (pairs within covariates, as the env forms them), decoded like a policy's
  end state. No policy that ends in this latent space and is decoded this way can do better:
  the gap perturbation-mean -> latent-ceiling is the *representation gap*.
* ``oracle-controller``: the scripted landscape-aware controller (``envs.controllers``' rule:
  the action that cancels the drift and steps toward the paired target, clipped to the action
  box) rolled through the same env dynamics, noise included. The gap latent-ceiling -> oracle is
  what the dynamics cost; oracle -> TRPO -> PPO is the *control gap* of learning.

Both need training cells of the perturbation in the start cells' covariate combination, so
neither exists for an unseen perturbation or a held-out group (the predictor raises ``KeyError``
and the row is omitted there: landing on other cell types' cells would be no ceiling).

* ``heldout-ceiling``: each start cell moved exactly onto its OT partner among the *observed
  held-out cells* the methods are judged against, decoded the same way. It reads the answer, so
  it is a bound, never a method: what this latent space and decoding can express of the held-out
  response at all. It exists in every split (unseen perturbations and held-out groups included),
  so the gap perturbation-mean (or train-mean) -> heldout-ceiling says whether a target is out
  of the representation's reach before any policy is trained. It is not the maximum of every
  metric: a prediction may edge past it on a delta Pearson, which does not ask for the right cells.
"""

from __future__ import annotations

import numpy as np

from envs.pairing import stratified_ot_pairs
from experiments.evaluation.baselines import EvalContext, Prediction, latent_change_to_genes, rollout, shifted_cells

__all__ = ["paired_training_targets", "paired_targets", "latent_ceiling", "heldout_ceiling", "oracle_controller",
           "REFERENCES"]


def paired_training_targets(context: EvalContext, perturbation: str) -> np.ndarray:
    """Latent target of each start cell: its OT partner among the perturbation's training cells.

    Raises ``KeyError`` when the perturbation has no training cells (unseen), or none in the
    start cells' covariate combination (e.g. a held-out cell type).
    """
    return paired_targets(context, perturbation, "train")


def paired_targets(context: EvalContext, perturbation: str, part: str) -> np.ndarray:
    """Latent target of each start cell: its OT partner (within covariates) among the perturbation's ``part`` cells.

    ``part`` is ``"train"`` (what a policy may learn from) or ``"test"`` (the held-out cells the
    methods are judged against). Raises ``KeyError`` when there are no such cells, or none in
    the start cells' covariate combination.
    """
    key = ("targets", part, perturbation)
    if key not in context.cache:
        dataset = context.dataset
        targets = dataset.cell_indices(perturbation, part)
        if len(targets) == 0:
            raise KeyError(f"{perturbation!r} has no {part} cells: no paired targets.")
        starts = context.start_rows[perturbation]
        strata = dataset.covariates
        if strata is not None and not np.isin(strata[starts], strata[targets]).any():
            # e.g. a held-out cell type: no training cell of its own kind to land on
            raise KeyError(f"{perturbation!r} has no {part} cells in the start cells' covariate combination.")
        pairs = stratified_ot_pairs(dataset.latent, starts, targets, dataset.covariates,
                                    max_cells=max(len(starts), len(targets)), rng=np.random.default_rng(0))
        partner = {}
        for source, target, weight in sorted(pairs.tolist(), key=lambda row: row[2]):
            partner[int(source)] = int(target)  # the heaviest partner is written last
        # a start cell whose covariate stratum holds no target keeps its own state (it cannot be paired)
        rows = np.array([partner.get(int(s), int(s)) for s in starts])
        context.cache[key] = dataset.latent[rows].astype(np.float64)
    return context.cache[key]


def _moved_onto(context: EvalContext, perturbation: str, z_end: np.ndarray) -> Prediction:
    """Start cells moved exactly onto ``z_end``, decoded like a policy's end state, along a straight line."""
    z0 = context.start_latent(perturbation)
    X0 = context.start_expression(perturbation)
    steps = np.linspace(0.0, 1.0, context.horizon + 1)[:, None]
    mean_change = latent_change_to_genes(context.dataset, (z_end - z0).mean(axis=0))
    trajectory = X0.mean(axis=0)[None, :] + steps * mean_change[None, :]
    return Prediction(cells=shifted_cells(X0, latent_change_to_genes(context.dataset, z_end - z0)), trajectory=trajectory,
                      latent_start=z0, latent_end=z_end)


def latent_ceiling(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells moved exactly onto their paired training targets, decoded like a policy's end state."""
    return _moved_onto(context, perturbation, paired_training_targets(context, perturbation))


def heldout_ceiling(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells moved exactly onto their OT partners among the observed held-out cells (it reads the answer)."""
    return _moved_onto(context, perturbation, paired_targets(context, perturbation, "test"))


def oracle_controller(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """The landscape-aware scripted controller toward each start cell's paired target, through the env dynamics."""
    dynamics = context.dynamics
    targets = paired_training_targets(context, perturbation)

    def act(obs: np.ndarray) -> np.ndarray:
        return dynamics.steer(obs[:, : dynamics.n_latent].astype(np.float64), targets)

    return rollout(context, perturbation, rng, act, guided=False)


#: Reference rows by report name.
REFERENCES = {"latent-ceiling": latent_ceiling, "oracle-controller": oracle_controller,
              "heldout-ceiling": heldout_ceiling}
