"""The ``openraft-py`` commands the docs print name verbs and flags the command line has, and
the links of the pages mkdocs does not build lead somewhere.

The docs tests run the code blocks that can run here; these checks cover what they cannot:

- Every ``openraft-py`` command of README.md, ``docs/`` (the design notes excepted) and the
  examples' READMEs, in any code block (run, ``not-run``, ``text`` or untagged: the
  three-machine blocks, an operator's procedure) and in the prose's backticked spans
  (``openraft-py cluster up -n 3``, ``cluster members --voters 2,3,4``), is parsed against
  ``openraft_py.kv.cli.build_parser()``: each verb must exist, and each flag must be one of
  that verb's options (so its ``--help`` lists it). A renamed or removed flag, or a flag
  given to the wrong verb, fails here even in a block that never runs.
- The same for every ``python`` command of those pages that runs a script of the repository
  (``python bench/tcp.py --writers 1,256``, ``python examples/X/main.py node --id 1``) or a
  module of the package (``python -m openraft_py.testing.sim --seeds 200 --skew 0.05``): each
  flag it gives must be in that program's ``--help`` (asked once per program, and only of
  programs given flags: a demo without flags runs when asked for help).
- README.md and the examples' READMEs are not part of the mkdocs site, whose ``--strict``
  build checks the links of ``docs/``: their relative links must lead to a file of the
  repository and their ``#anchors`` to a heading of the Markdown file they name.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from openraft_py.kv.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.skipif(
    not (ROOT / "mkdocs.yml").exists(), reason="the docs are not next to the tests (installed-package run)"
)


def pages() -> list[Path]:
    """README.md, the user guide (``docs/`` but its design notes) and the examples' READMEs."""
    guide = [p for p in DOCS.rglob("*.md") if DOCS / "design" not in p.parents]
    return sorted([ROOT / "README.md", *guide, *(ROOT / "examples").rglob("*.md")])


@dataclass(frozen=True)
class Command:
    """One ``openraft-py`` command printed by a page: its words after ``openraft-py``."""

    page: Path
    line: int  # 1-based
    words: list[str]

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: openraft-py {' '.join(self.words)}"


_FENCE = re.compile(r"^\s*```")
_SPAN = re.compile(r"`([^`\n]+)`")
# What ends a command on a shell line: a comment, a pipe, a redirection, a list operator.
_END = re.compile(r"^(#.*|\|.*|&.*|;.*|\d?>.*|<.*|\).*)$")


def _words(text: str) -> list[str]:
    """The shell words of ``text`` up to the first comment, pipe, redirection or list operator."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in a synopsis: take the words as they are
        tokens = text.split()
    words: list[str] = []
    for token in tokens:
        if _END.match(token):
            break
        words.append(token)
    return words


def commands_of(page: Path) -> list[Command]:
    """Every ``openraft-py`` command of ``page``: in code blocks, each line (``\\``-continued
    lines joined) from ``openraft-py`` on; in prose, each backticked span that starts with
    ``openraft-py``, or with ``cluster`` or ``kv`` and one of their verbs."""
    text = page.read_text()
    lines = text.splitlines()
    found: list[Command] = []
    in_block = False
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i
        if _FENCE.match(line):
            in_block = not in_block
        elif in_block:
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            for m in re.finditer(r"(?:^|[\s(;&|])openraft-py\s+(.*)", line):
                found.append(Command(page, start + 1, _words(m.group(1))))
        else:
            for m in _SPAN.finditer(line):
                span = m.group(1).strip()
                if span.startswith("openraft-py "):
                    found.append(Command(page, start + 1, _words(span[len("openraft-py ") :])))
                elif re.match(r"(cluster|kv) [a-z]", span):
                    found.append(Command(page, start + 1, _words(span)))
        i += 1
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def check_command(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with ``openraft-py WORDS`` for ``parser`` (empty: nothing).

    The verbs are followed down the subparsers (``put|get`` names several, each checked);
    after the last verb every word that starts with ``-`` must be an option of that verb
    (``--flag=value`` counts as ``--flag``). A verb written in capitals (``VERB``) is a
    placeholder: the command is not checked further. Values and positionals are not checked."""
    problems: list[str] = []
    verbs = _subparsers(parser)
    rest = list(words)
    while verbs and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        if word.isupper():
            return problems
        names = word.strip("[]").split("|")
        unknown = [n for n in names if n not in verbs]
        if unknown:
            return [f"no verb {', '.join(map(repr, unknown))} (the verbs: {', '.join(sorted(verbs))})"]
        if len(names) > 1:
            for name in names:
                problems += check_command(rest, verbs[name])
            return problems
        parser = verbs[word]
        verbs = _subparsers(parser)
    options = _options(parser)
    for word in rest:
        if word == "--":  # (the words after it are keys and values, as argparse reads them)
            break
        flag = word.strip("[]").split("=", 1)[0]
        if flag.startswith("-") and flag not in ("-", "--") and not re.fullmatch(r"-\d[\d.]*", flag):
            if flag not in options:
                problems.append(f"no option {flag} (its options: {', '.join(sorted(options))})")
    return problems


