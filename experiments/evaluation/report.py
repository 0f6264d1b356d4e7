"""``report.md`` from metric rows: mean and 95% CI over seeds, best per column, plain verdicts.

Input rows are those of ``metrics.json`` (one per method x split x metric x seed). For each
split a table has one row per method and one column per metric: ``mean ± half-width`` of the 95%
t-interval over seeds (``t_{0.975, n-1} * sd / sqrt(n)``; "n=1" when a single seed). The best
mean per column is **bold** (highest for Pearson, lowest for MSE and distances; rows that read the
held-out answer, ``READS_ANSWER``, are never bold). Below each table:
how TRPO -> PPO compares with the train-mean baseline (paired over seeds, stated plainly whatever
the sign), and the ablation random-init PPO vs TRPO-init PPO at equal env steps. Above the verdicts,
the do-no-harm check (:func:`harm_lines`): the metrics on which TRPO -> PPO is worse than the guide
(hint-controller) and than doing nothing (control-mean), with a warning when it is worse than the
guide; and the share of start cells out of range (:mod:`envs.start_range`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.evaluation.cell_eval_scores import CELL_EVAL_COLUMNS, UNRANKED
from experiments.evaluation.evaluate import COMPARISON_ONLY, DE_COUNTS, HIGHER_IS_BETTER, METRICS

__all__ = ["CONVENTIONS", "READS_ANSWER", "HARM_METRICS", "summarize", "paired_difference", "worse_metrics",
           "harm_lines", "range_lines", "render_tables", "render_report", "METHOD_ORDER"]

METHOD_ORDER = ("control-mean", "train-mean", "perturbation-mean", "ridge", "ridge + self-effect", "drift (a=0)",
                "hint-controller", "latent-ceiling", "oracle-controller", "heldout-ceiling", "PPO-only", "TRPO-only",
                "stage-1 PPO", "TRPO->PPO")

#: Rows that read the held-out answer: bounds to read methods against, never "best" in a column.
READS_ANSWER = ("heldout-ceiling",)

CONVENTIONS = {
    "delta": "mean(pred) - mean(start controls) vs mean(observed test cells) - mean(start controls), log-normalized HVGs",
    "start_controls": "training control cells (<= max_start_cells, seeded subsample); group split: the held-out "
                      "group's control cells; with covariates: drawn per covariate combination in the composition "
                      "of the perturbation's observed cells",
    "references": "latent-ceiling: start cells moved onto their OT-paired training cells, decoded like a policy; "
                  "oracle-controller: the scripted steering rule through the env dynamics; both omitted where the "
                  "start cells' covariate combination has no training cells of the perturbation; heldout-ceiling: "
                  "start cells moved onto their OT partners among the observed held-out cells (reads the answer: "
                  "a bound on what the representation can express, never bold, never a method)",
    "top20": "20 genes with the largest observed |delta| (chosen from observed data only)",
    "top100": "the same with 100 genes (all genes when fewer), as scPerturBench reports delta Pearson",
    "r2_mean": "scGen's R^2: squared Pearson of per-gene mean expression, predicted vs observed (not deltas)",
    "e_distance": "squared energy distance, Euclidean, V-statistic, fixed PCA of training cells (<= 50 PCs)",
    "wasserstein2": "exact W2 (POT emd2, squared-Euclidean cost, uniform weights) in the same PCA",
    "dtw": "tslearn DTW between simulated mean trajectory and observed pseudotime-binned mean trajectory (PCA)",
    "de_genes": "genes with Benjamini-Hochberg q < 0.05 in a Welch t-test of the predicted (de_genes) or real "
                "(de_genes_observed) cells vs the start controls; predicted cells are floored at 0 (log-expression)",
    "paper_start_end": "seed paper's start-vs-end metric (mean |z_end - z_start| per latent dim); comparison only",
    "ci": "95% t-interval over seeds of the per-seed mean over evaluated perturbations",
}


#: The metrics on which being worse than the guide earns a warning (the issue 23 targets).
HARM_METRICS = ("delta_mse_all", "e_distance", "delta_pearson_top20")
#: With one seed there is no CI: a warning needs a difference above this share of the other's value
#: (a 0.5% difference of one run is noise; a 9x worse delta MSE is not).
SINGLE_SEED_TOLERANCE = 0.05


def _t975(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarize(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(split, method, metric) -> mean, CI half-width, n seeds, and the per-seed values."""
    groups: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["method"], r["metric"]), {})[int(r["seed"])] = float(r["value"])
    out = {}
    for key, by_seed in groups.items():
        values = np.array([by_seed[s] for s in sorted(by_seed)])
        n = len(values)
        half = _t975(n) * values.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        out[key] = {"mean": float(values.mean()), "ci": float(half), "n": n, "values": values.tolist(),
                    "seeds": sorted(by_seed)}
    return out


