"""What corral takes as values for the stores to keep. A JSON value (run inputs and results,
journal data) is what ``json.dumps`` encodes without NaN or infinities, nested at most
``MAX_DEPTH`` levels deep; the depth bound is for the readers: the HTTP API's serializer gives
up at 255 levels, so one deeper value made every page that listed its run an error. A name is
text both databases can store; an integer fits their 32-bit columns. Every edge (the Python
API, ``ctx.spawn``, the CLI and HTTP through them) checks with these, so both backends take
the same values and a driver error never reaches a caller."""

from __future__ import annotations

import json
import math

from corral.config import UNLIMITED
from corral.errors import InvalidInput

MAX_NAME = 200
MAX_PRIORITY = 1_000_000
#: the largest integer the stores keep in their 32-bit columns (``UNLIMITED`` stands for no
#: limit there, so nothing larger can mean anything)
MAX_INT = UNLIMITED
_ENCODER = json.JSONEncoder(allow_nan=False)

#: containers (objects and arrays) nested in one another, at most
MAX_DEPTH = 100


def check_json(value: object, what: str) -> str:
    """The JSON text of ``value``; InvalidInput, naming ``what``, if it is not a JSON value
    corral can store and serve."""
    if value is None:  # most results: answered without the encoder
        return "null"
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not a JSON value: {exc}") from None
    # a value has fewer levels than brackets in its text: most values need no walk
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise InvalidInput(f"{what} nests deeper than {MAX_DEPTH} levels")
    return text


def _depth(value: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def text_problem(value: str) -> str | None:
    """Why PostgreSQL or SQLite could not store ``value`` as text (NUL, a lone surrogate, as
    in a command-line argument that is not valid UTF-8), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates, as from bytes that are not UTF-8)"
    return None


def check_name(what: str, value: object) -> str:
    """A non-empty string of at most ``MAX_NAME`` characters that both databases can store."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidInput(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return check_text(what, value)


def check_text(what: str, value: str) -> str:
    """Text both databases can store (see ``text_problem``), of any length."""
    problem = text_problem(value)
    if problem:
        raise InvalidInput(f"{what} {problem}")
    return value


def check_priority(what: str, value: object) -> int:
    """An int (not a bool) within ±``MAX_PRIORITY``."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_PRIORITY:
        raise InvalidInput(f"{what} must be an integer within ±{MAX_PRIORITY:,}")
    return value


def check_int(what: str, value: object, *, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """An int (not a bool) from ``minimum`` to ``maximum``: by default what the stores keep
    in their 32-bit integer columns."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an integer >= {minimum}, not {value!r}")
    if value > maximum:
        raise InvalidInput(f"{what} must be at most {maximum:,}, not {value!r}")
    return value


def check_finite(what: str, value: object) -> float:
    """A finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, not {value!r}")
    return float(value)


def check_positive(what: str, value: object) -> float:
    """A finite number > 0 (not a bool): a duration or weight that zero would make
    meaningless (a lease that expires at once, a tenant that never gets a share)."""
    number = check_finite(what, value)
    if number <= 0:
        raise InvalidInput(f"{what} must be a finite number > 0, not {value!r}")
    return number


def check_amount(what: str, value: object) -> float:
    """A finite number >= 0 (not a bool). NaN passes every comparison's negation: as a sleep
    it never came due, as a charge SQLite stored it as NULL and PostgreSQL as NaN."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInput(f"{what} must be a finite number >= 0, not {value!r}")
    return float(value)
