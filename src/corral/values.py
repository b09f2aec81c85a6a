"""What corral takes as values for the stores to keep. A JSON value (run inputs and results,
journal data) is what ``json.dumps`` encodes without NaN or infinities, whose objects have
string keys only, nested at most ``MAX_DEPTH`` levels deep. ``json.dumps`` writes a key 1,
1.5, True or None as the string "1", "1.5", "true" or "null": the value read back was not the
one given, and {1: "a", "1": "b"} became an object with one key twice. The depth bound is for
the readers: the HTTP API's serializer gives up at 255 levels, so one deeper value made every
page that listed its run an error. A name is text both databases can store (and, where the
HTTP API puts it in a URL path, not "." or ".."); an integer fits their 32-bit columns. Every
edge (the Python API, ``ctx.spawn``, the CLI and HTTP through them) checks with these, so both
backends take the same values and a driver error never reaches a caller."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import TypeGuard

from corral.config import UNLIMITED
from corral.errors import InvalidInput

MAX_NAME = 200
MAX_PRIORITY = 1_000_000
#: the largest integer the stores keep in their 32-bit columns (``UNLIMITED`` stands for no
#: limit there, so nothing larger can mean anything)
MAX_INT = UNLIMITED
_ENCODER = json.JSONEncoder(allow_nan=False)
#: how the encoder writes a key that is not a string (an int, float, bool or None) before its
#: colon: a value whose text has no such match needs no walk to find one
_ENCODED_KEY = re.compile(r'"(?:-?\d[\d.e+-]*|true|false|null)": ')

#: containers (objects and arrays) nested in one another, at most
MAX_DEPTH = 100
#: the longest duration taken (a timeout, delay, start_within, schedule period), ~31 years:
#: the HTTP API's bound too, so every edge takes the same values
MAX_SECONDS = 1e9
#: the latest instant (Unix seconds) a run may be asked to start at, as over HTTP
MAX_TIMESTAMP = 1e11
#: the largest budget, as over HTTP
MAX_BUDGET = 1e15
#: a tenant's or plan's weight: charges are slot time / weight, and a weight near zero made
#: them infinite (a virtual time of inf, which spread to every tenant that queued after it)
MIN_WEIGHT = 1e-3
MAX_WEIGHT = 1e6


def check_json(value: object, what: str) -> str:
    """The JSON text of ``value``; InvalidInput, naming ``what``, if it is not a JSON value
    corral can store and serve."""
    if value is None:  # most results: answered without the encoder
        return "null"
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not a JSON value: {exc}") from None
    if "\\ud" in text:
        # a character outside the basic plane, or a lone surrogate: the encoder escapes both,
        # but no reader decodes the second (the HTTP API failed every page listing its run)
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{what} holds text that is not valid Unicode (a lone surrogate)"
            ) from None
    # a value has fewer levels than brackets in its text: most values need no walk
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise InvalidInput(f"{what} nests deeper than {MAX_DEPTH} levels")
    if _ENCODED_KEY.search(text) and (path := _non_string_key(value)) is not None:
        key = path[-1]
        where = "".join(f"[{step!r}]" for step in path)
        raise InvalidInput(
            f"{what} is not a JSON value: the key {key!r} at {where} is not a string "
            f"({type(key).__name__}); JSON object keys are strings, and it would come back "
            f"as {json.dumps(json.dumps(key))}"
        )
    return text


def _non_string_key(value: object) -> list[object] | None:
    """The path to the first object key in ``value`` that is not a string (the keys and
    indexes down to it, the key last), or None. Called on values at most ``MAX_DEPTH``
    deep."""
    items: Iterable[tuple[object, object]]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                return [key]
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for step, child in items:
        if isinstance(child, dict | list | tuple):
            below = _non_string_key(child)
            if below is not None:
                return [step, *below]
    return None


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


def check_path_name(what: str, value: object) -> str:
    """A name (``check_name``) that the HTTP API puts in a URL path segment (a stored
    schedule's ``/v1/schedules/{name}``): not "." or "..", which clients and proxies resolve
    as the current and the parent path (RFC 3986, section 5.2.4), so the request never
    reaches the name: ``GET /v1/schedules/..`` became ``GET /v1``."""
    name = check_name(what, value)
    if name in (".", ".."):
        raise InvalidInput(
            f"{what} may not be {name!r}: in a URL path it means the current or the parent "
            "path, so clients and proxies would not send it"
        )
    return name


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


def _finite(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _at_most(what: str, value: object, number: float, maximum: float | None) -> float:
    if maximum is not None and abs(number) > maximum:
        raise InvalidInput(f"{what} must be at most {maximum:g} in size, not {value!r}")
    return number


def check_finite(what: str, value: object, *, maximum: float | None = None) -> float:
    """A finite number (not a bool), within ±``maximum`` if given."""
    if not _finite(value):
        raise InvalidInput(f"{what} must be a finite number, not {value!r}")
    return _at_most(what, value, float(value), maximum)


def check_positive(what: str, value: object, *, maximum: float | None = None) -> float:
    """A finite number > 0 (not a bool), at most ``maximum`` if given: a duration or weight
    that zero would make meaningless (a lease that expires at once, a tenant that never gets a
    share)."""
    if not _finite(value) or value <= 0:
        raise InvalidInput(f"{what} must be a finite number > 0, not {value!r}")
    return _at_most(what, value, float(value), maximum)


def check_amount(what: str, value: object, *, maximum: float | None = None) -> float:
    """A finite number >= 0 (not a bool), at most ``maximum`` if given. NaN passes every
    comparison's negation: as a sleep it never came due, as a charge SQLite stored it as NULL
    and PostgreSQL as NaN."""
    if not _finite(value) or value < 0:
        raise InvalidInput(f"{what} must be a finite number >= 0, not {value!r}")
    return _at_most(what, value, float(value), maximum)


def check_between(
    what: str, value: object, minimum: float, maximum: float, *, kind: str = "a number"
) -> float:
    """A finite number (not a bool) from ``minimum`` to ``maximum``; ``kind`` names it in
    the refusal ("a number of seconds")."""
    if not _finite(value) or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be {kind} from {minimum:g} to {maximum:g}, not {value!r}")
    return float(value)


def check_weight(what: str, value: object) -> float:
    """A weight from ``MIN_WEIGHT`` to ``MAX_WEIGHT``."""
    return check_between(what, value, MIN_WEIGHT, MAX_WEIGHT)
