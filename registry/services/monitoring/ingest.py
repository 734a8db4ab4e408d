"""Writes of ingest tokens: prediction records and feedback, for the token's model only.

A batch is validated whole before anything is written (a bad record: InvalidInput naming
its index, nothing stored), then inserted in one transaction with ON CONFLICT DO NOTHING,
so a re-sent batch is stored once and its repeats are counted as duplicates. Batches are
not audited one by one: they are data, not changes to the registry.
"""

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from registry.errors import InvalidInput, PermissionDenied, TooLarge
from registry.models import ALIAS_PATTERN, ApiToken, ModelVersion, PredictionFeedback
from registry.models import PredictionRecord as Record

from .. import access
from . import partitions

INGEST = "ingest"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ENVIRONMENT = re.compile(ALIAS_PATTERN)
MAX_FEATURES = 1000
MAX_STRING = 1000
MAX_OUTPUT_BYTES = 64 * 1024
MAX_ERROR = 10_000
FUTURE_SKEW = timedelta(days=1)  # how far ahead of our clock a record's time may be
ROWS_PER_STATEMENT = 1000
PREDICTION_FIELDS = {
    "model",
    "version",
    "environment",
    "request_id",
    "at",
    "inputs",
    "outputs",
    "latency_ms",
    "error",
}
FEEDBACK_FIELDS = {"model", "request_id", "label", "value"}


def require_ingest_token(token: Any) -> ApiToken:
    """The request's ingest token, or PermissionDenied: nothing else may write here."""
    if not isinstance(token, ApiToken) or INGEST not in token.scopes or token.model_id is None:
        raise PermissionDenied(
            "Prediction records and feedback are written with an ingest token "
            '(POST /api/v1/auth/tokens/ with "scopes": ["ingest"] and a "model").'
        )
    if access.WRITE not in access.role_scopes(token.user):
        raise PermissionDenied("The owner of this ingest token may no longer write to models.")
    return token


class _Bad(Exception):
    """A problem with one record: (message, field) before the index is known."""


def _fail(index: int, error: _Bad) -> InvalidInput:
    message, field = error.args
    where = f"records[{index}].{field}" if field else f"records[{index}]"
    return InvalidInput(f"{where}: {message}", {"index": index, "field": field})


def _records(payload: Any, allowed: set[str]) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise InvalidInput('The body must be {"records": [...]}.')
    if set(payload) - {"records"}:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(set(payload) - {'records'}))}.")
    records = payload["records"]
    limit = settings.MODELGATE_INGEST_MAX_RECORDS
    if len(records) > limit:
        raise TooLarge(
            f"A batch holds at most {limit} records; this one has {len(records)}. "
            "Send it in smaller batches.",
            {"max_records": limit, "records": len(records)},
        )
    if not records:
        raise InvalidInput("'records' is empty.")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(f"records[{index}] must be an object.", {"index": index})
        unknown = set(record) - allowed
        if unknown:
            raise InvalidInput(
                f"records[{index}]: unknown fields {', '.join(sorted(map(str, unknown)))}.",
                {"index": index, "allowed": sorted(allowed)},
            )
    return records


def _text(value: Any, field: str, limit: int = MAX_STRING) -> str:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise _Bad(f"must be a string of at most {limit} characters, without NUL", field)
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad("must be a finite number", field)
    return value


def _scalar(value: Any, field: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value, field)
    return _number(value, field)


