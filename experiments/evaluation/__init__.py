"""Scoring in gene space on held-out data: metrics, baselines, evaluation, checkpoints, report, plots (no Ray needed to score)."""
