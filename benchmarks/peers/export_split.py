"""Write one case's split, in the project's gene space, for a peer to train on: ``split.h5ad``.

The case is prepared exactly as ``waddington evaluate`` prepares it (same split, same genes, same
log-normalized expression), so a peer sees what the project sees. ``obs``: ``condition`` (the
perturbation label), ``cell_type`` (the group), ``part`` (train/test).

    python benchmarks/peers/export_split.py --case kang --out runs/peers/kang/split.h5ad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.cases import prepare_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="kang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import anndata as ad
    import numpy as np
    import pandas as pd

    ds, case = prepare_case(args.case, args.seed)
    obs = pd.DataFrame({"condition": np.asarray(ds.labels).astype(str),
                        "cell_type": np.asarray(ds.groups).astype(str),
                        "part": np.where(ds.split.train, "train", "test")})
    X = ds.expression[np.arange(len(obs))].toarray().astype(np.float32)
    out = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[str(g) for g in ds.latent_space.feature_names]))
    out.uns["case"] = {k: str(v) for k, v in case.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(args.out)
    print(f"wrote {args.out}: {out.n_obs} cells x {out.n_vars} genes, {int((obs['part'] == 'test').sum())} held out")


if __name__ == "__main__":
    main()