def _json(value: Any, field: str, depth: int = 0) -> None:
    """Any JSON whose strings hold no NUL and whose numbers are finite (what Postgres takes)."""
    if depth > 20:
        raise _Bad("is nested too deeply", field)
    if isinstance(value, dict):
        for key, item in value.items():
            _text(key, field, MAX_STRING)
            _json(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json(item, field, depth + 1)
    elif isinstance(value, str):
        _text(value, field, MAX_OUTPUT_BYTES)
    elif value is not None and not isinstance(value, bool):
        _number(value, field)


def _request_id(value: Any) -> str:
    if not isinstance(value, str) or not REQUEST_ID.match(value):
        raise _Bad(
            "must be 1-128 characters of letters, digits, '.', '_', ':' and '-'", "request_id"
        )
    return value


def _model(record: dict, token: ApiToken, index: int) -> None:
    name = record.get("model")
    if name is not None and name != token.model.name:
        raise PermissionDenied(
            f"records[{index}]: this token may only write for model '{token.model.name}'.",
            {"index": index, "model": name},
        )


def _time(value: Any, oldest: datetime, newest: datetime) -> datetime:
    at = parse_datetime(value) if isinstance(value, str) else None
    if at is None or at.tzinfo is None:
        raise _Bad("must be an RFC 3339 time with a zone, e.g. 2025-01-02T03:04:05.123Z", "at")
    at = at.astimezone(UTC)
    if at < oldest:
        raise _Bad(f"is older than the retention period ({oldest:%Y-%m-%dT%H:%M:%SZ})", "at")
    if at > newest:
        raise _Bad("is more than a day in the future", "at")
    return at


def _prediction(record: dict, token: ApiToken, oldest: datetime, newest: datetime) -> tuple:
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Bad("must be a version number", "version")
    environment = record.get("environment") or token.environment
    if token.environment and environment != token.environment:
        raise PermissionDenied(f"This token may only write for environment '{token.environment}'.")
    if not isinstance(environment, str) or not _ENVIRONMENT.match(environment):
        raise _Bad("is required: an environment name such as 'staging'", "environment")
    inputs = record.get("inputs", {})
    if not isinstance(inputs, dict) or len(inputs) > MAX_FEATURES:
        raise _Bad(f"must be an object of at most {MAX_FEATURES} features", "inputs")
    for key, value in inputs.items():
        _text(key, "inputs", 250)
        _scalar(value, f"inputs.{key}")
    outputs = record.get("outputs", {})
    if not isinstance(outputs, dict):
        raise _Bad("must be an object", "outputs")
    _json(outputs, "outputs")
    outputs_json = json.dumps(outputs, separators=(",", ":"))
    if len(outputs_json) > MAX_OUTPUT_BYTES:
        raise _Bad(f"is larger than {MAX_OUTPUT_BYTES} bytes", "outputs")
    latency = record.get("latency_ms")
    if latency is not None and _number(latency, "latency_ms") < 0:
        raise _Bad("must not be negative", "latency_ms")
    error = record.get("error")
    error = "" if error is None else _text(error, "error", MAX_ERROR)
    return (
        version,
        environment,
        _request_id(record.get("request_id")),
        _time(record.get("at"), oldest, newest),
        json.dumps(inputs, separators=(",", ":")),
        outputs_json,
        latency,
        error,
    )


def _insert(table: str, columns: Sequence[str], rows: Iterable[tuple]) -> int:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING; returns how many rows were new."""
    rows = list(rows)
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    names = ", ".join(columns)
    inserted = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            cursor.execute(
                f'INSERT INTO "{table}" ({names}) VALUES '  # noqa: S608 - fixed names
                + ", ".join([placeholders] * len(chunk))
                + " ON CONFLICT DO NOTHING",
                [value for row in chunk for value in row],
            )
            inserted += cursor.rowcount
    return inserted


def ingest_predictions(token: ApiToken, payload: Any) -> dict[str, int]:
    """Store a batch of prediction records for the token's model: all of them or none."""
    token = require_ingest_token(token)
    records = _records(payload, PREDICTION_FIELDS)
    now = timezone.now()
    oldest = now - timedelta(days=settings.MODELGATE_PREDICTION_RETENTION_DAYS)
    rows = []
    for index, record in enumerate(records):
        _model(record, token, index)
        try:
            rows.append(_prediction(record, token, oldest, now + FUTURE_SKEW))
        except _Bad as exc:
            raise _fail(index, exc) from None
        except PermissionDenied as exc:
            raise PermissionDenied(f"records[{index}]: {exc.message}", {"index": index}) from None
    numbers = {row[0] for row in rows}
    known = set(
        ModelVersion.objects.filter(model_id=token.model_id, number__in=numbers).values_list(
            "number", flat=True
        )
    )
    for index, row in enumerate(rows):
        if row[0] not in known:
            raise InvalidInput(
                f"records[{index}].version: model '{token.model.name}' has no version {row[0]}.",
                {"index": index, "field": "version"},
            )
    partitions.ensure(row[3].date() for row in rows)
    adapt = connection.ops.adapt_datetimefield_value
    received = adapt(now)
    columns = [
        "model_id",
        "version_number",
        "environment",
        "request_id",
        "at",
        "inputs",
        "outputs",
        "latency_ms",
        "error",
        "received_at",
    ]
    with transaction.atomic():
        accepted = _insert(
            Record._meta.db_table,
            columns,
            ((token.model_id, *row[:3], adapt(row[3]), *row[4:], received) for row in rows),
        )
    return {"accepted": accepted, "duplicates": len(rows) - accepted}


def _feedback(record: dict) -> tuple:
    request_id = _request_id(record.get("request_id"))
    has_label, has_value = record.get("label") is not None, record.get("value") is not None
    if has_label == has_value:
        raise _Bad("needs exactly one of 'label' (a class) or 'value' (a number)", "")
    label = json.dumps(_scalar(record["label"], "label")) if has_label else None
    value = _number(record["value"], "value") if has_value else None
    return request_id, label, value


def ingest_feedback(token: ApiToken, payload: Any) -> dict[str, int]:
    """Store ground truth for predictions of the token's model, keyed by request id; the
    first answer for a request id is kept, repeats count as duplicates."""
    token = require_ingest_token(token)
    records = _records(payload, FEEDBACK_FIELDS)
    rows = []
    for index, record in enumerate(records):
        _model(record, token, index)
        try:
            rows.append(_feedback(record))
        except _Bad as exc:
            raise _fail(index, exc) from None
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic():
        accepted = _insert(
            PredictionFeedback._meta.db_table,
            ["model_id", "request_id", "label", "value", "at"],
            ((token.model_id, *row, now) for row in rows),
        )
    return {"accepted": accepted, "duplicates": len(rows) - accepted}