def paired_difference(rows: Sequence[dict[str, Any]], split: str, metric: str, a: str, b: str) -> dict[str, float] | None:
    """Mean and 95% CI over seeds of ``value(a) - value(b)``, paired by seed (None if no shared seed)."""
    va = {int(r["seed"]): r["value"] for r in rows if r["split"] == split and r["metric"] == metric and r["method"] == a}
    vb = {int(r["seed"]): r["value"] for r in rows if r["split"] == split and r["metric"] == metric and r["method"] == b}
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return None
    d = np.array([va[s] - vb[s] for s in seeds])
    n = len(d)
    half = _t975(n) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    better = d > 0 if HIGHER_IS_BETTER[metric] else d < 0
    return {"mean": float(d.mean()), "ci": float(half), "n": n, "a_better_in": int(better.sum()),
            "a_mean": float(np.mean([va[s] for s in seeds])), "b_mean": float(np.mean([vb[s] for s in seeds]))}


def worse_metrics(rows: Sequence[dict[str, Any]], split: str, a: str, b: str) -> list[tuple[str, dict[str, float]]]:
    """Metrics on which ``a`` is worse than ``b``: by any margin with one seed, by more than the 95% CI with several."""
    out = []
    for m in METRICS:
        d = paired_difference(rows, split, m, a, b)
        if d is None or d["mean"] == 0:
            continue
        worse = (d["mean"] < 0) if HIGHER_IS_BETTER[m] else (d["mean"] > 0)
        if worse and (d["n"] < 2 or abs(d["mean"]) > d["ci"]):
            out.append((m, d))
    return out


def harm_lines(rows: Sequence[dict[str, Any]], split: str, method: str = "TRPO->PPO") -> list[str]:
    """The do-no-harm check: where ``method`` is worse than the guide and than doing nothing, plainly."""
    present = {r["method"] for r in rows if r["split"] == split}
    if method not in present:
        return []
    lines = [f"**Do-no-harm check** ({method} vs the guide and vs doing nothing; worse = worse mean, by more than "
             "the 95% CI over seeds when there are several; with one seed a warning needs a difference over "
             f"{100 * SINGLE_SEED_TOLERANCE:g}% of the other's value):", ""]
    for other, label in (("hint-controller", "the guide (hint-controller)"), ("control-mean", "control-mean")):
        if other not in present:
            continue
        worse = worse_metrics(rows, split, method, other)
        listed = ", ".join(f"{m} ({_fmt(d['a_mean'])} vs {_fmt(d['b_mean'])})" for m, d in worse) or "none"
        lines.append(f"- worse than {label} on: {listed}")
        # several seeds: beyond the CI is enough; one seed: beyond a tolerance, or run-to-run noise warns
        harmful = [m for m, d in worse if m in HARM_METRICS
                   and (d["n"] >= 2 or abs(d["mean"]) > SINGLE_SEED_TOLERANCE * abs(d["b_mean"]))]
        if other == "hint-controller" and harmful:
            lines.append(f"- **WARNING: the learned policy is worse than the guide alone on {', '.join(harmful)}; "
                         "prefer the hint-controller's prediction here (`--method hint-controller`).**")
        if other == "control-mean" and "delta_mse_all" in harmful:
            lines.append(f"- **WARNING: {method} changes the cells more wrongly than predicting no change "
                         "(delta_mse_all).**")
    return lines + [""]


def range_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The out-of-range line: the share of start cells past the rule's constants, per seed."""
    parts = []
    for run in runs:
        r = run.get("start_range") or {}
        if r:
            parts.append(f"seed {run.get('seed')}: {100 * r['share_out_of_range']:.1f}% out of range "
                         f"(score > {_fmt(r['in_range'])}), {100 * r['share_far']:.1f}% far "
                         f"(score >= {_fmt(r['out_of_range'])}), median score {_fmt(r['median_score'])}")
    if not parts:
        return []
    return ["**Start cells out of range** (distance to the nearest paired training starts over their own spacing; "
            "out of range the policy's correction and the guide's borrowed hint shrink toward the guide and the "
            "mean shift, docs/out_of_range.md): " + "; ".join(parts) + ".", ""]


