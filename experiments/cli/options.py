"""Command-line options shared by the subcommands, and the parsers of their comma-separated values."""

from __future__ import annotations

import argparse

__all__ = [
    "csv_list", "int_list", "float_list", "add_data_options", "add_run_options", "add_ray_options", "OPTION_TO_SETTING",
]


def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in text.split(",") if x.strip()]


def int_list(text: str) -> list[int]:
    """Comma-separated integers."""
    try:
        return [int(x) for x in csv_list(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def float_list(text: str) -> list[float]:
    """Comma-separated numbers."""
    try:
        return [float(x) for x in csv_list(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def sweep_axis(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...``: a setting and the values a sweep tries; ``64x64`` is the list ``[64, 64]``."""
    import yaml

    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2 (e.g. fcnet_hiddens=64x64,128x128), got {text!r}")

    def parse(token: str):
        parts = token.split("x")
        if len(parts) > 1 and all(part.isdigit() for part in parts):
            return [int(part) for part in parts]  # layer sizes
        for number in (int, float):  # before YAML, which reads 3e-4 as a string
            try:
                return number(token)
            except ValueError:
                pass
        return yaml.safe_load(token)

    return key.strip().replace("-", "_"), [parse(token) for token in csv_list(values)]


#: Command-line option (argparse dest) -> two-stage setting it overrides.
OPTION_TO_SETTING = {
    "data": "data",
    "perturbation_key": "perturbation_key",
    "control_value": "control_value",
    "ignore": "ignore_values",
    "layer": "layer",
    "input_kind": "input_kind",
    "split": "split",
    "holdout": "holdout",
    "group_key": "group_key",
    "covariate_keys": "covariate_keys",
    "set_separator": "set_separator",
    "set_composition": "set_composition",
    "test_fraction": "test_fraction",
    "trpo_iters": "trpo_iters",
    "ppo_iters": "ppo_iters",
    "seed": "seed",
    "train_batch_size": "train_batch_size",
    "num_env_runners": "num_env_runners",
    "num_envs_per_env_runner": "num_envs_per_env_runner",
    "n_latent": "n_latent",
}


def add_ray_options(group) -> None:
    """``--address``, ``--num-cpus`` and ``--quiet``: where to run and how much to print."""
    group.add_argument("--address", help="Ray cluster address (host:port, 'auto'); default: $RAY_ADDRESS or a new "
                       "local Ray")
    group.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (default: all)")
    group.add_argument("--quiet", "-q", action="store_true", help="less progress output")


def add_data_options(parser: argparse.ArgumentParser, *, data_help: str) -> None:
    """The data options every command that reads data shares (YAML: the same keys, snake_case)."""
    g = parser.add_argument_group("data (YAML keys: data, perturbation_key, control_value, ignore_values, layer, "
                                  "input_kind, n_latent, split, holdout, group_key, covariate_keys, test_fraction, set_separator, "
                                  "set_composition)")
    g.add_argument("--data", help=data_help)
    g.add_argument("--perturbation-key", help="obs column with perturbation labels (real data)")
    g.add_argument("--control-value", help="control label in that column (real data)")
    g.add_argument("--ignore", type=csv_list, metavar="A,B", help="labels to drop first, e.g. unassigned (default: none)")
    g.add_argument("--layer", help="layer holding the expression (default: X)")
    g.add_argument("--input-kind", choices=["counts", "log-normalized"], help="what X (or --layer) holds: raw "
                   "counts (default; normalized and log1p'd here) or log-normalized expression (used as is)")
    g.add_argument("--n-latent", type=int, help="latent dimension (default 8)")
    g.add_argument("--split", choices=["cells", "perturbations", "group"], help="held-out cells (default), "
                   "perturbations (--holdout A,B) or group (--group-key KEY --holdout VALUE)")
    g.add_argument("--holdout", type=csv_list, metavar="A,B", help="held-out perturbations or group value")
    g.add_argument("--group-key", help="obs column of the groups (e.g. cell_type) for --split group")
    g.add_argument("--covariate-keys", type=csv_list, metavar="A,B", help="obs columns (cell type, donor, batch) "
                   "within which controls are paired with perturbed cells (default: none; a group split's "
                   "--group-key always is one)")
    g.add_argument("--test-fraction", type=float, help="held-out fraction of cells (default 0.2)")
    g.add_argument("--set-separator", metavar="SEP", help="joins the members of a set in a label, e.g. KLF1+MAP2K6 "
                   "(default '+'; A+<control> is A); 'none': every label is one perturbation (docs/sets.md)")
    g.add_argument("--set-composition", choices=["additive", "sequential"], help="how a set never observed composes "
                   "its members' per-cell hints (default sequential, chosen on synthetic sets; docs/sets.md)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of every training command (train, sweep): data, schedule, sampling, output, Ray."""
    add_data_options(parser, data_help="'synthetic' (default) or a path to an .h5ad file / prepared dataset directory")
    g = parser.add_argument_group("run")
    g.add_argument("--config", metavar="YAML", help="YAML file of settings (keys as in "
                   "experiments.training.settings.TwoStageSettings); command-line options override it")
    g.add_argument("--trpo-iters", type=int, help="TRPO iterations (stage 1)")
    g.add_argument("--ppo-iters", type=int, help="PPO iterations (stage 2)")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--train-batch-size", type=int, help="env steps per iteration (both stages)")
    g.add_argument("--num-env-runners", type=int, help="remote env runners per run (0: sample in the trainer)")
    g.add_argument("--num-envs-per-env-runner", type=int, help="vectorized envs per env runner")
    g.add_argument("--output", "-o", metavar="DIR", help="output directory (default: runs/<command>-<time>); for a "
                   "multi-node sweep without a shared filesystem, a storage URI such as s3://bucket/path")
    add_ray_options(g)
