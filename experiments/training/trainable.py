"""The Tune function trainable: one two-stage run per trial, resumable from its last stage checkpoint."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from experiments.training.settings import TwoStageSettings, setting_names
from experiments.training.two_stage import run_two_stage

__all__ = ["two_stage_trainable"]


def two_stage_trainable(config: dict[str, Any], data: Any = None) -> None:
    """Tune function trainable: one two-stage run, reports every iteration, checkpoints per stage.

    On a retry or after ``Tuner.restore`` it resumes from the trial's latest checkpoint: after
    stage 1 it goes straight to PPO (TRPO is not retrained), after stage 2 it only re-reports.
    ``data`` (bound with ``tune.with_parameters``) is the dataset the driver prepared once.
    """
    import envs  # noqa: F401  (registers waddington/CellState-v0 in this worker process)
    from ray import tune

    names = set(setting_names())
    settings = TwoStageSettings.from_mapping({k: v for k, v in config.items() if k in names})
    work_dir = Path(tempfile.mkdtemp(prefix="two-stage-"))
    checkpoint = tune.get_checkpoint()
    resume_dir = checkpoint.to_directory(str(work_dir / "restored")) if checkpoint is not None else None
    try:
        for metrics in run_two_stage(settings, work_dir=work_dir, resume_from=resume_dir, data=data):
            ckpt_dir = metrics.pop("checkpoint_dir", None)
            metrics.pop("summary", None)
            if ckpt_dir is not None:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
            else:
                tune.report(metrics)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