def test_every_printed_command_names_real_verbs_and_flags() -> None:
    parser = build_parser()
    commands = [c for page in pages() for c in commands_of(page)]
    bad = [f"{c.where()}\n    {p}" for c in commands for p in check_command(c.words, parser)]
    assert not bad, "commands the docs print that openraft-py does not take:\n" + "\n".join(bad)
    # The extraction found the commands of the three-machine blocks and of the prose.
    printed = {" ".join(c.words[:2]) for c in commands}
    assert {"serve --id", "cluster init", "cluster add-learner", "cluster force-recover", "kv put"} <= printed
    assert len(commands) > 80, len(commands)


def test_the_command_check_sees_wrong_verbs_and_flags(tmp_path: Path) -> None:
    parser = build_parser()
    assert check_command(["cluster", "members", "--voters", "2,3,4", "--retain"], parser) == []
    assert check_command(["kv", "put|get|delete|cas"], parser) == []
    assert check_command(["serve", "--tls-cert", "F", "--tls-key", "F", "[--tls-ca", "F]"], parser) == []
    assert check_command(["VERB", "--anything"], parser) == []
    assert check_command(["kv", "put", "--", "KEY", "-x"], parser) == []
    assert check_command(["cluster", "up", "-n", "3"], parser) == []
    assert check_command(["--version"], parser) == []
    wrong_verb = check_command(["cluster", "join"], parser)
    assert len(wrong_verb) == 1 and "no verb 'join'" in wrong_verb[0]
    # A flag of another verb: --allow-lagging is cluster members', not add-learner's.
    wrong_flag = check_command(["cluster", "add-learner", "--id", "4", "--allow-lagging"], parser)
    assert len(wrong_flag) == 1 and "no option --allow-lagging" in wrong_flag[0]
    assert check_command(["kv", "put|got"], parser)[0].startswith("no verb 'got'")
    page = tmp_path / "page.md"
    page.write_text(
        "Run `openraft-py cluster up -n 3`, then `cluster transfer --to 2`; not `cluster`.\n"
        "<!-- not-run: a synopsis -->\n"
        "```sh\n"
        "$ openraft-py kv get K --consistency local 2>&1 | head -1   # a comment --nope\n"
        "openraft-py cluster add-learner --id 4 \\\n"
        "    --raft-addr H:P --http-addr H:P\n"
        "```\n"
    )
    assert [(c.line, c.words) for c in commands_of(page)] == [
        (1, ["cluster", "up", "-n", "3"]),
        (1, ["cluster", "transfer", "--to", "2"]),
        (4, ["kv", "get", "K", "--consistency", "local"]),
        (5, ["cluster", "add-learner", "--id", "4", "--raft-addr", "H:P", "--http-addr", "H:P"]),
    ]


# ``python -m openraft_py.X ...`` or ``python bench/x.py ...`` (``.venv/bin/python`` too).
_PROGRAM = re.compile(r"(?:^|[\s`(])(?:\S*/)?python3?\s+(-m\s+openraft_py[\w.]*|(?:bench|examples)/[\w./-]+\.py)(.*)")


def program_commands(page: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, program, words)`` of every ``python`` command of ``page`` that runs a module of
    the package or a script under ``bench/`` or ``examples/``, in code blocks (``\\``-continued
    lines joined) and in backticked spans; ``program`` is ``-m module`` or the script's path."""
    found: list[tuple[int, str, list[str]]] = []
    lines = page.read_text().splitlines()
    in_block = False
    i = 0
    while i < len(lines):
        line, start = lines[i], i
        if _FENCE.match(line):
            in_block = not in_block
            i += 1
            continue
        if in_block:
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            texts = [line]
        else:
            texts = [m.group(1) for m in _SPAN.finditer(line)]
        for text in texts:
            for m in _PROGRAM.finditer(text):
                found.append((start + 1, " ".join(m.group(1).split()), _words(m.group(2))))
        i += 1
    return found


