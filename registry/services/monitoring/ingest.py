"""Writes of ingest tokens: prediction records and feedback, for the token's model only.

A batch is validated whole before anything is written (a bad record: InvalidInput naming
its index, nothing stored), then inserted in one transaction with ON CONFLICT DO NOTHING,
so a re-sent batch is stored once and its repeats are counted as duplicates. Batches are
not audited one by one: they are data, not changes to the registry.

Throughput (issue 8, bench/monitoring.py ingest) is bounded by Python work per record, so
the common case takes shortcuts: bodies are parsed and inputs and outputs encoded by
orjson, features are checked by a few C-level passes (_plain), and only a record those
cannot vouch for is checked value by value, which names the bad field. On Postgres, rows
go by COPY straight into the table: a new batch (the common case) costs what COPY costs.
COPY knows no ON CONFLICT, so a batch holding a record already stored (a re-sent batch)
makes it fail on the unique key; then the batch goes by COPY into a temporary table and
one INSERT ... SELECT ... ON CONFLICT DO NOTHING instead.
"""

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from registry.errors import InvalidInput, PermissionDenied, TooLarge
from registry.models import ALIAS_PATTERN, ApiToken, ModelVersion, PredictionFeedback
from registry.models import PredictionRecord as Record

from .. import access, validation
from . import partitions

INGEST = "ingest"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ENVIRONMENT = re.compile(ALIAS_PATTERN)
MAX_FEATURES = 1000
MAX_STRING = 1000
MAX_OUTPUT_BYTES = 64 * 1024
MAX_ERROR = 10_000
FUTURE_SKEW = timedelta(days=1)  # how far ahead of our clock a record's time may be
ROWS_PER_STATEMENT = 1000
COPY_BLOCK = 1024 * 1024  # characters handed to COPY at a time
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
# Compact JSON as stored; allow_nan=False: never NaN/Infinity, which Postgres refuses.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_FEATURE_TYPES = frozenset({float, int, str, bool, type(None)})
_PREDICTION_COLUMNS = (
    "version_number",
    "environment",
    "request_id",
    "at",
    "latency_ms",
    "error",
    "inputs",
    "outputs",
)


_LONG_DIGITS = re.compile(rb"\d{19}")


def load_batch(data: bytes) -> Any:
    """A request body parsed. orjson reads UTF-8 JSON a few times faster than the standard
    library and refuses NaN, Infinity, numbers that overflow and lone surrogates; what it
    refuses (a syntax error, but also UTF-16 or a BOM) goes the strict standard-library
    reader (validation.json_document), which takes those and says what is wrong with the
    rest. orjson would read an integer beyond 64 bits as the nearest float, so a body with
    19 digits in a row (maybe such an integer) goes that way too, which keeps every integer
    exact."""
    if not _LONG_DIGITS.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return validation.json_document(data, strict=False)


def _dump(value: Any) -> str:
    """Compact JSON as stored, by orjson; by the standard library when orjson refuses (an
    integer beyond 64 bits, from a body the standard library read)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _encode(value)


def require_ingest_token(token: Any) -> ApiToken:
    """The request's ingest token, or PermissionDenied: nothing else may write here."""
    if not isinstance(token, ApiToken) or INGEST not in token.scopes or token.model_id is None:
        raise PermissionDenied(
            "Prediction records and feedback are written with an ingest token "
            '(POST /api/v1/auth/tokens/ with "scopes": ["ingest"] and a "model").'
        )
    if not access.can(access.without_token(token.user), token.model, access.WRITE):
        raise PermissionDenied(
            f"The owner of this ingest token may no longer write to model '{token.model.name}'."
        )
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
    if not value.isascii() and not _utf8(value):  # a lone surrogate: Postgres refuses it
        raise _Bad("must be valid Unicode text", field)
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("must be a finite number", field)
    if isinstance(value, float) and not math.isfinite(value):
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
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):  # not even a "\n"
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
    at = validation.moment(value)
    if at is None:
        raise _Bad("must be an RFC 3339 time with a zone, e.g. 2025-01-02T03:04:05.123Z", "at")
    if at < oldest:
        raise _Bad(f"is older than the retention period ({oldest:%Y-%m-%dT%H:%M:%SZ})", "at")
    if at > newest:
        raise _Bad("is more than a day in the future", "at")
    return at


def _times(oldest: datetime, newest: datetime) -> Callable[[Any], datetime]:
    """_time for one batch, remembering the times it has seen: records of a batch often
    share them, and parsing is a good part of the work per record."""
    seen: dict[str, datetime] = {}

    def parse(value: Any) -> datetime:
        at = seen.get(value) if type(value) is str else None
        if at is None:
            at = _time(value, oldest, newest)
            if len(seen) < 100_000:
                seen[value] = at
        return at

    return parse


