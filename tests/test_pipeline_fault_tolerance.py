"""Fault tolerance: a killed env runner is restarted and training goes on; Tune retries a killed trial."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from helpers import tiny_dataset, tiny_settings


def test_killed_env_runner_is_restarted(ray_local):
    import envs  # noqa: F401
    from experiments.training.algorithm_configs import build_stage2_config
    from experiments.training.settings import resolve_settings

    s = resolve_settings(tiny_settings(num_env_runners=2))
    algo = build_stage2_config(s, None, ray_local.put(tiny_dataset())).build_algo()
    try:
        algo.train()
        group = algo.env_runner_group
        pids = group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert len(pids) == 2 and os.getpid() not in pids
        os.kill(pids[0], signal.SIGKILL)  # one env runner dies mid-training
        steps = []
        restarted = False
        # RLlib restarts the runner in the background: train until it is back, however busy the machine is
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            result = algo.train()
            steps.append(result["env_runners"]["num_env_steps_sampled"])
            if group.num_healthy_remote_workers() == 2 and group.num_remote_worker_restarts() >= 1:
                restarted = True
                break
        assert restarted, result.get("fault_tolerance")
        assert result["fault_tolerance"]["num_remote_worker_restarts"] >= 1
        new_pids = group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert len(new_pids) == 2 and pids[0] not in new_pids
        assert all(x > 0 for x in steps)  # sampling never stopped
        algo.train()  # and the restored runner samples with the current weights
    finally:
        algo.stop()


@pytest.mark.slow  # a whole Tune run killed and retried; the env-runner restart stays fast
def test_tune_retries_a_killed_trial(ray_local, tmp_path):
    """SIGKILL the trial's process mid-run: FailureConfig retries it from its latest stage checkpoint."""
    import envs  # noqa: F401
    from experiments.training.sweep import run_sweep
    from experiments.training.settings import resolve_settings

    s = resolve_settings(tiny_settings(ppo_iters=60))
    exp_dir = tmp_path / "sweep"
    killed = {}

    def trial_processes():
        """Tune trial actors of *this* session's Ray (descendants of its raylet), never anyone else's."""
        import psutil
        import ray._private.worker as worker

        raylet = worker._global_node.all_processes["raylet"][0].process.pid
        return [p for p in psutil.Process(raylet).children(recursive=True)
                if "ImplicitFunc" in " ".join(p.cmdline())]

    def ppo_has_started() -> bool:
        """Tune recorded a PPO iteration: the stage-1 checkpoint is registered and stage 2 is running."""
        for f in exp_dir.glob("*/result.json"):
            if any(json.loads(x).get("stage") == "ppo" for x in f.read_text().splitlines() if x.strip()):
                return True
        return False

    def killer():
        # Kill on an event (the first PPO report), not after a fixed sleep: with 60 PPO iterations
        # left the trial is still running on any machine speed.
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if ppo_has_started():
                procs = trial_processes()
                if procs:
                    killed["pid"] = procs[0].pid
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    results = run_sweep(s, kl_radii=[0.01], clips=[0.2], storage_path=tmp_path, name="sweep", max_failures=2,
                        data=tiny_dataset(), verbose=0)
    t.join(timeout=5)
    assert killed, "the trial finished before it could be killed"
    result = results[0]
    assert result.error is None
    rows = [json.loads(x) for f in exp_dir.glob("*/result.json") for x in f.read_text().splitlines() if x.strip()]
    final = rows[-1]
    assert final["stage"] == "ppo" and final["stage_iteration"] == 60 and final["pid"] != killed["pid"]
    # the retry resumed after TRPO (from the stage-1 checkpoint): no TRPO iteration ran in the new process
    assert not [r for r in rows if r["pid"] != killed["pid"] and r["stage"] == "trpo"]
    assert final["handoff_max_abs_diff"] <= 1e-6 and final["ppo_weight_change_l2"] > 0
