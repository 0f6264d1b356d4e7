"""Synthetic single-cell perturbation data with a known Waddington landscape (the offline default).

Truth lives in a 2-D state space. The control landscape is a Gaussian-mixture potential
``U(s) = -log sum_k w_k N(s; c_k, sigma_k^2 I)`` with a few wells. Each perturbation knocks down one
regulator gene ``g``: every well moves by ``-shift * W[g] / |W[g]|`` (the direction that lowers
``g``), the well lying furthest along that direction deepens (more weight, narrower), and the
gene's own expression drops by ``knockdown_log_fold``. Cells are equilibrium states of the
overdamped Langevin dynamics on U, i.e. exact draws from ``exp(-U)``. Genes read the state through
``log rate = b + W s`` and UMI counts are Poisson with log-normal library sizes.

Everything needed to judge a model is stored in ``adata.uns["truth"]``: the wells of every
condition, the loadings, and the noise-free mean log-normalized expression of each population.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["make_synthetic_perturbation_data", "SYNTHETIC_PERTURBATION_KEY", "SYNTHETIC_CONTROL_VALUE"]

SYNTHETIC_PERTURBATION_KEY = "perturbation"
SYNTHETIC_CONTROL_VALUE = "control"


def _sample_mixture(rng: np.random.Generator, n: int, weights, means, stds) -> np.ndarray:
    component = rng.choice(len(weights), size=n, p=weights)
    return means[component] + rng.normal(size=(n, means.shape[1])) * stds[component, None]


def _log_normalized(log_rate: np.ndarray) -> np.ndarray:
    """Noise-free normalize_total(1e4) + log1p of the expected expression."""
    proportions = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
    proportions /= proportions.sum(axis=1, keepdims=True)
    return np.log1p(1e4 * proportions)


def make_synthetic_perturbation_data(
    *,
    n_perturbations: int = 8,
    n_control_cells: int = 800,
    n_cells_per_perturbation: int = 300,
    n_genes: int = 200,
    shift: float = 1.2,
    knockdown_log_fold: float = np.log(4.0),
    mean_library_size: float = 3000.0,
    seed: int = 0,
    far_group: bool = False,
    far_offset: float = 4.0,
) -> ad.AnnData:
    """Generate raw-count AnnData from cells on a known multi-well landscape.

    Parameters
    ----------
    n_perturbations
        Number of knocked-down regulator genes (perturbation labels are the gene names).
    n_control_cells, n_cells_per_perturbation
        Population sizes.
    n_genes
        Genes in the panel.
    shift
        How far (in state units; wells have std ~0.35 and sit ~3 apart) a knockdown moves the wells.
    knockdown_log_fold
        Direct drop of the knocked-down gene's own log rate.
    mean_library_size
        Mean UMIs per cell.
    seed
        Everything is a deterministic function of the seed.
    far_group
        Also draw a second group of cells (``obs["group"] == "far"``; the others are ``"near"``) from
        the same landscape and responses, half the population sizes, whose genes also read a group
        programme of their own at ``far_offset``: a cell line unlike every other, for testing a
        held-out group far from all training cells (``docs/out_of_range.md``). Drawn from a separate
        random stream after everything else, so the default data stay bit-identical.
    far_offset
        Strength of the far group's own programme (gene log rates move by ``far_offset * v``,
        ``v ~ N(0, 0.6^2)`` per gene).

    Returns
    -------
    AnnData with raw counts in ``X``, ``obs["perturbation"]`` (``"control"`` or a gene name),
    ``obs["state_0"], obs["state_1"]`` (true 2-D state) and the ground truth in ``uns["truth"]``.
    """
    if n_perturbations < 1 or n_perturbations > n_genes:
        raise ValueError(f"n_perturbations must be in [1, n_genes={n_genes}], got {n_perturbations}.")
    rng = np.random.default_rng(seed)
    gene_names = np.array([f"G{i:03d}" for i in range(n_genes)])
    loadings = rng.normal(scale=0.6, size=(n_genes, 2))
    baseline = rng.normal(loc=0.0, scale=1.0, size=n_genes)

    control_means = np.array([[-1.5, -0.5], [1.5, -0.5], [0.0, 1.6]])
    control_weights = np.array([0.45, 0.35, 0.20])
    control_stds = np.array([0.35, 0.35, 0.3])

    # Regulators: genes that read the state strongly, so their knockdown direction is informative.
    strength = np.linalg.norm(loadings, axis=1)
    regulators = np.argsort(-strength, kind="stable")[:n_perturbations]

    conditions = {SYNTHETIC_CONTROL_VALUE: (control_weights, control_means, control_stds, None)}
    for gene in regulators:
        direction = -loadings[gene] / np.linalg.norm(loadings[gene])
        means = control_means + shift * direction
        deepest = int(np.argmax(control_means @ direction))
        weights = control_weights.copy()
        weights[deepest] *= 2.5
        weights /= weights.sum()
        stds = control_stds.copy()
        stds[deepest] *= 0.8
        conditions[str(gene_names[gene])] = (weights, means, stds, int(gene))

    states, labels, count_blocks = [], [], []
    truth_conditions: dict[str, dict] = {}
    for name, (weights, means, stds, gene) in conditions.items():
        n = n_control_cells if gene is None else n_cells_per_perturbation
        state = _sample_mixture(rng, n, weights, means, stds)
        log_rate = baseline + state @ loadings.T
        if gene is not None:
            log_rate[:, gene] -= knockdown_log_fold
        many = _sample_mixture(np.random.default_rng(seed + 1), 4000, weights, means, stds)
        many_rate = baseline + many @ loadings.T
        if gene is not None:
            many_rate[:, gene] -= knockdown_log_fold
        truth_conditions[name] = {
            "weights": weights,
            "means": means,
            "stds": stds,
            "gene_index": -1 if gene is None else gene,
            "state_mean": weights @ means,
            "expression_mean": _log_normalized(many_rate).mean(axis=0),
        }
        states.append(state)
        labels.extend([name] * n)
        # Counts per population keep peak memory at one block, not the whole dense matrix.
        proportions = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
        proportions /= proportions.sum(axis=1, keepdims=True)
        library = rng.lognormal(mean=np.log(mean_library_size), sigma=0.3, size=(n, 1))
        count_blocks.append(sp.csr_matrix(rng.poisson(proportions * library).astype(np.float32)))
        del proportions, log_rate

    groups = ["near"] * len(labels)
    if far_group:
        far_states, far_labels, far_blocks = _far_group(conditions, baseline, loadings, knockdown_log_fold,
                                                        n_control_cells, n_cells_per_perturbation,
                                                        mean_library_size, far_offset, seed)
        states.append(far_states)
        labels.extend(far_labels)
        count_blocks.extend(far_blocks)
        groups += ["far"] * len(far_labels)

    state = np.vstack(states)
    counts = sp.vstack(count_blocks).tocsr()

    obs = pd.DataFrame(
        {
            SYNTHETIC_PERTURBATION_KEY: pd.Categorical(labels),
            "state_0": state[:, 0],
            "state_1": state[:, 1],
        },
        index=[f"cell{i:05d}" for i in range(len(state))],
    )
    if far_group:
        obs["group"] = pd.Categorical(groups)
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=gene_names))
    adata.uns["truth"] = {
        "loadings": loadings,
        "baseline": baseline,
        "knockdown_log_fold": float(knockdown_log_fold),
        "shift": float(shift),
        "seed": int(seed),
        "conditions": truth_conditions,
    }
    if far_group:
        adata.uns["truth"]["far_offset"] = float(far_offset)
    return adata


def _far_group(conditions, baseline, loadings, knockdown_log_fold, n_control_cells, n_cells_per_perturbation,
               mean_library_size, far_offset, seed):
    """States, labels and count blocks of the far group: the same conditions, plus a programme of its own."""
    rng = np.random.default_rng([seed, 23])  # its own stream: the default data do not move
    programme = far_offset * rng.normal(scale=0.6, size=len(baseline))
    states, labels, blocks = [], [], []
    for name, (weights, means, stds, gene) in conditions.items():
        n = max((n_control_cells if gene is None else n_cells_per_perturbation) // 2, 1)
        state = _sample_mixture(rng, n, weights, means, stds)
        log_rate = baseline + programme + state @ loadings.T
        if gene is not None:
            log_rate[:, gene] -= knockdown_log_fold
        proportions = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
        proportions /= proportions.sum(axis=1, keepdims=True)
        library = rng.lognormal(mean=np.log(mean_library_size), sigma=0.3, size=(n, 1))
        blocks.append(sp.csr_matrix(rng.poisson(proportions * library).astype(np.float32)))
        states.append(state)
        labels.extend([name] * n)
    return np.vstack(states), labels, blocks