def _prediction(record: dict, token: ApiToken, times: Callable[[Any], datetime]) -> tuple:
    """A record's row: the values of _PREDICTION_COLUMNS, inputs and outputs as JSON text."""
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Bad("must be a version number", "version")
    environment = record.get("environment") or token.environment
    if token.environment and environment != token.environment:
        raise PermissionDenied(f"This token may only write for environment '{token.environment}'.")
    if not isinstance(environment, str) or not _ENVIRONMENT.fullmatch(environment):
        raise _Bad("is required: an environment name such as 'staging'", "environment")
    inputs = record.get("inputs", {})
    _inputs(inputs)
    outputs = record.get("outputs", {})
    if not isinstance(outputs, dict):
        raise _Bad("must be an object", "outputs")
    if not _plain_outputs(outputs):
        _json(outputs, "outputs")
    outputs_json = _dump(outputs)
    # A character takes at most 4 bytes: most outputs need not be encoded to know.
    if len(outputs_json) * 4 > MAX_OUTPUT_BYTES and len(outputs_json.encode()) > MAX_OUTPUT_BYTES:
        raise _Bad(f"is larger than {MAX_OUTPUT_BYTES} bytes", "outputs")
    latency = record.get("latency_ms")
    if latency is not None:
        if _number(latency, "latency_ms") < 0:
            raise _Bad("must not be negative", "latency_ms")
        try:
            latency = float(latency)  # the column is a double
        except OverflowError:
            raise _Bad("must be a finite number", "latency_ms") from None
    error = record.get("error")
    error = "" if error is None else _text(error, "error", MAX_ERROR)
    return (
        version,
        environment,
        _request_id(record.get("request_id")),
        times(record.get("at")),
        latency,
        error,
        _dump(inputs),
        outputs_json,
    )


def _inputs(inputs: Any) -> None:
    """Features are flat: names of at most 250 characters to scalars."""
    if not isinstance(inputs, dict) or len(inputs) > MAX_FEATURES:
        raise _Bad(f"must be an object of at most {MAX_FEATURES} features", "inputs")
    if not _plain(inputs):
        for key, value in inputs.items():  # value by value, to name what is wrong
            _text(key, "inputs", 250)
            _scalar(value, f"inputs.{key}")


def _plain(inputs: dict) -> bool:
    """Whether the features are surely fine, by a few C-level passes over them rather than
    calls per value (the common case); False only means "check them one by one"."""
    values = inputs.values()
    types = set(map(type, values))
    if not types <= _FEATURE_TYPES:
        return False
    try:
        names = "".join(inputs)
    except TypeError:  # a name that is not a string
        return False
    # A sum of finite floats is finite, unless it overflows (then: one by one).
    floats = values if len(types) == 1 else [v for v in values if type(v) is float]
    if float in types and not math.isfinite(sum(floats)):
        return False
    texts = names
    if str in types:
        strings = [v for v in values if type(v) is str]
        if max(map(len, strings)) > MAX_STRING:
            return False
        texts += "".join(strings)
    return (
        (len(names) <= 250 or max(map(len, inputs)) <= 250)
        and "\x00" not in texts
        and (texts.isascii() or _utf8(texts))
    )


def _plain_outputs(outputs: dict) -> bool:
    """_plain for outputs, which may also hold flat lists of numbers (probabilities)."""
    lists = [value for value in outputs.values() if type(value) is list]
    if not lists:
        return _plain(outputs)
    numbers = [item for value in lists for item in value]
    if not set(map(type, numbers)) <= {float, int}:
        return False
    try:
        if not math.isfinite(sum(numbers)):
            return False
    except OverflowError:  # an int too large for a float
        return False
    return _plain({key: value for key, value in outputs.items() if type(value) is not list})


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _copy_text(value: Any) -> str:
    """A value in the text format of COPY: \\N is NULL; backslash, tab and newlines escaped."""
    if value is None:
        return "\\N"
    if type(value) is str:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # int, float: repr round-trips exactly


def _copy_line(row: tuple) -> str:
    return "\t".join(map(_copy_text, row)) + "\n"


def _prediction_lines() -> Callable[[tuple], str]:
    """_copy_line for the prediction rows of one batch, at a fraction of its cost per row:
    the version is an int, environment and request id are checked to hold no tab, newline
    or backslash, latency is a float or None, the batch's times repeat, and JSON text
    holds no raw tab or newline (only a backslash needs escaping)."""
    stamps: dict[datetime, str] = {}

    def line(row: tuple) -> str:
        version, environment, request_id, at, latency, error, inputs, outputs = row
        stamp = stamps.get(at)
        if stamp is None:
            stamp = stamps[at] = at.isoformat()
        latency = "\\N" if latency is None else repr(latency)
        error = _copy_text(error) if error else ""
        if "\\" in inputs:
            inputs = inputs.replace("\\", "\\\\")
        if "\\" in outputs:
            outputs = outputs.replace("\\", "\\\\")
        return (
            f"{version}\t{environment}\t{request_id}\t{stamp}\t{latency}\t{error}\t"
            f"{inputs}\t{outputs}\n"
        )

    return line