def help_flags(program: str, subcommand: str | None) -> set[str]:
    """The flags named in ``python PROGRAM [SUBCOMMAND] --help``'s output (run from the
    repository root with this interpreter)."""
    argv = [sys.executable, *program.split(), *([subcommand] if subcommand else []), "--help"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (argv, out.stderr[-2000:])
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out.stdout))


def test_every_printed_python_program_takes_its_flags() -> None:
    asked: dict[tuple[str, str | None], set[str]] = {}
    bad: list[str] = []
    count = 0
    for page in pages():
        for line, program, words in program_commands(page):
            count += 1
            flags = [w.split("=", 1)[0] for w in words if re.match(r"--?[A-Za-z]", w)]
            if not flags:
                continue
            sub = words[0] if words and not words[0].startswith("-") and words[0].isidentifier() else None
            key = (program, sub)
            if key not in asked:
                asked[key] = help_flags(program, sub)
            bad += [f"{page.relative_to(ROOT)}:{line}: python {program} ... {f}: not in its --help"
                    for f in flags if f not in asked[key]]
    assert not bad, "flags the programs do not take:\n" + "\n".join(bad)
    assert count > 15 and ("-m openraft_py.testing.sim", None) in asked and ("bench/tcp.py", None) in asked


def test_the_program_check_reads_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python bench/soak.py --nodes 5` or `python -m openraft_py.testing.sim --seed 17`.\n"
        "```sh\n"
        ".venv/bin/python bench/run.py --only tcp-fsync \\\n"
        "    --from-json x.json   # a comment --nope\n"
        "python examples/aiohttp_service/main.py node --id 1 --init $P\n"
        "python -m asyncio\n"
        "```\n"
    )
    assert program_commands(page) == [
        (1, "bench/soak.py", ["--nodes", "5"]),
        (1, "-m openraft_py.testing.sim", ["--seed", "17"]),
        (3, "bench/run.py", ["--only", "tcp-fsync", "--from-json", "x.json"]),
        (5, "examples/aiohttp_service/main.py", ["node", "--id", "1", "--init", "$P"]),
    ]
    assert {"--seeds", "--skew", "--fault"} <= help_flags("-m openraft_py.testing.sim", None)


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def heading_anchors(text: str) -> set[str]:
    """The anchors of the headings of Markdown ``text`` (outside code fences), as GitHub
    spells them (lower case, punctuation dropped, each space a hyphen) and as mkdocs does
    (runs of hyphens and spaces made one hyphen)."""
    anchors: set[str] = set()
    in_block = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_block = not in_block
            continue
        m = None if in_block else _HEADING.match(line)
        if m:
            words = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).strip()
            anchors.add(words.replace(" ", "-"))
            anchors.add(re.sub(r"[-\s]+", "-", words))
    return anchors


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links (and images) of ``page`` that lead to no file, or to a Markdown file
    (or the page itself, for ``#anchor``) without that heading; each named from ``root``."""
    bad: list[str] = []
    text = page.read_text()
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            continue
        for m in _LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                bad.append(f"{page.relative_to(root)}:{n}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
                bad.append(f"{page.relative_to(root)}:{n}: {target}: no heading with that anchor")
    return bad


def test_links_outside_the_site_lead_somewhere() -> None:
    """README.md and the examples' READMEs: mkdocs checks the links of ``docs/`` only."""
    outside = [ROOT / "README.md", *(ROOT / "examples").rglob("*.md")]
    bad = [problem for page in outside for problem in broken_links(page)]
    assert not bad, "links that lead nowhere:\n" + "\n".join(bad)


def test_the_link_check_sees_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Checking a transport: the `suite`\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "## Here - and there\n"
        "[ok](other.md#checking-a-transport-the-suite) [ok](#here---and-there) [ok](#here-and-there)\n"
        "[web](https://example.org/x#y) ![img](other.md)\n"
        "[gone](missing.md) [no anchor](other.md#not-a-heading) [self](#nowhere)\n"
        "```\n[in code](missing-too.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "page.md:4: missing.md: no such file",
        "page.md:4: other.md#not-a-heading: no heading with that anchor",
        "page.md:4: #nowhere: no heading with that anchor",
    ]
