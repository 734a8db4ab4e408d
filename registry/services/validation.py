"""Shape checks for user-supplied metadata, shared by every door."""

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime

from registry.errors import InvalidInput, TooLarge
from registry.models import ALIAS_PATTERN, TEAM_NAME_PATTERN
from registry.names import model_name_problem

MAX_ENTRIES = 1000
MAX_KEY = 250
MAX_VALUE = 5000
MAX_TEXT = 100_000
LINEAGE_KEYS = {"code_commit", "dataset", "run_url", "run_id", "parent_version", "source"}
LINEAGE_KEYS |= {"experiment_id", "logged_model_id"}  # a version made from an MLflow run
MAX_JSON_DEPTH = 32  # deeper than any metadata needs, far below Python's recursion limit
_KEY = re.compile(r"[A-Za-z0-9_.\-/: ]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999999 reads as infinity
        raise ValueError(f"the number {literal[:20]} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_document(data: bytes | str, *, strict: bool = True) -> Any:
    """A JSON request body parsed strictly: no NaN or Infinity, numbers finite, no lone
    surrogate or NUL (no database or encoder takes one, and an error echoing it could not
    be written), nested at most MAX_JSON_DEPTH deep. Anything else is a 400, never a 500.
    `strict=False` leaves all but the syntax to a caller that checks every value itself
    (ingest, which names the record holding a bad one)."""
    max_depth = MAX_JSON_DEPTH
    try:
        value = json.loads(
            data, parse_constant=_no_constant, parse_float=_finite if strict else float
        )
    except RecursionError:
        raise InvalidInput(
            f"The body is not valid JSON here: it is nested more than {max_depth} deep."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # also an integer past 4300 digits
        raise InvalidInput(f"The body is not valid JSON: {str(exc)[:200]}") from None
    if strict:
        _check_tree(value, max_depth)
    return value


def moment(raw: Any) -> datetime | None:
    """An RFC 3339 time with a zone, in UTC; None for anything else, including year 0 and
    times that fall outside years 1-9999 once in UTC (0001-01-01T00:00+14:00)."""
    if not isinstance(raw, str):
        return None
    try:
        at = parse_datetime(raw)
        return at.astimezone(UTC) if at is not None and at.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def _check_tree(value: Any, max_depth: int) -> None:
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise InvalidInput("Text must be valid Unicode: it holds a lone surrogate.")
            if "\x00" in node:
                raise InvalidInput("Text must not contain NUL characters.")
        elif isinstance(node, dict | list):
            if depth > max_depth:
                raise InvalidInput(f"The JSON body is nested more than {max_depth} deep.")
            items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
            for key, item in items:
                if key is not None:
                    pending.append((key, depth))
                pending.append((item, depth + 1))


def model_name(value: Any) -> str:
    """A model name as MLflow allows it (registry/names.py says what we refuse beyond)."""
    reason = model_name_problem(value)
    if reason:
        echoed = value if isinstance(value, str) and not _SURROGATE.search(value) else None
        shown = repr(value[:300]) if isinstance(value, str) else type(value).__name__
        raise InvalidInput(
            f"Invalid model name {shown}: {reason}.", {"name": echoed, "reason": reason}
        )
    return value


def alias_name(value: Any, what: str = "Alias") -> str:
    if not isinstance(value, str) or not re.fullmatch(ALIAS_PATTERN, value):
        raise InvalidInput(
            f"{what} names are 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter.",
            {"name": value},
        )
    return value


def team_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(TEAM_NAME_PATTERN, value):
        raise InvalidInput(
            "Team names are 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit.",
            {"name": value},
        )
    return value


def choice(value: Any, field: str, allowed) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise InvalidInput(
            f"'{field}' must be one of: {', '.join(allowed)}.", {"field": field, "allowed": allowed}
        )
    return value


def text(value: Any, field: str, max_length: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"'{field}' must be a string.", {"field": field})
    if len(value) > max_length:
        raise InvalidInput(f"'{field}' is longer than {max_length} characters.", {"field": field})
    return value


def _mapping(value: Any, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"'{field}' must be an object.", {"field": field})
    if len(value) > MAX_ENTRIES:
        raise InvalidInput(f"'{field}' has more than {MAX_ENTRIES} entries.", {"field": field})
    for key in value:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY or not _KEY.fullmatch(key):
            raise InvalidInput(
                f"'{field}' keys are 1-{MAX_KEY} characters of letters, digits, "
                "space and _ . - / :",
                {"field": field, "key": key},
            )
    return value


def string_map(value: Any, field: str) -> dict[str, str]:
    mapping = _mapping(value, field)
    for key, item in mapping.items():
        if not isinstance(item, str) or len(item) > MAX_VALUE:
            raise InvalidInput(
                f"'{field}.{key}' must be a string of at most {MAX_VALUE} characters.",
                {"field": field, "key": key},
            )
    return dict(mapping)


def metrics(value: Any) -> dict[str, float]:
    mapping = _mapping(value, "metrics")
    for key, item in mapping.items():
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise InvalidInput(
                f"Metric '{key}' must be a finite number.", {"field": "metrics", "key": key}
            )
    return dict(mapping)


def lineage(value: Any) -> dict[str, Any]:
    mapping = _mapping(value, "lineage")
    unknown = set(mapping) - LINEAGE_KEYS
    if unknown:
        raise InvalidInput(
            f"Unknown lineage fields: {', '.join(sorted(unknown))}.",
            {"field": "lineage", "allowed": sorted(LINEAGE_KEYS)},
        )
    for key, item in mapping.items():
        if key == "parent_version":
            if item is not None and (
                isinstance(item, bool) or not isinstance(item, int) or item < 1
            ):
                raise InvalidInput("'lineage.parent_version' must be a positive integer.")
        elif not isinstance(item, str) or len(item) > MAX_VALUE:
            raise InvalidInput(f"'lineage.{key}' must be a string.", {"field": "lineage"})
    return dict(mapping)


METADATA_FIELDS = ("description", "metrics", "params", "tags", "lineage")


def metadata_size(version_fields: dict[str, Any]) -> None:
    """A version's metadata, together, within MODELGATE_MAX_METADATA_BYTES (as stored JSON):
    each field's own limits still let 4.5 MB of params through, which every list response,
    Git commit and package would then carry."""
    limit = settings.MODELGATE_MAX_METADATA_BYTES
    kept = {k: version_fields.get(k) for k in METADATA_FIELDS}
    size = len(json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode())
    if size > limit:
        raise TooLarge(
            f"The version's metadata (description, metrics, params, tags, lineage) is "
            f"{size} bytes; the limit is {limit} (MODELGATE_MAX_METADATA_BYTES).",
            {"size": size, "limit": limit},
        )


def sha256(value: Any, field: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidInput(f"'{field}' must be 64 lowercase hex characters.", {"field": field})
    return value


def size(value: Any, max_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput("'size' must be a non-negative integer.", {"field": "size"})
    if value > max_size:
        raise TooLarge(f"File size {value} exceeds the limit of {max_size} bytes.")
    return value
