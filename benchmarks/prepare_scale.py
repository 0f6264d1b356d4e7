"""Genome-scale cost of ``waddington prepare``: wall time and peak RSS against the number of cells.

Writes synthetic raw-count ``.h5ad`` files of N cells x 8,000 genes chunk by chunk (CSR float32,
~1,500 detected genes per cell, per-gene detection rates log-normal, counts 1 + Poisson; ~10% of
cells ``control``, the rest in perturbations of ~150 cells named ``PERT_00001`` ... that each
shift ~20 genes; rows shuffled), then runs ``PREPARE_COMMAND`` on each file in a child process,
one at a time, and records its wall seconds and peak RSS (``os.wait4``: the largest RSS of the
child or of any descendant it waited for, not their sum). Fits power laws on log-log (time and
memory vs cells) and extrapolates them to 2,000,000 cells. Files are reused from ``--workdir``
(gitignored) unless ``--rewrite``; free disk is checked before writing (~6 GB at 500k, ~25 GB at 2M).
Prints a table and writes JSON (default benchmarks/results/prepare_scale.json, gitignored).

    python benchmarks/prepare_scale.py [--cells 100000,250000,500000] [--genes 8000] [--seed 0]
        [--workdir benchmarks/.scale_data] [--rewrite] [--write-only] [--in-memory]
        [--extra-args "..."] [--keep-outputs] [--timeout S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_VERSION = "v1"  # part of the file name: a changed generator never reuses stale files
GEN_BLOCK = 1000  # cells per random block; fixed so X does not depend on chunk_cells
DETECTED_FRACTION = 1500 / 8000  # ~1,500 detected genes per cell at 8,000 genes
CONTROL_FRACTION, CELLS_PER_PERTURBATION, GENES_PER_PERTURBATION = 0.10, 150, 20
CELL_TYPES, CELL_TYPE_WEIGHTS = ("type_A", "type_B", "type_C"), (0.5, 0.3, 0.2)

#: The timed command; ``{data}`` and ``{output}`` are filled in, ``--in-memory`` drops ``--out-of-core``.
PREPARE_COMMAND = ("waddington prepare --data {data} --perturbation-key perturbation "
                   "--control-value control --output {output} --out-of-core --quiet")


def _gene_model(rng: np.random.Generator, n_genes: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene detection probability (mean over cells ~``fraction``) and Poisson rate of extra counts."""
    w = np.exp(1.2 * rng.standard_normal(n_genes))
    depth = np.exp(0.35 * rng.standard_normal(256) - 0.35**2 / 2)  # a sample of cell depth factors
    lo, hi = 0.0, 1.0 / w.min()
    for _ in range(60):  # bisection: clipping at 1 makes the mean detection nonlinear in the scale
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(c * w[:, None] * depth, 1).mean() < fraction else (lo, c)
    p = (lo * w).astype(np.float32)
    # Highly detected genes also carry more counts; the independent log-normal term decouples
    # variance from mean so that highly variable gene selection has something to find.
    lam = 0.5 * (p / fraction) ** 1.5 * np.exp(0.6 * rng.standard_normal(n_genes))
    return p, lam.astype(np.float32)


def estimated_file_bytes(n_cells: int, n_genes: int, fraction: float = DETECTED_FRACTION) -> int:
    """Expected size of the file: 8 bytes per stored count (float32 + int32 index) plus obs."""
    return int(n_cells * n_genes * fraction * 8.05 + n_cells * 60 + n_genes * 40)


