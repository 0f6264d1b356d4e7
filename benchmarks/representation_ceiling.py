"""How much of a held-out response the latent space can express, by number of cell PCs.

For each ``--n-latent`` the data are prepared as ``waddington evaluate`` prepares them (training
cells only shape the space) and scored without any training: the ``heldout-ceiling`` row moves
every start cell exactly onto its OT partner among the observed held-out cells and decodes it like
a policy's end state. It reads the answer: it is the held-out response itself as this space
and decoding express it. A prediction may score a little above it on a delta Pearson (which does
not ask for the right cells), but when it lies well below a target, the target is out of the
representation's reach whatever the training. Next to it: ``latent-ceiling`` (the same onto
training cells, where they exist) and the gene-space baselines.

Whether the limit is the *linear* decoding (as scGen's neural decoder would suggest), the
``heldout-ceiling, MLP a,b`` rows decode the same end states through a neural network instead:
scikit-learn's ``MLPRegressor`` (hidden layers ``a,b``, ``--mlp-hidden``) fitted on the training
cells (latent -> processed expression), a cell's prediction being its observed expression plus
``mlp(z_end) - mlp(z_start)``. Prints a table, writes JSON.

    python benchmarks/representation_ceiling.py --data ../shared/data/kang2018_pbmc_ifnb.h5ad \\
        --perturbation-key group_id --control-value ctrl --split group --group-key cluster_id \\
        --holdout "CD4 T cells" --n-latent 8,16,32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from sklearn.neural_network import MLPRegressor

    from envs.dataset import PreparedDataset
    from experiments.evaluation.baselines import Predictor

from benchmarks.data_arguments import add_data_arguments, prepare_from_arguments  # noqa: E402

METRICS = ("delta_pearson_top20", "delta_pearson_top100", "delta_pearson_all")
METHODS = ("train-mean", "perturbation-mean", "ridge + self-effect", "latent-ceiling", "heldout-ceiling")
MAX_DECODER_CELLS = 20_000  # a seeded subsample of the training cells fits the neural decoder


def fit_mlp_decoder(dataset: PreparedDataset, hidden: tuple[int, ...], *, seed: int = 0) -> MLPRegressor:
    """``MLPRegressor`` from latent states to processed expression, fitted on (at most 20k) training cells only."""
    from sklearn.neural_network import MLPRegressor

    rows = np.flatnonzero(dataset.split.train)
    if len(rows) > MAX_DECODER_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_DECODER_CELLS, replace=False))
    expression = dataset.expression[rows]
    expression = expression.toarray() if hasattr(expression, "toarray") else np.asarray(expression)
    return MLPRegressor(hidden_layer_sizes=hidden, alpha=1e-3, max_iter=300, early_stopping=True,
                        random_state=seed).fit(dataset.latent[rows].astype(np.float64), expression)


def mlp_decoded_heldout_ceiling(decoder: MLPRegressor) -> Predictor:
    """A predictor: the heldout-ceiling's end states, decoded by ``decoder`` (:func:`fit_mlp_decoder`)."""
    from experiments.evaluation.baselines import Prediction
    from experiments.evaluation.references import paired_targets

    def predict(context, perturbation, rng):
        z0 = context.start_latent(perturbation)
        z_end = paired_targets(context, perturbation, "test")
        change = decoder.predict(z_end) - decoder.predict(z0)
        X0 = context.start_expression(perturbation)
        steps = np.linspace(0.0, 1.0, context.horizon + 1)[:, None]
        trajectory = X0.mean(axis=0)[None, :] + steps * change.mean(axis=0)[None, :]
        return Prediction(cells=X0 + change, trajectory=trajectory, latent_start=z0, latent_end=z_end)

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--n-latent", default="8,16,32", help="cell PCs to try (A,B)")
    parser.add_argument("--mlp-hidden", default="128;256,256",
                        help="hidden layers of each neural decoder, decoders separated by ';' ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/representation_ceiling.json")
    args = parser.parse_args()

    from experiments.evaluation.baselines import BASELINES
    from experiments.evaluation.evaluate import evaluate_dataset
    from experiments.evaluation.references import REFERENCES

    predictors = {**BASELINES, **REFERENCES}
    architectures = [tuple(int(v) for v in layers.split(",")) for layers in args.mlp_hidden.split(";") if layers]
    results = []
    print(f"{'cell PCs':>8}{'latent dims':>12}  {'method':<28}" + "".join(f"{m:>22}" for m in METRICS))
    for n_latent in (int(v) for v in args.n_latent.split(",")):
        started = time.perf_counter()
        dataset = prepare_from_arguments(args, n_latent=n_latent, seed=args.seed)
        methods = {name: predictors[name] for name in METHODS}
        for hidden in architectures:
            decoder = fit_mlp_decoder(dataset, hidden, seed=args.seed)
            methods[f"heldout-ceiling, MLP {','.join(map(str, hidden))}"] = mlp_decoded_heldout_ceiling(decoder)
        scored = evaluate_dataset(dataset, methods, seed=args.seed, references=False)
        for method in methods:
            values = {r["metric"]: r["value"] for r in scored.rows if r["method"] == method}
            if not values:
                continue  # the row does not exist in this split (e.g. perturbation-mean of an unseen one)
            results.append({"n_latent": n_latent, "latent_dims": dataset.n_latent, "method": method,
                             **{m: values[m] for m in METRICS}})
            cells = "".join(f"{values[m]:>22.3f}" for m in METRICS)
            print(f"{n_latent:>8}{dataset.n_latent:>12}  {method:<28}{cells}")
        print(f"{'':>8}(prepared and scored in {time.perf_counter() - started:.0f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
