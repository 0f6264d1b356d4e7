"""``waddington``: the command-line entry point; builds the parser from the subcommand modules and runs one.

Each subcommand is a small module (``prepare``, ``train``, ``sweep``, ``evaluate``, ``predict``) with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Every input is checked before training starts
-- unknown options (argparse), settings out of range, a sweep grid with invalid values, data that
fails validation, a cluster address that does not answer -- and reported as one
``waddington COMMAND: error: ...`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from experiments.cli import design, evaluate, predict, prepare, sweep, train
from experiments.cli.errors import UsageError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: The subcommand modules, in ``--help`` order.
SUBCOMMANDS = {module.NAME: module for module in (prepare, train, sweep, evaluate, predict, design)}


def build_parser() -> argparse.ArgumentParser:
    """The ``waddington`` parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="waddington",
        description="Steer single cells across a learned Waddington landscape: TRPO -> PPO with Ray RLlib/Tune.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS.values():
        module.add_arguments(sub.add_parser(module.NAME, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # unknown options: argparse prints usage + error, exit 2
    args.argv = argv  # what the user typed, recorded in outputs
    try:
        return int(SUBCOMMANDS[args.command].run(args) or 0)
    except UsageError as exc:
        print(f"waddington {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # one line, no traceback; a subcommand sets ``args.resume_hint`` once it has something to resume
        _stop_ray()
        hint = getattr(args, "resume_hint", None)
        print(f"waddington {args.command}: interrupted" + (f"; resume with `{hint}`" if hint else ""),
              file=sys.stderr)
        return 130


def _stop_ray() -> None:
    """Shut down the Ray this process started or joined, so no worker outlives an interrupt."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