def _methods(rows, split) -> list[str]:
    present = {r["method"] for r in rows if r["split"] == split}
    order = [m for m in METHOD_ORDER if m in present]
    return order + sorted(present - set(order))


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _cell(stat: dict[str, float] | None) -> str:
    if stat is None:
        return "–"
    ci = "" if stat["n"] < 2 else f" ± {_fmt(stat['ci'])}"
    return f"{_fmt(stat['mean'])}{ci}"


def _table(rows, split: str, metrics: Sequence[str], stats) -> str:
    methods = _methods(rows, split)
    header = "| method | " + " | ".join(metrics) + " |"
    lines = [header, "|---|" + "---|" * len(metrics)]
    best = {}
    for m in metrics:
        means = {meth: stats[(split, meth, m)]["mean"] for meth in methods
                 if (split, meth, m) in stats and meth not in READS_ANSWER
                 and np.isfinite(stats[(split, meth, m)]["mean"])}  # undefined (e.g. doing nothing's Pearson) never wins
        if means and m not in COMPARISON_ONLY + DE_COUNTS + UNRANKED:
            pick = max if HIGHER_IS_BETTER[m] else min
            target = pick(means.values())
            best[m] = {meth for meth, v in means.items() if np.isclose(v, target, rtol=1e-9, atol=1e-12)}
    for meth in methods:
        cells = []
        for m in metrics:
            text = _cell(stats.get((split, meth, m)))
            cells.append(f"**{text}**" if meth in best.get(m, ()) else text)
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdicts(rows, split: str) -> list[str]:
    lines = []
    present = {r["method"] for r in rows if r["split"] == split}
    for a, b, title in (("TRPO->PPO", "train-mean", "TRPO -> PPO vs the train-mean baseline"),
                        ("TRPO->PPO", "perturbation-mean", "TRPO -> PPO vs the perturbation-mean baseline"),
                        ("TRPO->PPO", "ridge", "TRPO -> PPO vs the ridge baseline"),
                        ("TRPO->PPO", "ridge + self-effect", "TRPO -> PPO vs the ridge + self-effect baseline"),
                        ("TRPO->PPO", "hint-controller", "What learning added: TRPO -> PPO vs the hint-controller "
                         "(the guide alone, a guided policy's zero action)"),
                        ("TRPO->PPO", "control-mean", "TRPO -> PPO vs the control-mean baseline (no change)"),
                        ("latent-ceiling", "perturbation-mean", "Representation gap: latent-ceiling vs "
                         "perturbation-mean (what the latent space and decoder can express)"),
                        ("TRPO->PPO", "latent-ceiling", "Control gap: TRPO -> PPO vs latent-ceiling (what learning "
                         "leaves on the table)"),
                        ("TRPO->PPO", "oracle-controller", "TRPO -> PPO vs the scripted oracle controller"),
                        ("TRPO->PPO", "heldout-ceiling", "Room left in this representation: TRPO -> PPO vs "
                         "heldout-ceiling (the held-out answer itself, moved into the latent space)"),
                        ("TRPO->PPO", "PPO-only", "Ablation: TRPO-init PPO vs random-init PPO at equal env steps")):
        if a not in present or b not in present:
            continue
        lines.append(f"**{title}** (difference {a} − {b}, paired over seeds, 95% CI):\n")
        for m in METRICS:
            d = paired_difference(rows, split, m, a, b)
            if d is None:
                continue
            direction = "higher is better" if HIGHER_IS_BETTER[m] else "lower is better"
            if d["mean"] == 0:
                verdict = "equal"
            elif d["n"] >= 2 and not abs(d["mean"]) > d["ci"]:
                verdict = "no clear difference (95% CI includes 0)"
            else:
                verdict = f"{a} better" if (d["mean"] > 0) == HIGHER_IS_BETTER[m] else f"{a} worse"
            ci = "" if d["n"] < 2 else f" ± {_fmt(d['ci'])}"
            lines.append(f"- {m} ({direction}): {a} {_fmt(d['a_mean'])} vs {b} {_fmt(d['b_mean'])}; "
                         f"difference {_fmt(d['mean'])}{ci} → **{verdict}** "
                         f"({d['a_better_in']}/{d['n']} seeds better)")
        lines.append("")
    return lines


