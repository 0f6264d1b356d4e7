"""The ``waddington`` command line: one parser layer, shared options and errors, one small module per subcommand."""

from experiments.cli.main import main

__all__ = ["main"]
