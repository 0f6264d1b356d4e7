#!/usr/bin/env bash
# One command for the Kang case's scGen row: export the split (project venv), train and predict with
# pertpy's scGen (peers venv, PEERS_PYTHON), score beside the project's rows (project venv).
#   PEERS_PYTHON=/path/to/peers-venv/bin/python benchmarks/peers/kang_scgen.sh [SEED]
set -euo pipefail
seed="${1:-0}"
out="runs/peers/kang-s${seed}"
: "${PEERS_PYTHON:?set PEERS_PYTHON to the python of the peers venv, see benchmarks/peers/README.md}"
python benchmarks/peers/export_split.py --case kang --seed "$seed" --out "$out/split.h5ad"
"$PEERS_PYTHON" benchmarks/peers/scgen_predict.py --split "$out/split.h5ad" --out "$out/scgen.h5ad" --seed "$seed"
python benchmarks/peers/score.py --case kang --seed "$seed" --peer "$out/scgen.h5ad" --name scGen \
  --json "benchmarks/results/peers_kang_s${seed}.json"
