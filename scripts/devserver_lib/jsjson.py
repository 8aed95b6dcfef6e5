"""JSON with JavaScript semantics: what `JSON.parse` then `JSON.stringify`
produce in Node, so that bodies the local server stores are byte-identical to
what the real (Node) server stores.

Differences from Python's json module that matter here:
- every number is an IEEE double (12345678901234567890 loses precision,
  1e400 becomes Infinity and serialises as null, -0 serialises as 0);
- numbers are formatted by ECMAScript Number::toString (1.0 -> 1,
  1e21 -> 1e+21, 1e-7 -> 1e-7, 0.000001 -> 0.000001);
- NaN / Infinity literals are rejected on input;
- object keys that are array indices ("0", "17") come first in ascending
  numeric order, the others keep their insertion order;
- non-ASCII is not escaped, lone surrogates are escaped as \\udxxx.
"""

from __future__ import annotations

import json
import re
from typing import Any


class JSONError(ValueError):
    """The text is not JSON that JSON.parse would accept, or is too deep."""


def _reject_constant(name: str) -> Any:
    raise JSONError(f"unexpected token {name}")


_DECODER = json.JSONDecoder(parse_float=float, parse_int=float,
                            parse_constant=_reject_constant, strict=True)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_MAX_ARRAY_INDEX = 2**32 - 2


def parse(text: str) -> Any:
    """JSON.parse. Raises JSONError (also for nesting Python cannot hold)."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise JSONError("JSON nested too deeply") from None
    except ValueError as e:
        raise JSONError(str(e)) from None


def decode_body(raw: bytes) -> str:
    """Decode a request body as the Fetch API's text() does: UTF-8 with
    replacement characters, a leading byte order mark dropped."""
    text = raw.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def number(x: float) -> str:
    """ECMAScript Number::toString for a double, as JSON.stringify uses it."""
    if x != x or x in (float("inf"), float("-inf")):
        return "null"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    text = repr(abs(x))  # shortest round-trip digits, like ECMAScript
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    all_digits = whole + frac
    # The value is 0.<all_digits> x 10^point; strip zeros from both ends.
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = all_digits.lstrip("0")
    point -= len(all_digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        out = digits + "0" * (point - k)
    elif 0 < point <= 21:
        out = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        out = "0." + "0" * (-point) + digits
    else:
        e = point - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + \
            "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + out


def string(s: str) -> str:
    """JSON.stringify of a string (well-formed JSON.stringify, ES2019)."""
    out = json.dumps(s, ensure_ascii=False)
    if _LONE_SURROGATE.search(out):
        out = _LONE_SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), out)
    return out


def _key_order(obj: dict) -> list:
    index_keys = [k for k in obj if _ARRAY_INDEX.fullmatch(k)
                  and int(k) <= _MAX_ARRAY_INDEX]
    if not index_keys:
        return list(obj)
    index_set = set(index_keys)
    return sorted(index_keys, key=int) + [k for k in obj if k not in index_set]


def _emit(value: Any, parts: list) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(string(value))
    elif isinstance(value, (int, float)):
        parts.append(number(float(value)))
    elif isinstance(value, list):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _emit(item, parts)
        parts.append("]")
    elif isinstance(value, dict):
        parts.append("{")
        for i, key in enumerate(_key_order(value)):
            if i:
                parts.append(",")
            parts.append(string(key))
            parts.append(":")
            _emit(value[key], parts)
        parts.append("}")
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def stringify(value: Any) -> str:
    """JSON.stringify of a parsed value. Raises JSONError when too deep."""
    parts: list = []
    try:
        _emit(value, parts)
    except RecursionError:
        raise JSONError("JSON nested too deeply") from None
    return "".join(parts)
