"""The CLI reference (``docs/cli.md``), rendered from the parser itself so it cannot drift.

Run ``python -m experiments.cli.reference > docs/cli.md`` after changing any flag;
``tests/test_docs.py`` fails while the committed file differs from what this renders.

The text depends only on the parser: usage lines are wrapped at :data:`WIDTH` columns whatever the
terminal (argparse's own formatter reads ``$COLUMNS``; here its width is fixed), subcommands come
in ``--help`` order and options in the order they were added.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

__all__ = ["WIDTH", "REGENERATE", "render", "main"]

#: Column at which usage lines wrap (independent of the terminal).
WIDTH = 100

#: The command that rewrites ``docs/cli.md``.
REGENERATE = "python -m experiments.cli.reference > docs/cli.md"


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` format its usage at :data:`WIDTH` columns, not at the terminal's width."""

    def formatter(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=WIDTH)

    parser.formatter_class = formatter


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of ``parser`` by name, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    """``text`` made safe for one markdown table cell (pipes, angle brackets, line breaks)."""
    return (" ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An action's help with argparse's ``%(default)s``-style fields filled in."""
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _default(action: argparse.Action) -> str:
    """How the default of one option is shown: ``required``; flags ``off``; ``None`` (the value comes
    from the run settings or is absent; the help says which) a dash."""
    if action.required:
        return "required"
    if action.nargs == 0:
        return "off" if not action.default else "on"
    value = action.default
    if value is None or value is argparse.SUPPRESS:
        return "–"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value) or "none"
    return f"`{value}`"


def _names(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option strings (long name first, then aliases) and the value it takes, as ``--help`` shows it."""
    names = sorted(action.option_strings, key=lambda s: (not s.startswith("--"), s))
    shown = ", ".join(f"`{name}`" for name in names)
    if action.nargs == 0:
        return shown
    value = parser._get_formatter()._format_args(action, action.dest.upper())
    return f"{shown} `{value}`"


def _groups(parser: argparse.ArgumentParser) -> Iterator[tuple[str, list[argparse.Action]]]:
    """Each argument group's title and its documented options (``--help`` and positionals aside)."""
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.option_strings and a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if actions:
            yield group.title or "options", actions


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Positional arguments of ``parser`` (subcommand choosers excluded)."""
    return [a for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
            and a.help is not argparse.SUPPRESS]


def _render_command(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """The markdown section of one subcommand: description, usage, one table per option group."""
    _fixed_width(parser)
    lines = [f"## `waddington {name}`", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    positionals = _positionals(parser)
    if positionals:
        lines += ["| argument | help |", "|---|---|"]
        lines += [f"| `{a.metavar or a.dest}` | {_cell(_expanded_help(parser, a))} |" for a in positionals]
        lines.append("")
    for title, actions in _groups(parser):
        lines += [f"**{_cell(title)}**", "", "| option | default | help |", "|---|---|---|"]
        lines += [f"| {_names(parser, a)} | {_default(a)} | {_cell(_expanded_help(parser, a))} |" for a in actions]
        lines.append("")
    return lines


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole CLI reference as markdown.

    Parameters
    ----------
    parser
        The ``waddington`` parser; default: a fresh
        :func:`experiments.cli.main.build_parser`.

    Returns
    -------
    str
        ``docs/cli.md``: an index of the subcommands, then one section each (usage, and every
        option with its aliases, value, argparse default and help). Ends with one newline.
    """
    if parser is None:
        from experiments.cli.main import build_parser

        parser = build_parser()
    _fixed_width(parser)
    commands = _subcommands(parser)
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    lines = [
        "# CLI reference",
        "",
        f"<!-- Generated from the parser by `{REGENERATE}`; do not edit by hand. -->",
        "",
        " ".join((parser.description or "").split()),
        "",
        "Every command also takes `-h`/`--help`. In the tables, *default* is argparse's own default: a",
        "dash means the value comes from the run settings (`TwoStageSettings`, or a prepared",
        "dataset's own settings) or is not set, and the help states the effective default.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#waddington-{name}) | {_cell(helps.get(name, ''))} |" for name in commands]
    lines.append("")
    for name, sub in commands.items():
        lines += _render_command(name, sub)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write :func:`render`'s markdown to standard output; returns the exit status (0)."""
    del argv
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
