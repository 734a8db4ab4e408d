"""A version's baseline profile and global explanations: their JSON Schemas and checks.

Both are computed on the data scientist's machine (`modelgate push --baseline`, see
registry.client.profiling) or shipped as `modelgate-baseline.json` /
`modelgate-explanations.json` in the version; raw rows never reach the registry.
"""

import math
from itertools import pairwise
from typing import Any

from jsonschema import Draft202012Validator

from registry.errors import InvalidInput

BASELINE_FORMAT = "modelgate-baseline/1"
EXPLANATIONS_FORMAT = "modelgate-explanations/1"
BASELINE_FILE = "modelgate-baseline.json"
EXPLANATIONS_FILE = "modelgate-explanations.json"
MAX_FEATURES = 1000
MAX_BINS = 1000
MAX_TOP = 1000

_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "minLength": 1, "maxLength": 250}
_SOURCE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 500},
        "rows": _COUNT,
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
    "additionalProperties": False,
}

# One column's profile. `count` is every row, `missing` the empty ones among them.
PROFILE_SCHEMA = {
    "type": "object",
    "required": ["type", "count", "missing"],
    "properties": {
        "type": {"enum": ["numeric", "categorical"]},
        "count": _COUNT,
        "missing": _COUNT,
        "mean": _NUMBER,
        "std": {"type": "number", "minimum": 0},
        "min": _NUMBER,
        "max": _NUMBER,
        # Quantile bins: len(edges) == len(counts) + 1, edges ascending.
        "bins": {
            "type": "object",
            "required": ["edges", "counts"],
            "properties": {
                "edges": {
                    "type": "array",
                    "items": _NUMBER,
                    "minItems": 2,
                    "maxItems": MAX_BINS + 1,
                },
                "counts": {"type": "array", "items": _COUNT, "minItems": 1, "maxItems": MAX_BINS},
            },
            "additionalProperties": False,
        },
        # Most frequent categories, with how many rows fell outside them.
        "top": {
            "type": "array",
            "maxItems": MAX_TOP,
            "items": {
                "type": "object",
                "required": ["value", "count"],
                "properties": {
                    "value": {"type": ["string", "number", "boolean"], "maxLength": 1000},
                    "count": _COUNT,
                },
                "additionalProperties": False,
            },
        },
        "other": _COUNT,
        "distinct": _COUNT,
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "numeric"}}},
            "then": {"required": ["bins", "mean", "std", "min", "max"]},
        },
        {"if": {"properties": {"type": {"const": "categorical"}}}, "then": {"required": ["top"]}},
    ],
    "additionalProperties": False,
}

BASELINE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "A version's baseline: a profile of its training or evaluation data",
    "type": "object",
    "required": ["features"],
    "properties": {
        "format": {"const": BASELINE_FORMAT},
        "source": _SOURCE,
        # Feature names in the order the model receives them, so positional inputs
        # ({"instances": [[...]]}) can be matched to the profile.
        "columns": {"type": "array", "items": _NAME, "maxItems": MAX_FEATURES},
        "features": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_FEATURES,
            "propertyNames": _NAME,
            "additionalProperties": PROFILE_SCHEMA,
        },
        "target_name": _NAME,
        "target": PROFILE_SCHEMA,
        "prediction": PROFILE_SCHEMA,
    },
    "additionalProperties": False,
}

EXPLANATIONS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "A version's global explanations: per-feature importance",
    "type": "object",
    "required": ["method", "features"],
    "properties": {
        "format": {"const": EXPLANATIONS_FORMAT},
        "method": {"type": "string", "minLength": 1, "maxLength": 100},
        "scoring": {"type": "string", "maxLength": 100},
        "n_repeats": {"type": "integer", "minimum": 1},
        "target_name": _NAME,
        "data": _SOURCE,
        "features": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_FEATURES,
            "propertyNames": _NAME,
            "additionalProperties": {
                "type": "object",
                "required": ["importance"],
                "properties": {"importance": _NUMBER, "std": {"type": "number", "minimum": 0}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

_BASELINE = Draft202012Validator(BASELINE_SCHEMA)
_EXPLANATIONS = Draft202012Validator(EXPLANATIONS_SCHEMA)


def _where(field: str, path) -> str:
    return ".".join([field, *(str(part) for part in path)])


def _check(validator: Draft202012Validator, value: Any, field: str) -> None:
    # The shallowest error names the field a person has to fix.
    error = min(validator.iter_errors(value), key=lambda e: len(e.absolute_path), default=None)
    if error is not None:
        where = _where(field, error.absolute_path)
        raise InvalidInput(f"'{where}': {error.message}", {"field": where})
    _check_finite(value, field, [])


def _check_finite(value: Any, field: str, path: list) -> None:
    # JSON Schema's "number" lets NaN and Infinity through (Python parses 1e999 as inf).
    if isinstance(value, float) and not math.isfinite(value):
        where = _where(field, path)
        raise InvalidInput(f"'{where}' must be a finite number.", {"field": where})
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, field, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, field, [*path, index])


def _check_profile(profile: dict, where: str) -> None:
    if profile["missing"] > profile["count"]:
        raise InvalidInput(
            f"'{where}.missing' is larger than its count.", {"field": f"{where}.missing"}
        )
    bins = profile.get("bins")
    if bins:
        edges, counts = bins["edges"], bins["counts"]
        if len(edges) != len(counts) + 1:
            raise InvalidInput(
                f"'{where}.bins' needs one more edge than counts.", {"field": f"{where}.bins"}
            )
        if any(b < a for a, b in pairwise(edges)):
            raise InvalidInput(
                f"'{where}.bins.edges' must be ascending.", {"field": f"{where}.bins.edges"}
            )
        if sum(counts) > profile["count"]:
            raise InvalidInput(
                f"'{where}.bins.counts' add up to more than its count.",
                {"field": f"{where}.bins.counts"},
            )
    if profile["type"] == "numeric" and profile["min"] > profile["max"]:
        raise InvalidInput(f"'{where}.min' is larger than its max.", {"field": f"{where}.min"})


def clean_baseline(value: Any, field: str = "baseline") -> dict | None:
    """The baseline if it is valid (None stays None); InvalidInput naming the bad field."""
    if value is None:
        return None
    _check(_BASELINE, value, field)
    for name, profile in value["features"].items():
        _check_profile(profile, f"{field}.features.{name}")
    for key in ("target", "prediction"):
        if key in value:
            _check_profile(value[key], f"{field}.{key}")
    unknown = set(value.get("columns") or []) - set(value["features"])
    if unknown:
        raise InvalidInput(
            f"'{field}.columns' names features without a profile: {', '.join(sorted(unknown))}.",
            {"field": f"{field}.columns"},
        )
    return value


def clean_explanations(value: Any, field: str = "explanations") -> dict | None:
    """The explanations if they are valid (None stays None); InvalidInput naming the field."""
    if value is None:
        return None
    _check(_EXPLANATIONS, value, field)
    return value
