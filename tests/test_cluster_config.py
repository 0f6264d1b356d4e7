"""cluster.yaml is a valid Ray cluster-launcher config (checked offline against Ray's schema)."""

from __future__ import annotations

import copy

import pytest
import yaml

from helpers import REPO


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_ray_schema(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)  # raises on any schema violation
    types = config["available_node_types"]
    head = config["head_node_type"]
    workers = [t for t in types if t != head]
    assert config["provider"]["type"] in ("aws", "gcp", "azure")
    assert head in types and workers
    # sensible autoscaling bounds
    assert 0 < config["max_workers"] <= 100
    for t in workers:
        assert 0 <= types[t]["min_workers"] <= types[t]["max_workers"] <= config["max_workers"]
        assert types[t]["resources"]["CPU"] >= 1
    # the project gets installed on every node, and the nodes start Ray with token auth
    assert any("pip install" in c and "waddington-rl" in c for c in config["setup_commands"])
    assert "~/waddington-rl" in config["file_mounts"]
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands",
                                                                         "worker_start_ray_commands"))


def test_schema_check_catches_a_broken_config(raw):
    """The validation used above really rejects bad configs (not a no-op)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["cpu_worker"]["min_workers"] = "many"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(bad))
