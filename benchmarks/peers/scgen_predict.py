"""scGen (pertpy's, JAX) on an exported split: train on the training part, predict the held-out cell type.

Runs in the peers' own environment (``benchmarks/peers/README.md``), never the library's:

    /path/to/peers-venv/bin/python benchmarks/peers/scgen_predict.py --split runs/peers/kang/split.h5ad \
        --out runs/peers/kang/scgen.h5ad
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import anndata as ad
    import pertpy as pt
    import scvi

    scvi.settings.seed = args.seed
    split = ad.read_h5ad(args.split)
    case = dict(split.uns["case"])
    held_out = eval(case["holdout"])[0]  # the exported case's own list literal
    train = split[split.obs["part"] == "train"].copy()
    started = time.perf_counter()
    pt.tl.Scgen.setup_anndata(train, batch_key="condition", labels_key="cell_type")
    model = pt.tl.Scgen(train)
    model.train(max_epochs=args.epochs, batch_size=32, early_stopping=True, early_stopping_patience=25,
                accelerator="cpu")
    pred, _ = model.predict(ctrl_key=case["control_value"], stim_key=case["stim"], celltype_to_predict=held_out)
    pred.obs["condition"] = "scGen"
    pred.uns["scgen"] = {"epochs": args.epochs, "wall_s": round(time.perf_counter() - started, 1),
                         "pertpy": pt.__version__, "seed": args.seed}
    pred.write_h5ad(args.out)
    print(f"wrote {args.out}: {pred.n_obs} predicted {held_out} cells in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
