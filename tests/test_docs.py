"""The documentation stays true: ``docs/cli.md`` is what the parser renders, and every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.cli.reference import REGENERATE, render

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

#: ``[text](target)`` and ``![alt](target)``; the target ends at whitespace or the closing bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: Fenced code blocks, whose brackets are code, not links.
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def relative_links(path: Path) -> list[str]:
    """Targets of the markdown links in ``path`` that point into the repository (no URL; ``#anchor`` is
    a heading of ``path`` itself)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto:, ...
        targets.append(target)
    return targets


def test_cli_reference_matches_the_parser():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/cli.md is out of date with the parser; regenerate it: {REGENERATE}"


def test_cli_reference_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render()
    monkeypatch.setenv("COLUMNS", "300")
    assert render() == narrow


def test_cli_reference_names_every_option():
    from experiments.cli.main import SUBCOMMANDS, build_parser

    text = render()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and set(a.choices) == set(SUBCOMMANDS))
    for name, sub in subparsers.choices.items():
        assert f"## `waddington {name}`" in text
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, f"{name} {option} missing from the reference"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file (lower case, punctuation dropped, spaces to
    hyphens, repeats numbered)."""
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    missing = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part) if file_part else doc
        if not path.exists():
            missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to files or headings that do not exist: {missing}"


def test_anchor_slugs_follow_github(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# The environment (`waddington/CellState-v0`)\n## Does TRPO's start beat PPO?\n"
                    "## Notes\n## Notes\n")
    assert anchors(page) == {"the-environment-waddingtoncellstate-v0", "does-trpos-start-beat-ppo", "notes", "notes-1"}


def test_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [a](docs/a.md#x) and ![img](images/p.png), not `[b](b.md)` or [web](https://x.org)\n"
                    "```\n[c](c.md)\n```\n[anchor](#here)\n")
    assert relative_links(page) == ["docs/a.md#x", "images/p.png", "#here"]