def render_tables(rows: Sequence[dict[str, Any]]) -> str:
    """The per-split tables alone (for the terminal)."""
    stats = summarize(rows)
    parts = []
    for split in sorted({r["split"] for r in rows}):
        parts.append(f"\n{split}\n" + _table(rows, split, METRICS, stats))
    return "\n".join(parts)


def render_report(
    rows: Sequence[dict[str, Any]],
    *,
    runs: Sequence[dict[str, Any]] = (),
    command: str | None = None,
    figures: Sequence[str] = (),
) -> str:
    """The whole ``report.md``: setup, one table per split, verdicts, comparison-only metric, figures."""
    stats = summarize(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    out = ["# Evaluation report", ""]
    if command:
        out += ["Command:", "", "```", command, "```", ""]
    out += [f"Seeds: {seeds} (n = {len(seeds)}). Cells: mean ± 95% CI half-width over seeds of the per-seed mean "
            "over evaluated perturbations; **bold** = best mean in the column (Pearson: highest; MSE, E-distance, "
            "W2, DTW: lowest), heldout-ceiling (it reads the answer) aside.", ""]
    for run in runs[:1]:
        info = [f"split: {run.get('split')}", f"evaluated perturbations: {', '.join(run.get('perturbations', []))}",
                f"start control cells per seed: {run.get('n_start_cells')}", f"fixed PCA: {run.get('n_pcs')} PCs",
                f"horizon: {run.get('horizon')} steps"]
        if run.get("heldout_group"):
            info.append(f"held-out group: {run.get('group_key')} = {run.get('heldout_group')}")
        if run.get("settings"):
            s = run["settings"]
            info.append(f"training budget per seed: TRPO {s['trpo_iters']} it + PPO {s['ppo_iters']} it x "
                        f"{s['train_batch_size']} env steps; PPO-only {s['trpo_iters'] + s['ppo_iters']} it "
                        f"(equal env steps); kl_radius {s['kl_radius']}, clip {s['clip_param']}, "
                        f"hidden {s['fcnet_hiddens']}, latent {s['n_latent']}")
        out += ["- " + "\n- ".join(info), ""]
    for split in sorted({r["split"] for r in rows}):
        out += [f"## {split}", "", _table(rows, split, METRICS, stats), ""]
        out += range_lines([r for r in runs if r.get("split") == split])
        out += harm_lines(rows, split)
        out += _verdicts(rows, split)
        ce = [m for m in CELL_EVAL_COLUMNS if any(r["metric"] == m and r["split"] == split for r in rows)]
        if ce:
            out += ["cell-eval (Arc Institute's Virtual Cell Challenge metrics, its own DE test; means over "
                    "perturbations; de_nsig_counts: its DE-gene counts, predicted vs real):", "",
                    _table(rows, split, ce, stats), ""]
        out += ["DE genes per perturbation (Welch t-test, Benjamini-Hochberg q < 0.05, vs the start controls), "
                "predicted vs real cells: a good prediction is near the real count, doing nothing has 0:", "",
                _table(rows, split, DE_COUNTS, stats), ""]
        out += ["Seed paper's start-vs-end metric (comparison only, never used to rank: doing nothing scores 0, "
                "its optimum):", "", _table(rows, split, COMPARISON_ONLY, stats), ""]
    out += ["## Conventions", ""] + [f"- {k}: {v}" for k, v in CONVENTIONS.items()] + [""]
    if figures:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Re-render ``report.md`` from a ``metrics.json`` (figures already in its folder are linked)."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m experiments.evaluation.report", description=main.__doc__)
    parser.add_argument("metrics", help="metrics.json written by `waddington evaluate`")
    args = parser.parse_args(argv)
    path = Path(args.metrics)
    payload = json.loads(path.read_text())
    figures = [f for f in ("landscape.png", "delta_top_genes.png", "metric_bars.png", "learning_curves.png",
                           "start_range.png")
               if (path.parent / f).exists()]
    text = render_report(payload["rows"], runs=payload.get("runs", ()), command=payload.get("command"), figures=figures)
    (path.parent / "report.md").write_text(text)
    print(path.parent / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
