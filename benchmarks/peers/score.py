"""Score a peer's prediction beside the project's rows, with the project's metrics and cell-eval.

The case is prepared again exactly as exported (same seed), and the peer's predicted cells become
one more method of ``evaluate_dataset`` (same start controls, same held-out cells, same metric code,
cell-eval included), next to doing nothing, train-mean and the guide (``hint-controller``, which is
what TRPO -> PPO lands on in README's real cases). Writes a JSON and prints a table.

    python benchmarks/peers/score.py --case kang --peer runs/peers/kang/scgen.h5ad --name scGen \
        --json benchmarks/results/peers_kang.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.cases import prepare_case  # noqa: E402

COLUMNS = ("delta_pearson_top20", "delta_pearson_top100", "delta_mse_all", "e_distance", "de_genes",
           "de_genes_observed", "cell_eval_pearson_delta", "cell_eval_overlap_at_N", "cell_eval_mae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="kang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer", required=True, help="the peer's predicted cells (.h5ad, the split's genes)")
    parser.add_argument("--name", default="peer")
    parser.add_argument("--json")
    args = parser.parse_args()
    import anndata as ad

    from experiments.evaluation import baselines as B
    from experiments.evaluation.evaluate import evaluate_dataset

    ds, case = prepare_case(args.case, args.seed)
    peer = ad.read_h5ad(args.peer)
    genes = [str(g) for g in ds.latent_space.feature_names]
    if list(map(str, peer.var_names)) != genes:
        raise SystemExit(f"{args.peer} is not on the case's genes in the case's order.")
    cells = np.asarray(peer.X.toarray() if hasattr(peer.X, "toarray") else peer.X, dtype=np.float64)

    def peer_predictor(context, perturbation, rng):
        X0 = context.start_expression(perturbation)
        steps = np.linspace(0.0, 1.0, context.horizon + 1)[:, None]
        trajectory = X0.mean(axis=0)[None, :] + steps * (cells.mean(axis=0) - X0.mean(axis=0))[None, :]
        return B.Prediction(cells=np.maximum(cells, 0.0), trajectory=trajectory)

    methods = {"control-mean": B.BASELINES["control-mean"], "train-mean": B.BASELINES["train-mean"],
               "hint-controller": B.BASELINES["hint-controller"], args.name: peer_predictor}
    result = evaluate_dataset(ds, methods, seed=args.seed, references=False, cell_eval=True)
    table = {m: {r["metric"]: r["value"] for r in result.rows if r["method"] == m} for m in methods}
    print(f"{'method':<16} " + " ".join(f"{c[:14]:>14}" for c in COLUMNS))
    for m, values in table.items():
        print(f"{m:<16} " + " ".join(f"{values.get(c, float('nan')):>14.4g}" for c in COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"case": args.case, "seed": args.seed, "peer": args.name,
                                               "peer_info": {k: str(v) for k, v in dict(peer.uns.get("scgen", {})).items()},
                                               "table": table}, indent=1))


if __name__ == "__main__":
    main()
