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
"""

from __future__ import annotations

import numpy as np

from envs.pairing import stratified_ot_pairs
from experiments.evaluation.baselines import EvalContext, Prediction, latent_change_to_genes, rollout

__all__ = ["paired_training_targets", "latent_ceiling", "oracle_controller", "REFERENCES"]


def paired_training_targets(context: EvalContext, perturbation: str) -> np.ndarray:
    """Latent target of each start cell: its OT partner among the perturbation's training cells.

    Raises ``KeyError`` when the perturbation has no training cells (unseen).
    """
    key = ("targets", perturbation)
    if key not in context.cache:
        dataset = context.dataset
        targets = dataset.cell_indices(perturbation, "train")
        if len(targets) == 0:
            raise KeyError(f"{perturbation!r} has no training cells: no paired targets.")
        starts = context.start_rows[perturbation]
        strata = dataset.covariates
        if strata is not None and not np.isin(strata[starts], strata[targets]).any():
            # e.g. a held-out cell type: no training cell of its own kind to land on
            raise KeyError(f"{perturbation!r} has no training cells in the start cells' covariate combination.")
        pairs = stratified_ot_pairs(dataset.latent, starts, targets, dataset.covariates,
                                    max_cells=max(len(starts), len(targets)), rng=np.random.default_rng(0))
        partner = {}
        for source, target, weight in sorted(pairs.tolist(), key=lambda row: row[2]):
            partner[int(source)] = int(target)  # the heaviest partner is written last
        # a start cell whose covariate stratum holds no target keeps its own state (it cannot be paired)
        rows = np.array([partner.get(int(s), int(s)) for s in starts])
        context.cache[key] = dataset.latent[rows].astype(np.float64)
    return context.cache[key]


def latent_ceiling(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells moved exactly onto their paired training targets, decoded like a policy's end state."""
    z0 = context.start_latent(perturbation)
    z_end = paired_training_targets(context, perturbation)
    X0 = context.start_expression(perturbation)
    steps = np.linspace(0.0, 1.0, context.horizon + 1)[:, None]
    mean_change = latent_change_to_genes(context.dataset, (z_end - z0).mean(axis=0))
    trajectory = X0.mean(axis=0)[None, :] + steps * mean_change[None, :]
    return Prediction(cells=X0 + latent_change_to_genes(context.dataset, z_end - z0), trajectory=trajectory,
                      latent_start=z0, latent_end=z_end)


def oracle_controller(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """The landscape-aware scripted controller toward each start cell's paired target, through the env dynamics."""
    dynamics = context.dynamics
    targets = paired_training_targets(context, perturbation)

    def act(obs: np.ndarray) -> np.ndarray:
        return dynamics.steer(obs[:, : dynamics.n_latent].astype(np.float64), targets)

    return rollout(context, perturbation, rng, act, guided=False)


#: Reference rows by report name.
REFERENCES = {"latent-ceiling": latent_ceiling, "oracle-controller": oracle_controller}
