"""Argument types shared by the ``openraft-py`` verbs (``argparse`` ``type=`` callables).

Each returns the parsed value or raises ``argparse.ArgumentTypeError`` with a one-line
reason, which argparse turns into a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..network.wire import MAX_NAME_LEN
from ..validation import MAX_NODE_ID, check_seconds, shown

__all__ = ["MAX_TIMEOUT", "check_cluster_name", "check_duration", "cluster_name", "MIN_TIMEOUT", "QUOTE_MAX", "decimal_int", "GIVEN_FLAGS", "GivenOnce", "given_once", "json_object", "node_id",
           "positive_float", "positive_int", "positive_int_at_most", "quoted", "timeout"]

_DECIMAL = re.compile(r"-?[0-9]+")
"""An integer as the command line takes one: the ASCII digits 0-9, after a minus sign for a
negative one (refused by the range of every flag that takes one)."""


QUOTE_MAX = 80
"""The most characters of an argument or value an error message quotes (``quoted``)."""


def quoted(obj: object) -> str:
    """``repr(obj)`` for an error message, cut to ``QUOTE_MAX`` characters; a longer one ends
    with how long ``obj`` is (``... (16777216 bytes)``). Messages quoted a value whole: a
    16 MiB value passed as bytes where a str was due made a TypeError of 16 MiB or more."""
    text = repr(obj)
    if len(text) <= QUOTE_MAX:
        return text
    if isinstance(obj, (bytes, bytearray, memoryview)):
        size = f"{len(obj)} bytes"
    elif isinstance(obj, str):
        size = f"{len(obj)} characters"
    else:
        size = f"{len(text)} characters as written"
    return f"{text[:QUOTE_MAX]}... ({size})"


def decimal_int(text: str) -> int:
    """An integer written in the digits 0-9 alone (a negative one with a leading ``-``).
    ``int`` also reads ``1_0`` (as 10: ``--id 1_0`` named node 10), ``+1``, `` 1`` and
    other scripts' digits (``\\u0661``, ``\\uff13``); each is refused here ("not an integer written in
    the digits 0-9")."""
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer written in the digits 0-9")
    return int(text)


def positive_int(text: str) -> int:
    """An integer of at least 1 (``decimal_int``)."""
    n = decimal_int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return n


def positive_int_at_most(limit: int) -> Callable[[str], int]:
    """The type of an integer from 1 to ``limit``: ``positive_int`` with an upper bound, for
    counts that become processes, workers or connections (a typo of a few zeros must not
    try to start a hundred thousand of them)."""

    def parse(text: str) -> int:
        n = positive_int(text)
        if n > limit:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {limit}")
        return n

    return parse


def positive_float(text: str) -> float:
    """A finite number greater than 0 (``nan`` and ``inf`` are refused: every wait and
    duration of the command line is bounded)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(x):  # (float() reads "nan"; "must be positive" said a sign was wrong)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds")
    return x


MIN_TIMEOUT = 0.01
"""The least ``--timeout`` (seconds): less than any request takes (a connection and an answer
on loopback take about a millisecond, and every verb makes at least one). Below it a verb
could end before its first attempt started, and said "gave up after 1 attempts: no attempt
made" (``kv get --timeout 1e-300``)."""

MAX_TIMEOUT = 86400.0
"""The largest ``--timeout`` (seconds, a day): above it a timeout is infinity in all but
name (``--timeout 1e300`` waited for good on a node that never answered, where ``inf`` is
refused)."""


def timeout(text: str) -> float:
    """A ``--timeout``: a number of seconds from ``MIN_TIMEOUT`` to ``MAX_TIMEOUT``
    (``positive_float`` first: ``nan``, ``inf``, zero and negatives are refused as there)."""
    x = positive_float(text)
    if not MIN_TIMEOUT <= x <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} seconds (a day)")
    return x


def check_duration(value: object, what: str, *, zero_ok: bool = False) -> float:
    """``value`` (seconds, a Python argument named ``what``) as a ``float`` if
    ``validation.check_seconds`` takes it (finite, above 0 or with ``zero_ok`` at least 0) and
    it is at most ``MAX_TIMEOUT`` (a day), as ``--timeout`` is; ``TypeError`` or ``ValueError``
    naming ``what`` and the range otherwise. ``1e300`` was taken where ``inf`` was refused, and
    a call or a wait then went on for good."""
    seconds = check_seconds(value, what, zero_ok=zero_ok)
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"{what} must be {'at least' if zero_ok else 'above'} 0 and at most {MAX_TIMEOUT:g} seconds "
                         f"(a day), got {shown(value)}")
    return seconds


def node_id(text: str) -> int:
    """A node id: an integer in ``[0, MAX_NODE_ID]`` written in the digits 0-9 (as
    ``decimal_int``: ``1_0`` read as node 10)."""
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a node id (written in the digits 0-9)")
    n = int(text)
    if text.startswith("-") or n > MAX_NODE_ID:  # (-0 too)
        raise argparse.ArgumentTypeError(f"{text!r} is not a node id (0 to {MAX_NODE_ID})")
    return n


