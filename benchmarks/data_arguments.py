"""The data options the accuracy benchmarks share, spelled as ``waddington evaluate`` spells them."""

from __future__ import annotations

import argparse
from typing import Any


def split_list(text: str | None) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]`` (empty for ``None`` or ``""``)."""
    return [v for v in (text or "").split(",") if v]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data options: ``--data``, ``--perturbation-key``, ``--control-value``, ``--ignore``,
    ``--split``, ``--holdout`` and ``--group-key``."""
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--perturbation-key")
    parser.add_argument("--control-value")
    parser.add_argument("--ignore", default="", help="labels to drop first (A,B)")
    parser.add_argument("--split", default="cells", choices=("cells", "perturbations", "group"))
    parser.add_argument("--holdout", default="", help="held-out perturbations (A,B) or group value")
    parser.add_argument("--group-key")


def prepare_from_arguments(args: argparse.Namespace, **options: Any):
    """The dataset ``waddington evaluate`` would prepare from these options.

    ``options`` are more :func:`envs.prepare_dataset` keywords (``n_latent``, ``seed``, ...).
    """
    import envs

    holdout = [args.holdout] if args.split == "group" else split_list(args.holdout)
    return envs.prepare_dataset(args.data, perturbation_key=args.perturbation_key, control_value=args.control_value,
                                split=args.split, holdout=holdout, group_key=args.group_key,
                                ignore_values=split_list(args.ignore), **options)


def unseen_split_arguments(description: str, default_out: str) -> argparse.Namespace:
    """Parse the data options plus ``--seeds`` and ``--out`` for a benchmark judged on unseen perturbations only.

    Refuses any split other than ``--split perturbations`` (one clear error).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--seeds", default="0", help="seeds (A,B): each prepares the data again")
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args()
    if args.split != "perturbations":
        parser.error("this benchmark is judged on unseen perturbations: use --split perturbations --holdout A,B")
    return args
