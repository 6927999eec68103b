"""The checker's command line, ``python -m openraft_py.testing.lincheck``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ...kv.argtypes import GivenOnce
from .model import Model, Operation, kv, kv_register, register
from .parse import HistoryParseError, parse_edn_kv, parse_jepsen, parse_jsonl
from .search import check

__all__ = ["main"]

_FORMATS: dict[str, tuple[Callable[[str | Path], list[Operation]], Model]] = {
    "jepsen": (parse_jepsen, register),
    "edn-kv": (parse_edn_kv, kv),
    "jsonl": (parse_jsonl, kv_register),
}


def _seconds(text: str) -> float:
    """``--timeout``: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Check history files; exit 0 if all are linearizable, 1 if not (or unknown), 2 if a
    file cannot be read or parsed, or holds no client operation (an empty file, or one of
    another format: the Jepsen reader skips every line that is not an operation, so a file of
    another format would read as an empty, trivially linearizable history), 130 on Ctrl-C
    (one line naming the file being checked; the verdicts printed before it stand)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # (as openraft-py: an abbreviated long flag is refused)
        prog="python -m openraft_py.testing.lincheck",
        description="Check client histories for linearizability.",
    )
    parser.add_argument("--format", action=GivenOnce, required=True, choices=sorted(_FORMATS))
    parser.add_argument("--timeout", action=GivenOnce, type=_seconds, default=None,
                        help="seconds per file before giving up with an unknown verdict")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    name = args.files[0]
    try:
        for name in args.files:
            status = max(status, _check_file(name, args.format, args.timeout))
    except KeyboardInterrupt:  # the verdicts printed so far stand
        print(f"lincheck: interrupted while checking {name}", file=sys.stderr)
        return 130
    return status


def _check_file(name: str, fmt: str, timeout: float | None) -> int:
    """Check one history file, print its verdict; returns its exit status (see ``main``)."""
    parse, model = _FORMATS[fmt]
    try:
        history = parse(name)
    except (OSError, UnicodeDecodeError, HistoryParseError) as e:
        print(f"lincheck: cannot read {name}: {e}", file=sys.stderr)
        return 2
    if not history:
        print(f"lincheck: {name}: no client operations found (is --format {fmt} right?)", file=sys.stderr)
        return 2
    try:
        result = check(history, model, timeout=timeout)
    except (ValueError, TypeError) as e:  # times out of order, values the model refuses
        print(f"lincheck: cannot check {name}: {e}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"{name} linearizable", flush=True)
        return 0
    if result.ok is None:
        print(f"{name} unknown (time budget of {timeout} s exceeded)")
    else:
        print(f"{name} NOT linearizable")
        print("\n".join("    " + line for line in result.explain().splitlines()))
    sys.stdout.flush()
    return 1
