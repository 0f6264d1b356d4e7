"""A real 2-node Ray cluster on 127.0.0.1 (`ray start` head + worker, token auth), a sweep submitted
with `ray job submit --working-dir`, trials on both nodes. Stops only the processes it started."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO, tiny_dataset, tiny_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _cluster_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _processes_of(temp_dir: str):
    """Processes of the cluster rooted at temp_dir: those naming it in their command line + children."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    procs = {p.pid: p for p in roots}
    for p in roots:
        try:
            for c in p.children(recursive=True):
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    return list(procs.values())


def _stop_cluster(temp_dir: str) -> None:
    import psutil

    procs = _processes_of(temp_dir)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def two_node_cluster():
    token = secrets.token_hex(32)
    env = _cluster_env(token)
    # Short paths (Unix socket paths are limited). Each node gets its own temp dir: a worker node
    # without --temp-dir shares the head's session dir, and then its runtime-env agent deletes the
    # job's unpacked working dir (the driver's cwd) when its own trials end.
    temp_dir = tempfile.mkdtemp(prefix="wrc", dir="/tmp")
    worker_temp_dir = tempfile.mkdtemp(prefix="wrw", dir="/tmp")
    gcs, dash, client, agent_head, agent_worker, agent_grpc_h, agent_grpc_w = _free_ports(7)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY, "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port",
             str(dash), "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_head),
             "--dashboard-agent-grpc-port", str(agent_grpc_h), "--temp-dir", temp_dir, *common],
            env=env, check=True, capture_output=True, text=True, timeout=120,
        )
        subprocess.run(
            [RAY, "start", "--address", f"127.0.0.1:{gcs}", "--dashboard-agent-listen-port", str(agent_worker),
             "--dashboard-agent-grpc-port", str(agent_grpc_w), "--temp-dir", worker_temp_dir, *common],
            env=env, check=True, capture_output=True, text=True, timeout=120,
        )
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}",
               "temp_dir": temp_dir}
    finally:
        _stop_cluster(worker_temp_dir)
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(worker_temp_dir, ignore_errors=True)


def test_sweep_job_runs_on_both_nodes(two_node_cluster, tmp_path):
    cluster = two_node_cluster
    # Both nodes joined (asked through the token-protected GCS).
    probe = subprocess.run(
        [sys.executable, "-c",
         "import ray, json; ray.init(address=%r, log_to_driver=False); "
         "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))" % cluster["gcs"]],
        env=cluster["env"], capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    node_ids = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    assert len(node_ids) == 2

    # A client without the token is refused (token auth really is on).
    no_token = {**cluster["env"], "RAY_AUTH_TOKEN": "0" * 64}
    refused = subprocess.run([RAY, "job", "list", "--address", cluster["dashboard"]], env=no_token,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0

    data_dir = tmp_path / "data"
    tiny_dataset().save(data_dir)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings()))
    out = tmp_path / "out"
    sub_id = f"waddington-test-{secrets.token_hex(4)}"
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO),
         "--submission-id", sub_id, "--no-wait", "--",
         "python", "-m", "experiments.cli", "sweep", "--config", str(cfg), "--data", str(data_dir),
         "--kl-radius", "0.01,0.02", "--clip", "0.2", "--output", str(out), "--quiet"],
        env=cluster["env"], capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]

    # Wait for a terminal state, asking the job API with the same token the CLI uses.
    wait = subprocess.run(
        [sys.executable, "-c",
         "import sys, time\n"
         "from ray.job_submission import JobSubmissionClient\n"
         "c = JobSubmissionClient(sys.argv[1])\n"
         "deadline = time.time() + 600\n"
         "while time.time() < deadline:\n"
         "    s = str(c.get_job_status(sys.argv[2])).split('.')[-1]\n"
         "    if s in ('SUCCEEDED', 'FAILED', 'STOPPED'):\n"
         "        break\n"
         "    time.sleep(2)\n"
         "print(s)\n",
         cluster["dashboard"], sub_id],
        env=cluster["env"], capture_output=True, text=True, timeout=700,
    )
    status = wait.stdout.strip().splitlines()[-1] if wait.stdout.strip() else wait.stderr[-2000:]
    logs = subprocess.run([RAY, "job", "logs", "--address", cluster["dashboard"], sub_id],
                          env=cluster["env"], capture_output=True, text=True, timeout=60).stdout
    assert status == "SUCCEEDED", logs[-4000:]

    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["num_trials"] == 2 and all(t["error"] is None for t in summary["trials"])
    used = {t["node_id"] for t in summary["trials"]}
    assert used == node_ids, (used, node_ids)
    assert all(t["handoff_max_abs_diff"] <= 1e-6 and t["ppo_weight_change_l2"] > 0 for t in summary["trials"])
