"""Validation of user-supplied file paths inside a version.

Version paths never touch the file system (bytes are addressed by sha256), but they are
written to disk by `modelgate pull`, shown in the UI and used in URLs, so anything that
could traverse, hide or confuse is refused up front.
"""

import re
import unicodedata
from urllib.parse import unquote

from registry.errors import InvalidPath

MAX_PATH_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Letters, marks, numbers, punctuation, symbols and the plain space: what a name may hold.
# Everything else (controls, bidi overrides, zero-width and other format characters, lone
# surrogates, unassigned code points, exotic spaces) is refused, not filtered out.
_ALLOWED_CATEGORIES = frozenset("LMNPS")


def unicode_hazard(text: str) -> str | None:
    """Why `text` could look or resolve differently elsewhere, or None if it cannot.

    A name that NFKC normalisation changes is refused outright: Windows' best-fit
    conversion and many tools apply it, turning U+2025 TWO DOT LEADER + '/x', or
    '..' + U+FF0F FULLWIDTH SOLIDUS + 'x', into '../x'."""
    for char in text:
        if char != " " and unicodedata.category(char)[0] not in _ALLOWED_CATEGORIES:
            return f"contains the invisible or control character U+{ord(char):04X}"
    if unicodedata.normalize("NFKC", text) != text:
        return "changes under Unicode NFKC normalisation (it could become '..' or '/' elsewhere)"
    return None


def validate_file_path(path: object) -> str:
    """Return `path` unchanged if it is a safe relative POSIX path, else raise InvalidPath."""
    if not isinstance(path, str) or not path:
        raise InvalidPath("A file path must be a non-empty string.", {"path": path})
    _check(path, original=path)
    # An encoded dot-dot or slash is harmless here but not once a client decodes it again,
    # so every decoded form (up to a few layers deep) must pass the same checks.
    decoded, layers = path, 0
    while _PERCENT_ESCAPE.search(decoded):
        layers += 1
        if layers > 3:
            raise InvalidPath("File path is percent-encoded too many times.", {"path": path})
        decoded = unquote(decoded)
        _check(decoded, original=path)
    return path


def _check(candidate: str, original: str) -> None:
    def refuse(reason: str) -> None:
        raise InvalidPath(f"Invalid file path {original!r}: {reason}.", {"path": original})

    if len(candidate) > MAX_PATH_LENGTH:
        refuse(f"longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in candidate:
        refuse("contains a NUL byte")
    if _CONTROL.search(candidate):
        refuse("contains a control character")
    hazard = unicode_hazard(candidate)
    if hazard:
        refuse(hazard)
    if "\\" in candidate:
        refuse("contains a backslash")
    if candidate.startswith("/"):
        refuse("must be relative, not absolute")
    for segment in candidate.split("/"):
        if segment == "":
            refuse("contains an empty segment")
        if not segment.strip():
            refuse("contains a segment of only whitespace")
        if segment in {".", ".."}:
            refuse(f"contains a '{segment}' segment")
        if len(segment) > MAX_SEGMENT_LENGTH:
            refuse(f"a segment is longer than {MAX_SEGMENT_LENGTH} characters")
