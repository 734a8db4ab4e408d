"""Shape checks for user-supplied metadata, shared by every door."""

import math
import re
from typing import Any

from registry.errors import InvalidInput, TooLarge
from registry.models import ALIAS_PATTERN, MODEL_NAME_PATTERN

MAX_ENTRIES = 1000
MAX_KEY = 250
MAX_VALUE = 5000
MAX_TEXT = 100_000
LINEAGE_KEYS = {"code_commit", "dataset", "run_url", "run_id", "parent_version", "source"}
_KEY = re.compile(r"^[A-Za-z0-9_.\-/: ]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not re.match(MODEL_NAME_PATTERN, value):
        raise InvalidInput(
            "Model names are 1-128 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit.",
            {"name": value},
        )
    return value


def alias_name(value: Any, what: str = "Alias") -> str:
    if not isinstance(value, str) or not re.match(ALIAS_PATTERN, value):
        raise InvalidInput(
            f"{what} names are 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter.",
            {"name": value},
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
        if not isinstance(key, str) or not key or len(key) > MAX_KEY or not _KEY.match(key):
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


def sha256(value: Any, field: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise InvalidInput(f"'{field}' must be 64 lowercase hex characters.", {"field": field})
    return value


def size(value: Any, max_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput("'size' must be a non-negative integer.", {"field": "size"})
    if value > max_size:
        raise TooLarge(f"File size {value} exceeds the limit of {max_size} bytes.")
    return value
