"""docs/cli.md names every command and every option of `regspec COMMAND --help` in that command's
section, and options it names exist (the page cannot drift from the parser either way)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from regspec.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "cli.md").read_text()


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _sections() -> dict[str, str]:
    """The text under each `## `regspec COMMAND ...`` heading."""
    parts = re.split(r"^## `regspec (\w+)[^`]*`$", PAGE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_has_a_section_listing_each_of_its_options() -> None:
    sections = _sections()
    commands = _commands()
    assert set(sections) == set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                assert re.search(rf"`{re.escape(option)}\b", sections[name]), f"regspec {name} {option}"


def test_options_on_the_page_exist() -> None:
    sections = _sections()
    for name, parser in _commands().items():
        known = {o for a in parser._actions for o in a.option_strings}
        text = sections[name].split("The generated trainer takes")[0]  # the trainer's own options
        for option in re.findall(r"`(--?[a-z][\w-]*)", text):
            assert option in known, f"docs/cli.md: regspec {name} has no option {option}"
