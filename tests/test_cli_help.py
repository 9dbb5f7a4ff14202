"""`--help` of every command and subcommand of jigd, jigctl and jigsim reads right: no `%%`
left by argparse's formatting, and every option and argument says what it is for."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator, Sequence

import pytest

from jigd.cli import main as jigd_main
from jigd.ctl import main as jigctl_main
from sim.cli import main as jigsim_main

Main = Callable[[Sequence[str]], int]
CLIS: dict[str, Main] = {"jigd": jigd_main, "jigctl": jigctl_main, "jigsim": jigsim_main}

# An entry of a help section: "  -x, --name VALUE   its help" or a subcommand "    name  help".
_ENTRY = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")


def help_text(main: Main, words: Sequence[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as caught:
        main([*words, "--help"])
    assert caught.value.code == 0
    return out.getvalue()


def sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """Each `title:` section of a help text with its lines."""
    title, lines = "", list[str]()
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            yield title, lines
            title, lines = line[:-1], []
        else:
            lines.append(line)
    yield title, lines


def subcommands(text: str) -> list[str]:
    """The subcommands a help text lists (under its COMMAND or ACTION argument)."""
    return [
        line.split()[0]
        for title, lines in sections(text)
        if title == "positional arguments"
        for line in lines
        if re.match(r"^    [a-z]", line)
    ]


def undocumented(text: str) -> list[str]:
    """Options and arguments of a help text that have no help of their own."""
    found = []
    for title, lines in sections(text):
        if title in ("", "usage") or not lines:
            continue
        for i, line in enumerate(lines):
            entry = _ENTRY.match(line)
            if entry is None or line.startswith("    "):
                continue
            follows = i + 1 < len(lines) and lines[i + 1].startswith(" " * 8)
            if (
                entry.group(2) is None
                and not follows
                and entry.group(1) not in ("COMMAND", "ACTION")
            ):
                found.append(entry.group(1))
    return found


def every_command(name: str) -> Iterator[tuple[str, str]]:
    """(command line, help text) of a CLI and each of its subcommands, depth first."""
    todo: list[list[str]] = [[]]
    while todo:
        words = todo.pop()
        text = help_text(CLIS[name], words)
        yield " ".join([name, *words]), text
        todo.extend([*words, sub] for sub in subcommands(text))


@pytest.mark.parametrize("name", sorted(CLIS))
def test_every_help_has_no_double_percent_and_documents_every_option(name: str) -> None:
    seen = []
    problems = []
    for command, text in every_command(name):
        seen.append(command)
        if "%%" in text:
            problems.append(f"{command}: %% in its help")
        problems.extend(f"{command}: {entry} has no help" for entry in undocumented(text))
    assert len(seen) > 3, seen  # the subcommands were found
    assert problems == []


def test_the_walk_finds_what_it_looks_for() -> None:
    """The checks above can fail: an option without help and a `%%` are found."""
    text = "usage: x\n\noptions:\n  -h, --help  show\n  --seed SEED\n  --out DIR   where 2%%\n"
    assert undocumented(text) == ["--seed SEED"]
    assert subcommands("positional arguments:\n  COMMAND\n    keys  k\n    serve  s\n") == [
        "keys",
        "serve",
    ]
