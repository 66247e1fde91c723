"""Every command the manual shows at least parses, so that the manual cannot drift from the code.

The manual is README.md, docs/*.md and benchmarks/README.md. Checked: each line of a ```bash block, and each
inline code span that starts with a checked command. ``clickstream SUB ...``: SUB's ``--help`` works and every
``--option`` on the line is one of SUB's; ``python -m benchmarks NAME ...``: NAME is a benchmark and every
``--option`` is in its ``--help``; ``make TARGET...``: each target is in the Makefile. Words in capitals (``LOG``,
``NAME``) are placeholders.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from benchmarks.__main__ import NAMES
from cli.main import main
from tests.conftest import REPO

MANUAL = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
SEPARATORS = {"&&", "||", ";", "|", "&"}
OPTION = re.compile(r"--[A-Za-z][\w-]*")


def commands(text: str) -> list[tuple[str, bool]]:
    """(command, from a bash block) for every line of the ```bash blocks, continuation lines joined, and every
    inline code span outside the blocks."""
    found = [(line, True) for lang, body in FENCE.findall(text) if lang == "bash"
             for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    return found + [(span, False) for span in INLINE.findall(FENCE.sub("", text))]


def placeholder(word: str) -> bool:
    return word.strip(".[]").isupper()


@functools.cache
def makefile_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


@functools.cache
def clickstream_options(sub: str | None) -> frozenset[str] | None:
    """The options of ``clickstream SUB`` (of the group for None), once its --help has run; None: no such command."""
    command = main if sub is None else main.commands.get(sub)
    if command is None:
        return None
    result = CliRunner().invoke(main, [*([sub] if sub else []), "--help"])
    assert result.exit_code == 0, f"clickstream {sub or ''} --help failed: {result.output}"
    params = command.get_params(click.Context(command, info_name=sub))
    return frozenset(opt for p in params for opt in (*p.opts, *p.secondary_opts))


@functools.cache
def benchmark_options(name: str) -> frozenset[str]:
    """The options in ``python -m benchmarks NAME --help``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        importlib.import_module(f"benchmarks.{name}").main(["--help"])
    assert exited.value.code in (0, None), f"python -m benchmarks {name} --help failed"
    return frozenset(OPTION.findall(out.getvalue()))


def options_in(words: list[str]) -> list[str]:
    return [w.strip("[]").split("=")[0] for w in words if OPTION.fullmatch(w.strip("[]").split("=")[0])]


def check(command: str, strict_syntax: bool = True) -> tuple[list[str], list[str]]:
    """(what was checked, problems) for one command line; lines of other commands are not checked."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:  # unbalanced quotes
        return [], [f"{command!r} does not parse: {exc}"] if strict_syntax else []
    checked: list[str] = []
    problems: list[str] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        words = segment
        segment = []
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):  # VAR=value before the command
            words = words[1:]
        if not words:
            continue
        program = Path(words[0]).name
        if program == "clickstream":
            sub = words[1] if len(words) > 1 and not words[1].startswith("-") else None
            if sub is not None and placeholder(sub):
                continue
            known = clickstream_options(sub)
            name = f"clickstream {sub or ''}".strip()
            checked.append(name)
            if known is None:
                problems.append(f"{command!r}: no command {name!r}")
                continue
            problems += [f"{command!r}: {name} has no option {o}" for o in options_in(words[1:]) if o not in known]
        elif program.startswith("python") and words[1:3] == ["-m", "benchmarks"]:
            name = words[3] if len(words) > 3 else None
            if name is None or placeholder(name):
                continue
            checked.append(f"benchmarks {name}")
            if name != "all" and name not in NAMES:
                problems.append(f"{command!r}: no benchmark {name!r} (benchmarks.__main__.NAMES)")
                continue
            if name != "all":
                known = benchmark_options(name) | {"--help"}
                problems += [f"{command!r}: benchmark {name} has no option {o}"
                             for o in options_in(words[4:]) if o not in known]
        elif program == "make":
            for target in (w for w in words[1:] if not w.startswith("-") and "=" not in w):
                checked.append(f"make {target}")
                if target not in makefile_targets():
                    problems.append(f"{command!r}: no Makefile target {target!r}")
    return checked, problems


def check_text(text: str) -> tuple[list[str], list[str]]:
    checked: list[str] = []
    problems: list[str] = []
    for command, in_block in commands(text):
        c, p = check(command, strict_syntax=in_block)
        checked += c
        problems += p
    return checked, problems


@pytest.mark.parametrize("page", MANUAL, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_in_the_manual_parses(page: Path) -> None:
    checked, problems = check_text(page.read_text())
    assert not problems, "\n".join(problems)


def test_the_manual_shows_the_commands_a_newcomer_runs() -> None:
    checked = {c for page in MANUAL for c in check_text(page.read_text())[0]}
    assert {"make demo", "make test", "make install", "make kafka-up", "clickstream topics", "clickstream train",
            "clickstream evaluate", "clickstream replay", "clickstream subscribe"} <= checked


@pytest.mark.parametrize("line, problem", [
    ("clickstream train LOG.csv --format taobao --no-such-option 3", "train has no option --no-such-option"),
    (".venv/bin/clickstream subscribe --table --tabel", "subscribe has no option --tabel"),
    ("clickstream evaluate --model=m --splitt none LOG.csv", "evaluate has no option --splitt"),
    ("clickstream predict --model m", "no command 'clickstream predict'"),
    ("python -m benchmarks warp-speed", "no benchmark 'warp-speed'"),
    ("CLICKSTREAM_DEMAND=0 .venv/bin/python -m benchmarks throughput --clickz 10", "throughput has no option --clickz"),
    ("make install deploy-everything", "no Makefile target 'deploy-everything'"),
])
def test_the_checker_catches_a_made_up_command_or_option(line: str, problem: str) -> None:
    checked, problems = check_text(f"Run this:\n\n```bash\n{line}\n```\n")
    assert checked and len(problems) == 1 and problem in problems[0], problems


def test_the_checker_reads_inline_commands_and_continued_lines() -> None:
    text = ("Use `clickstream demand [--size 60] [--chart F]` or `clickstream audience --no-user`.\n\n"
            "```bash\nclickstream replay LOG.csv \\\n    --sped 60x   # clickstream produce --not-checked\n```\n")
    checked, problems = check_text(text)
    assert checked == ["clickstream replay", "clickstream demand", "clickstream audience"]
    assert [p.split(": ", 1)[1] for p in problems] == ["clickstream replay has no option --sped",
                                                       "clickstream audience has no option --no-user"]
