"""Model names as Git sees them: tag names and document folders of the Git mirror.

Git refs refuse spaces and `~^:?*[\\`, `..`, `@{`, a trailing `.lock`; GTO reads an
artifact name only as `[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?`. The encoding:

- a name of the old lowercase form (`[a-z0-9][a-z0-9._-]{0,127}`) is itself, so mirrors
  written before mixed-case names existed read the same;
- any other name keeps ASCII letters, digits and '_' (inside the name), and writes every
  other character as '-' and its code point in uppercase hex, sized by a letter:
  `-X` + 2 digits (up to U+00FF), `-U` + 4, `-V` + 6; a first character so escaped
  starts with '_' instead of '-' (`git tag -X..` would read an option, and '_' is never
  kept as a first character). "Fraud Detector" is `Fraud-X20Detector`, "fraud detector"
  `fraud-X20detector`, "modèle" `mod-XE8le`, "Ölmodell" `_XD6lmodell`.

No two names encode alike: every escape holds an uppercase letter and every name of the
old form is all lowercase, so an escaped encoding is never an old name; the rest is an
escape code whose escape character ('-') is itself escaped, read back by `decode`. GTO reads
every tag whose name starts with an ASCII letter or digit (a name of the old form also
needs no '.' and a letter or digit last, as before).

Git keeps a ref as a file: a component longer than 255 bytes cannot be written. A name
whose tags would be longer than MAX_TAG gets no tags (the sync says so), and its folder
is shortened with a digest of the name, which no encoding contains ('~').
"""

import hashlib
import re
import string

OLD_FORM = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
MAX_TAG = 240  # bytes of a whole tag (ASCII): under 255 per file name and git_tag's 255
MAX_FOLDER = 200
_KEPT = frozenset(string.ascii_letters + string.digits)
_ESCAPE = re.compile(r"-(?:X([0-9A-F]{2})|U([0-9A-F]{4})|V([0-9A-F]{6}))")


def _escape(char: str) -> str:
    point = ord(char)
    if point <= 0xFF:
        return f"-X{point:02X}"
    if point <= 0xFFFF:
        return f"-U{point:04X}"
    return f"-V{point:06X}"


def encode(name: str) -> str:
    """The name as a Git ref component (and GTO artifact name where GTO allows one)."""
    if OLD_FORM.fullmatch(name):
        return name
    last = len(name) - 1
    encoded = "".join(
        char if char in _KEPT or (char == "_" and 0 < i < last) else _escape(char)
        for i, char in enumerate(name)
    )
    # `git tag -X...` would read an option: a first escape starts with '_' instead, which
    # is never a literal first character.
    return f"_{encoded[1:]}" if encoded.startswith("-") else encoded


def decode(encoded: str) -> str:
    """The model name `encoded` stands for (what GTO shows, read back)."""
    if OLD_FORM.fullmatch(encoded):
        return encoded
    if encoded.startswith("_"):
        encoded = f"-{encoded[1:]}"
    return _ESCAPE.sub(lambda m: chr(int(m[1] or m[2] or m[3], 16)), encoded)


def folder(name: str) -> str:
    """The name's folder under models/ in the mirror."""
    encoded = encode(name)
    if len(encoded) <= MAX_FOLDER:
        return encoded
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    return f"{encoded[: MAX_FOLDER - 25]}~{digest}"


def tag_fits(tag: str) -> bool:
    return len(tag.encode()) <= MAX_TAG
