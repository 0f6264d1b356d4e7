"""Which gene features carry what is known of an unseen knockdown: ridge on each, scored on held-out perturbations.

Before a feature reaches the policies' observation it must help the simplest model that reads
it. For every panel gene this builds, from the training *control* cells only:

* ``loadings``: the features the project uses (the gene's knockdown direction in the latent
  basis, ``envs.perturbation_features.PerturbationFeaturizer``);
* ``co-expression slope``: the slope of every gene on this gene across control cells (what moves
  with it, in expression units), as the co-expression baselines of PertEval-scFM do;
* ``co-expression correlation``: the same as Pearson correlations;

and fits a ridge regression (features -> gene-space training delta, one sample per training
perturbation; non-panel perturbations get a one-hot id, as in the project's featurizer) on each.
Two rules that need no regression sit next to them: ``ridge + self-effect`` (the project's
baseline) and ``train-mean + self-effect x slope`` (the knockdown's own drop, the self-effect,
propagated to the genes that co-vary with it). Scored with the project's metrics on the
held-out perturbations of ``--split perturbations``. Prints a table (mean over seeds), writes JSON.

    python benchmarks/gene_features.py --data ../shared/data/papalexi2021_thp1_crispr.h5ad \\
        --perturbation-key perturbation_confident --control-value non-targeting --ignore unassigned \\
        --split perturbations --holdout CMTM6,JAK2,STAT1,STAT3,UBE2L6 --seeds 0,1,2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_arguments import prepare_from_arguments, split_list, unseen_split_arguments  # noqa: E402

METRICS = ("delta_pearson_top20", "delta_pearson_top100", "delta_pearson_all", "delta_mse_all")


def co_expression(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, correlations), genes x genes: column g says how each gene moves with gene g across training controls."""
    rows = np.flatnonzero(dataset.split.train & (dataset.labels == dataset.control_value))
    X = dataset.expression[rows].toarray().astype(np.float64)
    X -= X.mean(axis=0)
    cov = X.T @ X / len(X)
    var = np.diag(cov).copy()
    safe = np.where(var > 0, var, np.inf)
    slopes = cov / safe[None, :]
    correlations = cov / np.sqrt(np.outer(safe, safe))
    return slopes, correlations


def ridge_on(features_of, alpha: float = 1.0):
    """A predictor: ridge from ``features_of(name)`` to the training gene-space deltas."""
    from sklearn.linear_model import Ridge

    from experiments.evaluation.baselines import shifted_by

    def predict(context, perturbation, rng):
        key = ("gene-features ridge", id(features_of), alpha)
        if key not in context.cache:
            names = sorted(context.train_delta)
            context.cache[key] = Ridge(alpha=alpha).fit(np.stack([features_of(n) for n in names]),
                                                        np.stack([context.train_delta[n] for n in names]))
        return shifted_by(context, perturbation, context.cache[key].predict(features_of(perturbation)[None, :])[0])

    return predict


def methods_for(dataset) -> dict:
    """Report name -> predictor for every feature set and rule compared."""
    from experiments.evaluation.baselines import BASELINES, knockdown_self_effect, shifted_by

    slopes, correlations = co_expression(dataset)
    index = dataset.featurizer.gene_index
    fallback = [n for n in dataset.training_perturbations if n not in index]
    n_genes = slopes.shape[0]

    def gene_table(table):
        def features_of(name):
            feature = np.zeros(n_genes + 1 + len(fallback))
            gene = index.get(str(name))
            if gene is not None:
                feature[:n_genes], feature[n_genes] = table[:, gene], 1.0
            elif name in fallback:
                feature[n_genes + 1 + fallback.index(name)] = 1.0
            return feature
        return features_of

    def propagated(context, perturbation, rng):
        delta = np.mean(np.stack(list(context.train_delta.values())), axis=0)
        gene = index.get(str(perturbation))
        if gene is not None and perturbation not in context.train_delta:
            delta = delta + knockdown_self_effect(context) * slopes[:, gene]
        return shifted_by(context, perturbation, delta)

    return {
        "train-mean": BASELINES["train-mean"],
        "ridge (loadings)": BASELINES["ridge"],
        "ridge (co-expression slope)": ridge_on(gene_table(slopes)),
        "ridge (co-expression correlation)": ridge_on(gene_table(correlations)),
        "ridge + self-effect": BASELINES["ridge + self-effect"],
        "train-mean + self-effect x slope": propagated,
    }


def main() -> None:
    args = unseen_split_arguments(__doc__, "benchmarks/results/gene_features.json")

    from experiments.evaluation.evaluate import evaluate_dataset

    rows = []
    for seed in (int(v) for v in split_list(args.seeds)):
        dataset = prepare_from_arguments(args, seed=seed)
        scored = evaluate_dataset(dataset, methods_for(dataset), seed=seed, references=False)
        rows += [r for r in scored.rows if r["metric"] in METRICS]
        print(f"seed {seed}: scored {len(scored.info['perturbations'])} held-out perturbations", flush=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print(f"{'method':<36}" + "".join(f"{m:>22}" for m in METRICS))
    table = {}
    for method in methods:
        means = {m: float(np.mean([r["value"] for r in rows if r["method"] == method and r["metric"] == m]))
                 for m in METRICS}
        table[method] = means
        print(f"{method:<36}" + "".join(f"{means[m]:>22.3f}" for m in METRICS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "mean_over_seeds": table, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