def write_synthetic_counts_h5ad(path: str | os.PathLike, n_cells: int, n_genes: int, *, seed: int,
                                chunk_cells: int = 10_000, detected_per_cell: float | None = None,
                                progress: bool = False) -> Path:
    """Write a synthetic perturbation screen of raw counts as ``.h5ad``, chunk by chunk.

    Parameters
    ----------
    path : str or PathLike
        Output file; written as ``path + ".partial"`` and renamed when complete.
    n_cells, n_genes : int
        Matrix shape.
    seed : int
        Same seed and shape give the same file; X does not depend on ``chunk_cells``.
    chunk_cells : int
        Cells appended per write (rounded up to a multiple of 1,000); bounds the memory used.
    detected_per_cell : float, optional
        Mean nonzero genes per cell; default ``n_genes * 1500 / 8000``.
    progress : bool
        Print progress lines every few seconds.

    Returns
    -------
    Path
        ``path``.
    """
    import anndata as ad
    import h5py
    import pandas as pd

    path = Path(path)
    fraction = (detected_per_cell if detected_per_cell is not None else DETECTED_FRACTION * n_genes) / n_genes
    rng = np.random.default_rng([seed, 0])
    p_gene, lam_gene = _gene_model(rng, n_genes, fraction)
    # Cell type shifts ~10% of genes per type (log-fold ~N(0, 0.5)); a multiplier row per type.
    type_factor = np.ones((len(CELL_TYPES), n_genes), np.float32)
    for row in type_factor[1:]:
        genes = rng.choice(n_genes, size=max(1, n_genes // 10), replace=False)
        row[genes] = np.exp(0.5 * rng.standard_normal(genes.size))
    n_control = round(CONTROL_FRACTION * n_cells)
    n_pert = max(1, round((n_cells - n_control) / CELLS_PER_PERTURBATION))
    # Perturbations hit genes from the better-detected half, up or down by a factor 1.5-2.7.
    candidates = np.flatnonzero(p_gene >= np.median(p_gene))
    k = min(GENES_PER_PERTURBATION, candidates.size)
    pert_genes = np.stack([rng.choice(candidates, size=k, replace=False) for _ in range(n_pert)])
    pert_fc = np.exp(rng.choice([-1.0, 1.0], size=(n_pert, k)) * rng.uniform(0.4, 1.0, size=(n_pert, k)))
    pert_fc = pert_fc.astype(np.float32)
    label = np.concatenate([np.zeros(n_control, np.int32),
                            1 + np.arange(n_cells - n_control, dtype=np.int32) % n_pert])
    label = rng.permutation(label)  # interleaved, as in a real screen
    cell_type = rng.choice(len(CELL_TYPES), size=n_cells, p=CELL_TYPE_WEIGHTS).astype(np.int8)
    depth = np.exp(0.35 * rng.standard_normal(n_cells) - 0.35**2 / 2).astype(np.float32)

    def block(b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = b * GEN_BLOCK, min((b + 1) * GEN_BLOCK, n_cells)
        brng = np.random.default_rng([seed, 1, b])
        factor = type_factor[cell_type[lo:hi]]  # dense only for 1,000 cells at a time
        factor *= depth[lo:hi, None]
        cells = np.flatnonzero(label[lo:hi] > 0)
        pid = label[lo:hi][cells] - 1
        factor[np.repeat(cells, k), pert_genes[pid].ravel()] *= pert_fc[pid].ravel()
        rows, cols = np.nonzero(brng.random(factor.shape, dtype=np.float32) < factor * p_gene)
        counts = 1 + brng.poisson(factor[rows, cols] * lam_gene[cols])
        return counts.astype(np.float32), cols.astype(np.int32), np.bincount(rows, minlength=hi - lo)

    partial = path.with_name(path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    start, last, nnz = time.perf_counter(), 0.0, 0
    n_blocks = -(-n_cells // GEN_BLOCK)
    per_chunk = max(1, -(-chunk_cells // GEN_BLOCK))
    with h5py.File(partial, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        X = f.create_group("X")
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        X.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        ds = {name: X.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(1 << 18,))
              for name, dt in (("data", np.float32), ("indices", np.int32), ("indptr", np.int64))}
        ds["indptr"].resize((1,))
        ds["indptr"][0] = 0
        for first in range(0, n_blocks, per_chunk):
            parts = [block(b) for b in range(first, min(first + per_chunk, n_blocks))]
            data, indices = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            indptr = nnz + np.cumsum(np.concatenate([p[2] for p in parts]), dtype=np.int64)
            for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
                n = ds[name].shape[0]
                ds[name].resize((n + arr.size,))
                ds[name][n:] = arr
            nnz = int(indptr[-1])
            done = min((first + per_chunk) * GEN_BLOCK, n_cells)
            now = time.perf_counter() - start
            if progress and (now - last > 5 or done == n_cells):
                last = now
                print(f"  {path.name}: {done:,}/{n_cells:,} cells ({100 * done / n_cells:.0f}%), "
                      f"{nnz * 8 / 1e9:.2f} GB, {now:.0f} s, eta {now * (n_cells - done) / done:.0f} s",
                      flush=True)
        names = np.array([f"PERT_{i:05d}" for i in range(1, n_pert + 1)], dtype=object)
        obs = pd.DataFrame(
            {"perturbation": pd.Categorical.from_codes(label, ["control", *names]),
             "cell_type": pd.Categorical.from_codes(cell_type, list(CELL_TYPES))},
            index=pd.Index([f"cell_{i:07d}" for i in range(n_cells)]),
        )
        var = pd.DataFrame(index=pd.Index([f"GENE_{j:05d}" for j in range(n_genes)]))
        ad.io.write_elem(f, "obs", obs)
        ad.io.write_elem(f, "var", var)
        for name in ("uns", "obsm", "varm", "obsp", "varp", "layers"):
            ad.io.write_elem(f, name, {})
    partial.replace(path)
    return path


def prepare_command(data: Path, output: Path, *, in_memory: bool, extra_args: str) -> list[str]:
    """The argv of one timed run: ``PREPARE_COMMAND`` filled in, the venv's ``waddington`` if present."""
    argv = [a.format(data=data, output=output) for a in shlex.split(PREPARE_COMMAND)]
    if in_memory:
        argv.remove("--out-of-core")
    local = Path(sys.executable).parent / argv[0]
    return [str(local) if local.exists() else argv[0], *argv[1:], *shlex.split(extra_args)]


def time_child(argv: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``argv``; wall seconds, CPU seconds and peak RSS (GiB) of it and its waited descendants."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)  # files, not pipes: wait4 never blocks on a full pipe
        fired = threading.Event()
        timer = threading.Timer(timeout, lambda: (fired.set(), proc.kill())) if timeout else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if timer:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").splitlines()[-30:]
    return {"returncode": proc.returncode, "timed_out": fired.is_set(), "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
            "stderr_tail": tail if proc.returncode else []}


def fit_power_law(cells: list[float], values: list[float], at: float = 2e6) -> dict[str, float] | None:
    """Least-squares fit of log(value) = a + b log(cells); the exponent b and the value at ``at``."""
    if len(cells) < 2 or len(set(cells)) < 2:
        return None
    b, a = np.polyfit(np.log(cells), np.log(values), 1)
    return {"exponent": float(b), f"at_{int(at)}": float(np.exp(a + b * np.log(at)))}


def env_view_bytes(prepared: Path) -> int:
    """Pickled size of the prepared dataset's env view: what every env runner receives from the object store."""
    code = ("import pickle, sys, envs; "
            "print(len(pickle.dumps(envs.load_dataset(sys.argv[1]).env_view(), protocol=5)))")
    done = subprocess.run([sys.executable, "-c", code, str(prepared)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="100000,250000,500000", help="comma-separated cell counts")
    parser.add_argument("--genes", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".scale_data"))
    parser.add_argument("--rewrite", action="store_true", help="rewrite files that already exist")
    parser.add_argument("--write-only", action="store_true", help="write the files, do not run prepare")
    parser.add_argument("--in-memory", action="store_true", help="drop --out-of-core (comparison row)")
    parser.add_argument("--extra-args", default="",
                        help='appended to the prepare command, one string: --extra-args="--flag value"')
    parser.add_argument("--keep-outputs", action="store_true", help="keep each prepare output directory")
    parser.add_argument("--timeout", type=float, default=None, help="kill a prepare run after this many seconds")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "prepare_scale.json"))
    args = parser.parse_args(argv)
    cells = sorted(int(c) for c in args.cells.split(",") if c.strip())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    rows: list[dict[str, Any]] = []
    for n in cells:
        path = workdir / f"synthetic_counts_{n}x{args.genes}_seed{args.seed}_{GENERATOR_VERSION}.h5ad"
        row: dict[str, Any] = {"cells": n, "genes": args.genes, "file": str(path), "write_s": None}
        if args.rewrite or not path.exists():
            need, free = estimated_file_bytes(n, args.genes), shutil.disk_usage(workdir).free
            if path.exists():
                free += path.stat().st_size
            if need * 1.1 + 2**30 > free:
                print(f"refusing to write {path.name}: needs ~{need / 1e9:.1f} GB (+10% and 1 GiB margin), "
                      f"{free / 1e9:.1f} GB free on {workdir}", file=sys.stderr)
                row["error"] = "not enough free disk"
                rows.append(row)
                continue
            print(f"writing {path} (~{need / 1e9:.1f} GB)", flush=True)
            t0 = time.perf_counter()
            write_synthetic_counts_h5ad(path, n, args.genes, seed=args.seed, progress=True)
            row["write_s"] = time.perf_counter() - t0
        row["file_gb"] = path.stat().st_size / 1e9
        if not args.write_only:
            out = workdir / f"prepare_out_{path.stem}"
            shutil.rmtree(out, ignore_errors=True)  # left by an earlier --keep-outputs run
            cmd = prepare_command(path, out, in_memory=args.in_memory, extra_args=args.extra_args)
            print("running:", shlex.join(cmd), flush=True)
            row.update(command=cmd, **time_child(cmd, args.timeout))
            row["output_gb"] = _dir_bytes(out) / 1e9
            if not row["returncode"]:
                row["env_view_mb"] = env_view_bytes(out) / 1e6
            if not args.keep_outputs:
                shutil.rmtree(out, ignore_errors=True)
            if row["returncode"]:
                row["error"] = "timed out" if row["timed_out"] else f"exit status {row['returncode']}"
                print(f"prepare failed ({row['error']}); stderr tail:\n  " + "\n  ".join(row["stderr_tail"]),
                      file=sys.stderr)
            else:
                row["s_per_100k_cells"] = row["wall_s"] * 1e5 / n
        rows.append(row)

    ok = [r for r in rows if "wall_s" in r and not r.get("error")]
    fits = {"wall_s": fit_power_law([r["cells"] for r in ok], [r["wall_s"] for r in ok]),
            "peak_rss_gib": fit_power_law([r["cells"] for r in ok], [r["peak_rss_gib"] for r in ok]),
            "env_view_mb": fit_power_law([r["cells"] for r in ok], [r["env_view_mb"] for r in ok])}

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return format(r[key], fmt) if r.get(key) is not None else "-"

    head = (f"{'cells':>10} {'genes':>6} {'file GB':>8} {'write s':>8} {'wall s':>8} {'peak RSS GiB':>13} "
            f"{'s/100k cells':>13} {'env view MB':>12}  status")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['cells']:>10,} {r['genes']:>6} {cell(r, 'file_gb', '.2f'):>8} {cell(r, 'write_s', '.1f'):>8} "
              f"{cell(r, 'wall_s', '.1f'):>8} {cell(r, 'peak_rss_gib', '.2f'):>13} "
              f"{cell(r, 's_per_100k_cells', '.1f'):>13} {cell(r, 'env_view_mb', '.0f'):>12}  "
              f"{r.get('error', 'ok' if 'wall_s' in r else 'written')}")
    for key, fit in fits.items():
        if fit:
            print(f"{key}: grows as cells^{fit['exponent']:.2f}; extrapolated to 2,000,000 cells: "
                  f"{fit['at_2000000']:.2f}")

    from importlib.metadata import version

    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "prepare_command_template": PREPARE_COMMAND, "in_memory": args.in_memory, "extra_args": args.extra_args,
        "generator_version": GENERATOR_VERSION, "seed": args.seed,
        "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "anndata": version("anndata"), "h5py": version("h5py"),
    }
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "results": rows, "fits": fits}, indent=2))
    print(f"\nwrote {out_json}")
    return 0 if all(not r.get("error") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
