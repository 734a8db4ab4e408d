"""Text numbers of protocol 0 pickles, read as leniently as the most lenient unpickler.

The walker must never give up where a real load goes on: past that point it would not see
what the load imports. Two unpicklers matter: CPython's C one (_pickle.c, what pickle.load
and torch.load use) and the pure-Python one (pickle.py's _Unpickler, what joblib.load
subclasses). Each opcode argument is accepted here when either accepts it:

- INT: C calls strtol(line, base 0): leading C whitespace, a sign, "0x" hex, a leading "0"
  meaning octal ("010" is 8), and the line may end at a NUL byte ("12\\0junk"). Past a long
  it falls back to PyLong_FromString(line, base 0), which stops at a NUL too. pickle.py
  calls int(line, 0) (underscores, no octal).
- LONG: C drops an "L" just before the newline, then PyLong_FromString(base 0) up to a NUL;
  pickle.py drops a trailing "L" and calls int(text, 0).
- FLOAT: C's PyOS_string_to_double takes the longest float prefix and then wants the
  newline or a NUL; pickle.py calls float(text) (whitespace, underscores).
- GET/PUT memo keys: C's PyLong_FromString(base 10) up to a NUL; pickle.py int(text).

Each function takes the line without its newline and returns the value, or None when both
unpicklers would fail.
"""

from __future__ import annotations

import re

_C_SPACE = b" \t\n\v\f\r"
_HEX = b"0123456789abcdefABCDEF"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# The float prefix _Py_dg_strtod / _Py_parse_inf_or_nan accept (no leading whitespace).
_C_FLOAT = re.compile(
    rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE
)


def _strtol(s: bytes) -> tuple[int | None, int]:
    """C strtol(s, &end, 0): (value, end index), value None when nothing converts."""
    i, n = 0, len(s)
    while i < n and s[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and s[i] in b"+-":
        negative = s[i] == ord("-")
        i += 1
    base = 10
    if i < n and s[i] == ord("0"):
        if i + 2 < n and s[i + 1] in b"xX" and s[i + 2] in _HEX:
            base, i = 16, i + 2
        else:
            base = 8
    digits = _HEX[:base] if base <= 10 else _HEX
    start = i
    while i < n and s[i] in digits:
        i += 1
    if i == start:
        return None, 0
    value = int(s[start:i], base)
    return (-value if negative else value), i


def _c_string(s: bytes) -> bytes:
    """What a C function reading `s` as a NUL-terminated string sees."""
    return s.split(b"\0", 1)[0]


def _pylong_from_string(s: bytes, base: int) -> int | None:
    """PyLong_FromString(s, NULL, base): Python's int() syntax, ASCII only, up to a NUL."""
    text = _c_string(s)
    if not text.isascii():
        return None
    try:
        return int(text.decode("ascii"), base)
    except ValueError:
        return None


def _python_int(text: bytes, base: int) -> int | None:
    try:
        return int(text, base)
    except ValueError:
        return None


def parse_int(line: bytes) -> int | bool | None:
    """The INT opcode's value ("00"/"01" are False/True)."""
    if not line:
        return None  # both: "pickle data was truncated" / int(b"\n") fails
    s = line + b"\n"
    value, end = _strtol(s + b"\0")
    c_value: int | None = None
    if value is not None and _LONG_MIN <= value <= _LONG_MAX and s[end : end + 1] in (b"\n", b"\0"):
        c_value = value
    elif value is None and s[:1] == b"\0":
        c_value = 0  # strtol converts nothing and stops at the NUL: C accepts it as 0
    else:
        c_value = _pylong_from_string(s, 0)
    if c_value is not None:
        if len(line) == 2 and c_value in (0, 1):
            return bool(c_value)
        return c_value
    if line in (b"00", b"01"):
        return line == b"01"
    return _python_int(s, 0)


def parse_long(line: bytes) -> int | None:
    s = line + b"\n"
    c_text = s[:-2] if len(s) >= 2 and s[-2:-1] == b"L" else s
    value = _pylong_from_string(c_text, 0)
    if value is not None:
        return value
    text = line[:-1] if line.endswith(b"L") else line
    return _python_int(text, 0)


def parse_float(line: bytes) -> float | None:
    if not line:
        return None
    match = _C_FLOAT.match(line)
    if match is not None:
        after = line[match.end() : match.end() + 1]
        if after in (b"", b"\0"):
            value = float(match.group())
            literal_inf = b"inf" in match.group().lower()
            if value not in (float("inf"), float("-inf")) or literal_inf:
                return value  # C raises OverflowError on an overflowing literal
    try:
        return float(line)
    except ValueError:
        return None


def parse_memo_key(line: bytes) -> int | None:
    """A GET/PUT key; negative keys fail in both unpicklers, but GET -1 fails only later."""
    if not line:
        return None
    value = _pylong_from_string(line + b"\n", 10)
    if value is None:
        value = _python_int(line, 10)
    return value