def check_cluster_name(name: str) -> str:
    """``name`` if the key-value service takes it as a cluster name (``serve --cluster-name``,
    ``ServeOptions.cluster_name``, ``cluster up --cluster-name``, ``cluster force-recover
    --new-cluster-name``); ``ValueError`` otherwise. A cluster name is non-empty, at most
    ``MAX_NAME_LEN`` characters (what a raft handshake's ``Hello`` carries: the transport
    counts characters, not bytes), UTF-8 (the handshake encodes it so), and printable text
    (``str.isprintable``: letters, digits, marks, punctuation, symbols and the plain space of
    any script; no control, format or separator character but that space).

    NB: the transport itself (``TcpNetworkFactory``, ``TcpServer``) takes any non-empty name
    of at most ``MAX_NAME_LEN`` characters, as a library's caller may have chosen one; it
    compares names whole and quotes a refused one with ``repr``. The service is stricter: its
    name is recorded in the data directory (``node.json``) and written into the refusals that
    tell an operator which ``--cluster-name`` to give, where a control character was written
    raw (a new line split the refusal, an escape sequence drove the terminal)."""
    if not name:
        raise ValueError("a cluster name is a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"a cluster name is at most {MAX_NAME_LEN} characters (the raft handshake's limit)")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{quoted(name)} is not valid UTF-8") from None
    if not name.isprintable():
        at = next(i for i, c in enumerate(name) if not c.isprintable())
        raise ValueError(f"{quoted(name)} holds an unprintable character ({name[at]!r} at {at}): a cluster name is "
                         "printable text (it is recorded in the data directory and written into logs and errors)")
    return name


def cluster_name(text: str) -> str:
    """A cluster name flag's value (``check_cluster_name``)."""
    try:
        return check_cluster_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _RepeatedKey(ValueError):
    """A JSON object of ``json_object`` names a key twice."""


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: the object, or ``_RepeatedKey`` naming a key
    that appears twice in it."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


_REPEATS_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_repeats)
"""``repeated_json_key``'s decoder, built once: ``json.loads`` with a hook builds one per call
(and sniffs the encoding of bytes), 15 us of a small ``cas`` body's 20; 4 us with this one."""


def repeated_json_key(text: str | bytes) -> str | None:
    """The first key that an object of the JSON document ``text`` names twice (at any depth),
    or ``None``. For a document already decoded by a bounded parser (msgspec with a typed
    schema: its nesting and numbers are bounded), which keeps a repeated key's last value
    without a word. Bytes are UTF-8 (as msgspec reads them). ``json.JSONDecodeError`` if
    ``text`` is not JSON (``UnicodeDecodeError`` if its bytes are not UTF-8)."""
    try:
        _REPEATS_DECODER.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except _RepeatedKey as e:
        return cast(str, e.args[0])
    return None


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``{...}``), each key of it (and of the objects in it) once: a repeated
    key is refused naming it (``json.loads`` kept its last value, dropping the first without
    a word)."""
    try:
        obj = json.loads(text, object_pairs_hook=_object_without_repeats)
    except _RepeatedKey as e:
        raise argparse.ArgumentTypeError(f"the key {e.args[0]!r} is given twice") from None
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return obj


GIVEN_FLAGS = "_given_flags"
"""The namespace attribute where ``GivenOnce`` notes the flags given so far (a set of dests);
the ``openraft-py`` parser removes it once a parse ends (as argparse its own
``_unrecognized_args``)."""


class GivenOnce(argparse.Action):
    """The action of a flag that takes one value and may be given once: it stores the value
    as argparse's ``store`` does, and a second one is a usage error naming the flag,
    "given twice: " and ``hint``. argparse keeps the last value of a repeated flag, dropping
    the others without a word: ``--raft-config A --raft-config B`` ran with B's fields alone,
    ``cluster init --endpoints N1 --endpoints N2 --endpoints N3`` made a one-node cluster of
    N3, ``cluster members --voters 1,2 --voters 3`` made node 3 the only voter, ``serve --id 1
    ... --id 2`` ran node 2 (its data directory then held node 2's data), and ``cluster
    remove-learner --id 4 --id 5`` removed learner 5. The flags given are noted in the
    namespace (``GIVEN_FLAGS``), so a flag with a default is refused twice too."""

    hint = "give it once"

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given: set[str] = vars(namespace).setdefault(GIVEN_FLAGS, set())
        if self.dest in given:
            raise argparse.ArgumentError(self, f"given twice: {self.hint}")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def given_once(hint: str) -> type[argparse.Action]:
    """``GivenOnce`` whose error ends with ``hint`` (how to give all of it in one)."""
    return type("GivenOnce", (GivenOnce,), {"hint": hint})
