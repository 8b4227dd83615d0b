"""The documentation cannot drift from the code: docs/commands.md lists every flag of
every subcommand (and none that does not exist), the README's set-up commands exist in
the Makefile, and `.ci/run` runs exactly the README's test command."""

import re
from pathlib import Path

import click
import pytest

from charrnn.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS_PAGE = ROOT / "docs" / "commands.md"


def documented_flags() -> dict[str, set[str]]:
    """{subcommand: the flags in the first column of its section's table}."""
    sections, current = {}, None
    for line in COMMANDS_PAGE.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## charrnn (\w+)", line.strip())
        if heading:
            current = sections.setdefault(heading.group(1), set())
        elif current is not None and line.startswith("|"):
            first_cell = line.split("|")[1]
            current.update(re.findall(r"`(--?[\w-]+)`", first_cell))
        elif line.startswith("## "):
            current = None
    return sections


def declared_flags(command: click.Command) -> set[str]:
    return {flag for param in command.params if isinstance(param, click.Option)
            for flag in (*param.opts, *param.secondary_opts)} - {"-h", "--help"}


def test_every_subcommand_has_a_section():
    assert set(documented_flags()) == set(cli.commands)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_the_commands_page_lists_exactly_the_flags_of_each_subcommand(name):
    documented, declared = documented_flags().get(name, set()), declared_flags(cli.commands[name])
    assert declared - documented == set(), f"undocumented flags of charrnn {name}"
    assert documented - declared == set(), f"documented flags charrnn {name} does not have"


def test_the_documentation_check_can_see_a_missing_flag():
    # The parser must find flags at all: an empty page would pass the checks above.
    assert {"--output", "-o", "--time-limit"} <= documented_flags()["train"]


def test_ci_runs_the_readmes_test_command_and_the_readme_names_both_set_up_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make demo" in readme
    commands = [line for line in ci.splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^demo:", makefile, re.M)


def test_every_docs_page_the_readme_links_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert links, "the README links no docs/ page"
    assert [link for link in links if not (ROOT / link).exists()] == []
