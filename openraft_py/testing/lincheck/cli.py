"""The checker's command line, ``python -m openraft_py.testing.lincheck``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

from ...kv.argtypes import GivenOnce
from .model import Model, Operation, kv, kv_register, register
from .parse import MAX_HISTORY_BYTES, HistoryParseError, parse_edn_kv, parse_jepsen, parse_jsonl
from .search import check

__all__ = ["main"]

_FORMATS: dict[str, tuple[Callable[..., list[Operation]], Model]] = {
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


def _byte_count(text: str) -> int:
    """``--max-bytes``: a whole number of bytes >= 1 (decimal digits)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of bytes >= 1, not {text!r:.80}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Check history files; exit 0 if all are linearizable, 1 if not (or unknown), 2 if a
    file cannot be read or parsed, or holds no client operation (an empty file, or one of
    another format: the Jepsen reader skips every line that is not an operation, so a file of
    another format would read as an empty, trivially linearizable history), 130 on Ctrl-C
    (one line naming the file being checked; the verdicts printed before it stand).

    Each file is read up to ``--max-bytes`` (``MAX_HISTORY_BYTES``, 1 GiB, by default) and
    lines of up to ``MAX_LINE_CHARS``: a larger file, or an endless one (``/dev/zero``), is
    refused with exit 2. The check has no time bound unless ``--timeout`` is given (a
    default bound would turn a slow check's verdict into "unknown" for a caller that waits
    for it): the search can take exponential time on a history with much concurrency, so
    give ``--timeout`` where the checker must end (CI); Ctrl-C stops it (130)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # (as openraft-py: an abbreviated long flag is refused)
        prog="python -m openraft_py.testing.lincheck",
        description="Check client histories for linearizability.",
    )
    parser.add_argument("--format", action=GivenOnce, required=True, choices=sorted(_FORMATS))
    parser.add_argument("--timeout", action=GivenOnce, type=_seconds, default=None,
                        help="seconds per file before giving up with an unknown verdict (default: no "
                        "bound; the check runs until it has a verdict)")
    parser.add_argument("--max-bytes", action=GivenOnce, type=_byte_count, default=MAX_HISTORY_BYTES,
                        metavar="N", help=f"refuse a file of more than N bytes (default {MAX_HISTORY_BYTES}, 1 GiB)")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    name = args.files[0]
    try:
        for name in args.files:
            status = max(status, _check_file(name, args.format, args.timeout, args.max_bytes))
    except KeyboardInterrupt:  # the verdicts printed so far stand
        print(f"lincheck: interrupted while checking {name}", file=sys.stderr)
        return 130
    return status


def _check_file(name: str, fmt: str, timeout: float | None, max_bytes: int) -> int:
    """Check one history file (read up to ``max_bytes``), print its verdict; returns its exit
    status (see ``main``)."""
    parse, model = _FORMATS[fmt]
    try:
        history = parse(name, max_bytes=max_bytes)
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