def _insert(
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple],
    fixed: dict,
    copy_line: Callable[[tuple], str] = _copy_line,
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING of `rows` (values of `columns`), with the `fixed`
    values in every row; returns how many rows were new. Call inside a transaction.
    On Postgres, `copy_line` writes a row as a line of COPY text."""
    names = ", ".join([*fixed, *columns])
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            return _insert_values(cursor, table, names, [(*fixed.values(), *row) for row in rows])
        prefix = "".join(f"{_copy_text(value)}\t" for value in fixed.values())
        text = "".join([prefix + line for line in map(copy_line, rows)])
        try:
            # Straight in, as long as no record is already there (a savepoint undoes it).
            with transaction.atomic(), connection.wrap_database_errors:
                _copy(cursor, f'COPY "{table}" ({names}) FROM STDIN', text)
            return len(rows)
        except IntegrityError:
            pass
        # Through a temporary table of the same column types, which one INSERT then moves
        # over, leaving out what is already there.
        copy_of = f'SELECT {names} FROM "{table}" WITH NO DATA'  # noqa: S608 - fixed names
        cursor.execute(f"CREATE TEMP TABLE ingest_rows ON COMMIT DROP AS {copy_of}")
        with connection.wrap_database_errors:  # as Django's execute does: DataError etc.
            _copy(cursor, f"COPY ingest_rows ({names}) FROM STDIN", text)
        del text
        cursor.execute(
            f'INSERT INTO "{table}" ({names}) '  # noqa: S608 - fixed names
            f"SELECT {names} FROM ingest_rows ON CONFLICT DO NOTHING"
        )
        inserted = cursor.rowcount
        # Gone now, not at commit: tests (and callers) may hold an outer transaction.
        cursor.execute("DROP TABLE ingest_rows")
    return inserted


def _copy(cursor, statement: str, text: str) -> None:
    """COPY ... FROM STDIN with psycopg 3, handing it `text` a block at a time."""
    with cursor.copy(statement) as copy:
        for start in range(0, len(text), COPY_BLOCK):
            copy.write(text[start : start + COPY_BLOCK])


def _insert_values(cursor, table: str, names: str, rows: list[tuple]) -> int:
    """Other databases: multi-row INSERT ... VALUES ... ON CONFLICT DO NOTHING."""
    adapt = connection.ops.adapt_datetimefield_value
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        placeholders = "(" + ", ".join(["%s"] * len(chunk[0])) + ")"
        cursor.execute(
            f'INSERT INTO "{table}" ({names}) VALUES '  # noqa: S608 - fixed names
            + ", ".join([placeholders] * len(chunk))
            + " ON CONFLICT DO NOTHING",
            [adapt(v) if isinstance(v, datetime) else v for row in chunk for v in row],
        )
        inserted += cursor.rowcount
    return inserted


def ingest_predictions(token: ApiToken, payload: Any) -> dict[str, int]:
    """Store a batch of prediction records for the token's model: all of them or none."""
    token = require_ingest_token(token)
    records = _records(payload, PREDICTION_FIELDS)
    now = timezone.now()
    oldest = now - timedelta(days=settings.MODELGATE_PREDICTION_RETENTION_DAYS)
    times = _times(oldest, now + FUTURE_SKEW)
    rows = []
    for index, record in enumerate(records):
        _model(record, token, index)
        try:
            rows.append(_prediction(record, token, times))
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
    partitions.ensure({at.date() for at in {row[3] for row in rows}})
    fixed = {"model_id": token.model_id, "received_at": now, "token_id": token.pk}
    with _refused(), transaction.atomic():
        table = Record._meta.db_table
        accepted = _insert(table, _PREDICTION_COLUMNS, rows, fixed, _prediction_lines())
    return {"accepted": accepted, "duplicates": len(rows) - accepted}


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    """A value the checks let through but the database refuses is the batch's fault: a 400
    (nothing is stored: the transaction rolls back), not a 500."""
    try:
        yield
    except DataError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
        raise InvalidInput(f"The database refused a value of this batch: {reason}") from None


def _feedback(record: dict) -> tuple:
    request_id = _request_id(record.get("request_id"))
    has_label, has_value = record.get("label") is not None, record.get("value") is not None
    if has_label == has_value:
        raise _Bad("needs exactly one of 'label' (a class) or 'value' (a number)", "")
    label = json.dumps(_scalar(record["label"], "label")) if has_label else None
    value = None
    if has_value:
        try:
            value = float(_number(record["value"], "value"))  # the column is a double
        except OverflowError:
            raise _Bad("must be a finite number", "value") from None
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
    with _refused(), transaction.atomic():
        accepted = _insert(
            PredictionFeedback._meta.db_table,
            ["request_id", "label", "value"],
            rows,
            {"model_id": token.model_id, "at": timezone.now()},
        )
    return {"accepted": accepted, "duplicates": len(rows) - accepted}
