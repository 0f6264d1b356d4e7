"""Synthetic perturbation *sets* with a known truth: interacting and non-interacting pairs.

The default generator (:func:`envs.synthetic.make_synthetic_perturbation_data`) is left as it is
(its data stay bit-identical); this one draws from the same kind of world. Truth lives in a 2-D
state space with the default's three control wells; genes read the state through
``log rate = b + W s`` (plus a knockdown of each member's own gene), counts are Poisson.

A single perturbation moves each control well's cells by a displacement of that well (a
*field*: constant within a well, possibly different between wells); cells stay spread as the
well was. Kinds of single:

* ``uniform``: every well moves by the same vector (a shift of the whole landscape, half as long);
* ``targeted``: one well moves (by a small vector, or onto another well's state); the others stay.

The truth of a set is how a landscape composes: each member moves a cell by its displacement at
the state the cell is in when it acts, once; passes repeat until no member moves the cell (so the
order members are written in does not matter). Pairs:

* ``uniform`` (non-interacting in the state): two uniform shifts; the state's truth is the sum,
  but expression reads the state non-linearly (normalization, log1p), so the pair's expression is
  not exactly the sum of the singles' (about 4% of its squared delta at seed 0 with full-length
  moves, hence the half length).
* ``disjoint`` (non-interacting): small moves of two different wells; the truth is the sum.
* ``synergy`` (interacting): A carries well 0 onto well 1, B moves well 1; together well 0's
  cells end where B takes well 1 (more than the sum).
* ``buffering`` (interacting): A and A' both carry well 0 onto well 1; together well 0's cells
  move once (less than the sum).

Additive and sequential composition (:mod:`envs.set_hints`) must agree on the non-interacting
pairs and differ on the interacting ones. ``adata.uns["truth"]`` stores every condition's wells,
the pairs' kinds and the noise-free mean expression of every population.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from envs.synthetic import SYNTHETIC_CONTROL_VALUE, SYNTHETIC_PERTURBATION_KEY, _log_normalized, _sample_mixture

__all__ = ["make_synthetic_set_data", "SET_PAIR_KINDS", "INTERACTING_KINDS"]

SET_PAIR_KINDS = ("uniform", "disjoint", "synergy", "buffering")
INTERACTING_KINDS = ("synergy", "buffering")

_CONTROL_MEANS = np.array([[-1.5, -0.5], [1.5, -0.5], [0.0, 1.6]])
_CONTROL_WEIGHTS = np.array([0.40, 0.35, 0.25])
_CONTROL_STDS = np.array([0.35, 0.35, 0.3])


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _singles(rng: np.random.Generator, shift: float) -> dict[str, np.ndarray]:
    """Role -> per-well displacement (wells x 2) of each single the pairs need."""
    onto = _CONTROL_MEANS[1] - _CONTROL_MEANS[0]  # carries well 0 onto well 1
    fields = {}
    for role in ("U1", "U2"):  # half length: expression reads the state non-linearly, less so for small moves
        fields[role] = np.repeat((0.5 * shift * _unit(rng))[None, :], 3, axis=0)
    for role, well in (("D0", 0), ("D2", 2)):  # small moves that stay in their own well's state
        field = np.zeros((3, 2))
        field[well] = 0.6 * shift * _unit(rng)
        fields[role] = field
    fields["A"] = np.zeros((3, 2))
    fields["A"][0] = onto
    fields["B"] = np.zeros((3, 2))
    fields["B"][1] = shift * _unit(rng)
    fields["A2"] = fields["A"].copy()
    return fields


_PAIRS = {"uniform": ("U1", "U2"), "disjoint": ("D0", "D2"), "synergy": ("A", "B"), "buffering": ("A", "A2")}


def _cascade(fields: list[np.ndarray], start: np.ndarray) -> np.ndarray:
    """End state of a cell of each control well under all members (each acts once, where the cell is)."""
    ends = []
    for k in range(len(start)):
        state, acted = start[k].copy(), [False] * len(fields)
        moved = True
        while moved:
            moved = False
            for i, field in enumerate(fields):
                if acted[i]:
                    continue
                well = int(np.argmin(np.linalg.norm(_CONTROL_MEANS - state, axis=1)))  # the state it is in
                if np.any(field[well] != 0):
                    state, acted[i], moved = state + field[well], True, True
        ends.append(state)
    return np.array(ends)


def make_synthetic_set_data(
    *,
    n_control_cells: int = 600,
    n_cells_per_condition: int = 200,
    n_genes: int = 120,
    shift: float = 1.0,
    knockdown_log_fold: float = np.log(4.0),
    mean_library_size: float = 3000.0,
    separator: str = "+",
    seed: int = 0,
) -> ad.AnnData:
    """Raw-count AnnData with singles and pairs of known truth (module docstring).

    Parameters
    ----------
    n_control_cells, n_cells_per_condition
        Population sizes (every single and every pair).
    n_genes
        Genes in the panel; the singles knock down regulator genes (labels are gene names).
    shift
        Length (state units; wells ~3 apart, std ~0.35) of the uniform and targeted moves.
    knockdown_log_fold
        Drop of each member's own gene log rate.
    mean_library_size
        Mean UMIs per cell.
    separator
        Joins the members of a pair in its label.
    seed
        Everything is a deterministic function of the seed.

    Returns
    -------
    AnnData with raw counts, ``obs["perturbation"]`` (control, singles, pairs ``G1+G2``) and
    ``uns["truth"]``: ``pairs`` (label -> kind), ``conditions`` (label -> wells, members and
    ``expression_mean``), the loadings.
    """
    rng = np.random.default_rng(seed)
    gene_names = np.array([f"G{i:03d}" for i in range(n_genes)])
    loadings = rng.normal(scale=0.6, size=(n_genes, 2))
    baseline = rng.normal(size=n_genes)
    regulators = np.argsort(-np.linalg.norm(loadings, axis=1), kind="stable")
    fields = _singles(rng, shift)
    roles = list(fields)
    gene_of = {role: str(gene_names[regulators[i]]) for i, role in enumerate(roles)}

    conditions: dict[str, tuple[np.ndarray, list[str]]] = {SYNTHETIC_CONTROL_VALUE: (_CONTROL_MEANS, [])}
    for role in roles:
        conditions[gene_of[role]] = (_CONTROL_MEANS + fields[role], [role])
    kinds = {}
    for kind, (a, b) in _PAIRS.items():
        label = separator.join((gene_of[a], gene_of[b]))
        conditions[label] = (_cascade([fields[a], fields[b]], _CONTROL_MEANS), [a, b])
        kinds[label] = kind

    labels, blocks, truth = [], [], {}
    gene_index = {str(g): i for i, g in enumerate(gene_names)}
    for name, (means, members) in conditions.items():
        n = n_control_cells if not members else n_cells_per_condition
        own = [gene_index[gene_of[m]] for m in members]

        def rates(states: np.ndarray) -> np.ndarray:
            log_rate = baseline + states @ loadings.T
            log_rate[:, own] -= knockdown_log_fold
            return log_rate

        state = _sample_mixture(rng, n, _CONTROL_WEIGHTS, means, _CONTROL_STDS)
        many = _sample_mixture(np.random.default_rng([seed, 1]), 4000, _CONTROL_WEIGHTS, means, _CONTROL_STDS)
        truth[name] = {"means": means, "members": [gene_of[m] for m in members],
                       "expression_mean": _log_normalized(rates(many)).mean(axis=0)}
        log_rate = rates(state)
        proportions = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
        proportions /= proportions.sum(axis=1, keepdims=True)
        library = rng.lognormal(mean=np.log(mean_library_size), sigma=0.3, size=(n, 1))
        blocks.append(sp.csr_matrix(rng.poisson(proportions * library).astype(np.float32)))
        labels.extend([name] * n)

    obs = pd.DataFrame({SYNTHETIC_PERTURBATION_KEY: pd.Categorical(labels)},
                       index=[f"cell{i:05d}" for i in range(len(labels))])
    adata = ad.AnnData(X=sp.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=gene_names))
    adata.uns["truth"] = {"loadings": loadings, "baseline": baseline, "seed": int(seed), "pairs": kinds,
                          "conditions": truth, "knockdown_log_fold": float(knockdown_log_fold)}
    return adata
