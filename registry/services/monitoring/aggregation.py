"""Rolling prediction records into windows per model, version and environment.

`aggregate()` (the beat task, every MODELGATE_MONITOR_SECONDS) finds the windows that got
records or feedback since its last run (by when they were received, so late records and
late labels re-aggregate their window),
recomputes each of them whole (idempotent: a window is a pure function of its records) and
stores it in MonitoringWindow. A window holds: requests, errors, latency p50/p95/p99, the
prediction's distribution, per-feature drift against the version's baseline (see `drift`)
and live quality where feedback joined (accuracy/F1 or MAE/RMSE, named like the offline
metrics).

On Postgres the heavy lifting is one scan in SQL per window: every feature is turned into a
small bin code (`width_bucket` over the baseline's own edges, `array_position` over its top
categories) and counted with GROUPING SETS, so a window of a million 50-feature records
never leaves the database as rows. SQLite (the laptop) reads the rows and does the same in
numpy.
"""

import logging
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from registry.models import ModelVersion, MonitoringWindow, PredictionFeedback, PredictionRecord

from . import drift

log = logging.getLogger(__name__)

RECORDS = PredictionRecord._meta.db_table
FEEDBACK = PredictionFeedback._meta.db_table
# Records committed while the last run was reading are caught by looking this far back.
SAFETY = timedelta(seconds=120)
MISSING, WRONG_TYPE, OTHER = -1, -2, 0  # bin codes besides the bins themselves
_LOCK_KEY = 0x6D67_6167  # "mgag": one aggregation at a time across workers
PREDICTION = "__prediction__"


def window_seconds() -> int:
    return max(1, int(settings.MODELGATE_MONITOR_WINDOW_SECONDS))


def window_start(at: datetime, length: int | None = None) -> datetime:
    length = length or window_seconds()
    epoch = int(at.timestamp()) // length * length
    return datetime.fromtimestamp(epoch, UTC)


# --- what to bin: the baseline's features, each with its JSON key(s) and bins ----------


class Binning:
    """One column of the baseline: numeric (edges) or categorical (top values + other)."""

    def __init__(self, name: str, keys: list[str], profile: dict):
        self.name, self.keys, self.profile = name, keys, profile
        numeric = drift.numeric_bins(profile)
        categorical = drift.category_bins(profile)
        self.kind = "numeric" if numeric else "categorical" if categorical else None
        if numeric:
            self.edges, self.baseline_counts = numeric
        elif categorical:
            self.values, self.baseline_counts = categorical

    @property
    def bins(self) -> int:
        return len(self.baseline_counts)

    def live_counts(self, codes: Counter) -> list[int]:
        """Live counts in the baseline's order (numeric: bins; categorical: top..., other)."""
        if self.kind == "numeric":
            return [int(codes.get(i, 0)) for i in range(self.bins)]
        return [int(codes.get(i + 1, 0)) for i in range(len(self.values))] + [
            int(codes.get(OTHER, 0))
        ]

    def code(self, value: Any) -> int:
        """The bin code of one value (the SQLite path; Postgres computes the same in SQL)."""
        if value is None:
            return MISSING
        if self.kind == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return WRONG_TYPE
            # numpy's bins: [a, b) but the last [a, b]; outside values go to the end bins.
            return int(np.searchsorted(self.edges[1:-1], value, side="right"))
        text = drift.category_text(value)
        return self.values.index(text) + 1 if text in self.values else OTHER


def binnings(version: ModelVersion) -> list[Binning]:
    baseline = version.baseline or {}
    columns = baseline.get("columns") or []
    found = []
    for name, profile in (baseline.get("features") or {}).items():
        # Positional inputs ({"instances": [[...]]}) are captured as "0", "1", ...
        keys = [name] + ([str(columns.index(name))] if name in columns else [])
        binning = Binning(name, keys, profile)
        if binning.kind:
            found.append(binning)
    return found


def prediction_binning(version: ModelVersion) -> Binning | None:
    profile = (version.baseline or {}).get("prediction")
    binning = Binning(PREDICTION, ["prediction"], profile) if profile else None
    return binning if binning and binning.kind else None


# --- one window ----------------------------------------------------------------------


def _sql_code(binning: Binning, value: str, params: list) -> str:
    """SQL for the bin code of the JSON value `value` (an SQL expression)."""
    if binning.kind == "numeric":
        params.append([float(e) for e in binning.edges[1:-1]])
        return (
            f"CASE WHEN jsonb_typeof({value}) = 'number' "
            f"THEN width_bucket(({value})::float8, %s::float8[]) "
            f"WHEN {value} IS NULL OR jsonb_typeof({value}) = 'null' THEN {MISSING} "
            f"ELSE {WRONG_TYPE} END"
        )
    params.append(binning.values)
    return (
        f"CASE WHEN {value} IS NULL OR jsonb_typeof({value}) = 'null' THEN {MISSING} "
        f"ELSE COALESCE(array_position(%s::text[], {value} #>> '{{}}'), {OTHER}) END"
    )


def _postgres_window(where: str, args: list, columns: list[Binning]) -> tuple[dict, list]:
    """(basic stats, [Counter of codes per column]) in two scans of the window's rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE error <> ''), "  # noqa: S608 - fixed names
            "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) "
            f"FROM {RECORDS} WHERE {where}",
            args,
        )
        requests, errors, latency = cursor.fetchone()
        stats = {"requests": requests, "errors": errors, "latency": latency or [None] * 3}
        # Drift of a busy window is measured on a deterministic sample (by request id, so a
        # re-run counts the same records): its proportions, and so its PSI, hardly move.
        limit, sample, sample_args = settings.MODELGATE_DRIFT_SAMPLE, "", []
        stats["sampled"], stats["sample"] = 1.0, ("", [])
        if limit and requests - errors > limit:
            threshold = math.ceil(65536 * limit / (requests - errors))
            sample, sample_args = " AND (hashtext(request_id) & 65535) < %s", [threshold]
            stats["sampled"], stats["sample"] = threshold / 65536, (sample, sample_args)
        counts = [Counter() for _ in columns]
        if not columns or requests == errors:
            return stats, counts
        # Each column's JSON value is looked up once (by name, else by position) ...
        values, value_params = [], []
        for index, binning in enumerate(columns):
            source = "outputs" if binning.name == PREDICTION else "inputs"
            value_params.extend(binning.keys)
            lookups = ", ".join(f"{source} -> %s" for _ in binning.keys)
            values.append(f"COALESCE({lookups}) AS v{index}")
        # ... then coded, and the (column, code) pairs counted in one (parallel) hash
        # aggregate; cheaper than GROUPING SETS, which Postgres cannot run in parallel.
        params: list = []  # the codes' parameters come first in the statement
        codes = [_sql_code(b, f"v{i}", params) for i, b in enumerate(columns)]
        cursor.execute(
            f"SELECT u.i, u.code, count(*) FROM (SELECT ARRAY[{', '.join(codes)}] AS codes "  # noqa: S608
            f"FROM (SELECT {', '.join(values)} FROM {RECORDS} "
            f"WHERE {where} AND error = ''{sample}) AS v) AS c, "
            "unnest(c.codes) WITH ORDINALITY AS u(code, i) GROUP BY 1, 2",
            params + value_params + args + sample_args,
        )
        for index, code, count in cursor.fetchall():
            counts[index - 1][code] = count
    return stats, counts


def _python_window(records, columns: list[Binning]) -> tuple[dict, list]:
    latencies, requests, errors = [], 0, 0
    counts = [Counter() for _ in columns]
    for inputs, outputs, latency, error in records:
        requests += 1
        if latency is not None:
            latencies.append(latency)
        if error:
            errors += 1
            continue
        for index, binning in enumerate(columns):
            source = outputs if binning.name == PREDICTION else inputs
            value = next((source[k] for k in binning.keys if k in source), None)
            counts[index][binning.code(value)] += 1
    latency = np.percentile(latencies, [50, 95, 99]).tolist() if latencies else [None, None, None]
    stats = {"requests": requests, "errors": errors, "latency": latency, "sampled": 1.0}
    return stats, counts


def _in_window(version: ModelVersion, environment: str, start: datetime, end: datetime):
    """The version's prediction records in one environment's window [start, end)."""
    return PredictionRecord.objects.filter(
        model_id=version.model_id,
        version_number=version.number,
        environment=environment,
        at__gte=start,
        at__lt=end,
    )


def _number(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _labelled(version: ModelVersion, environment: str, start, end) -> list[tuple]:
    """(prediction, label, value) of the window's records with feedback; predictions and
    labels as their category text, or as numbers where they are numbers."""
    if connection.vendor == "postgresql":
        number = "CASE WHEN jsonb_typeof({0}) = 'number' THEN ({0})::float8 END"
        prediction = "r.outputs -> 'prediction'"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {prediction} #>> '{{}}', {number.format(prediction)}, "  # noqa: S608
                f"f.label #>> '{{}}', {number.format('f.label')}, f.value "
                f"FROM {RECORDS} r JOIN {FEEDBACK} f "
                "ON f.model_id = r.model_id AND f.request_id = r.request_id "
                "WHERE r.model_id = %s AND r.version_number = %s AND r.environment = %s "
                "AND r.at >= %s AND r.at < %s AND r.error = ''",
                [version.model_id, version.number, environment, start, end],
            )
            rows = cursor.fetchall()
    else:
        records = dict(
            _in_window(version, environment, start, end)
            .filter(error="")
            .values_list("request_id", "outputs")
        )
        feedback = PredictionFeedback.objects.filter(
            model_id=version.model_id, request_id__in=list(records)
        ).values_list("request_id", "label", "value")
        rows = []
        for rid, label, value in feedback:
            predicted = records[rid].get("prediction")
            rows.append((predicted, _number(predicted), label, _number(label), value))

    def text(raw, numeric):  # 1, 1.0 and "1" are the same class
        return drift.category_text(numeric if numeric is not None else raw)

    return [
        (
            None if p is None else text(p, pn),
            pn,
            None if t is None else text(t, tn),
            v,
        )
        for p, pn, t, tn, v in rows
    ]


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted))


def _f1(truth: np.ndarray, predicted: np.ndarray, positive: str) -> float:
    """F1 of one class, 2TP / (2TP + FP + FN), 0 where it has no TP, FP or FN (as
    scikit-learn's f1_score with zero_division=0)."""
    is_truth, is_predicted = truth == positive, predicted == positive
    tp = int(np.sum(is_truth & is_predicted))
    wrong = int(np.sum(is_truth != is_predicted))  # FP + FN
    return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0


def live_metrics(rows: list[tuple]) -> tuple[dict[str, float], int]:
    """Accuracy and F1 where labels came back, MAE and RMSE where values did.

    In numpy, the runtime dependency (scikit-learn is only a dev extra); the same numbers as
    sklearn.metrics' accuracy_score and f1_score (binary on 0/1 or false/true, else
    macro-averaged over the classes seen, zero_division=0), as tests compare.
    """
    labels = [(p, t) for p, _, t, _ in rows if t is not None and p is not None]
    values = [(pn, v) for _, pn, _, v in rows if v is not None and pn is not None]
    metrics: dict[str, float] = {}
    if labels:
        predicted = np.asarray([p for p, _ in labels], dtype=object)
        truth = np.asarray([t for _, t in labels], dtype=object)
        classes = set(predicted) | set(truth)
        binary = classes <= {"0", "1"} or classes <= {"false", "true"}
        positive = "1" if classes <= {"0", "1"} else "true"
        metrics["accuracy"] = _accuracy(truth, predicted)
        metrics["f1"] = (
            _f1(truth, predicted, positive)
            if binary
            else float(np.mean([_f1(truth, predicted, c) for c in sorted(classes)]))
        )
    if values:
        error = np.asarray([p - v for p, v in values])
        metrics["mae"] = float(np.mean(np.abs(error)))
        metrics["rmse"] = float(math.sqrt(np.mean(error**2)))
    return {k: round(v, 6) for k, v in metrics.items()}, len(labels) + len(values)


def _distribution(binning: Binning | None, codes: Counter) -> dict:
    if binning is None:
        return {}
    live = binning.live_counts(codes)
    if binning.kind == "numeric":
        return {"edges": binning.edges, "counts": live}
    return {"values": dict(zip([*binning.values, drift.OTHER], live, strict=True))}


def compute_window(version: ModelVersion, environment: str, start: datetime, end: datetime):
    """The aggregate of one window, as MonitoringWindow fields (nothing written)."""
    columns = binnings(version)
    prediction = prediction_binning(version)
    everything = columns + ([prediction] if prediction else [])
    if connection.vendor == "postgresql":
        where = (
            "model_id = %s AND version_number = %s AND environment = %s AND at >= %s AND at < %s"
        )
        args = [version.model_id, version.number, environment, start, end]
        stats, counts = _postgres_window(where, args, everything)
    else:
        records = _in_window(version, environment, start, end).values_list(
            "inputs", "outputs", "latency_ms", "error"
        )
        stats, counts = _python_window(records.iterator(), everything)
    sampled = stats["sampled"]

    def scaled(values: list[int]) -> list[int]:  # a sample's counts, as the window's
        return values if sampled == 1 else [round(v / sampled) for v in values]

    features = {}
    for binning, codes in zip(columns, counts, strict=False):
        live = binning.live_counts(codes)
        result = drift.compare(binning.baseline_counts, live)  # the test: on the sample
        missing = int(codes.get(MISSING, 0) + codes.get(WRONG_TYPE, 0))
        result.update(missing=scaled([missing])[0], counts=scaled(live))
        if sampled != 1:
            result["sampled"] = round(sampled, 6)
        features[binning.name] = result
    if prediction is not None:
        predictions = _distribution(prediction, counts[-1])
        key = "counts" if "counts" in predictions else "values"
        if key == "counts":
            predictions["counts"] = scaled(predictions["counts"])
        else:
            names = list(predictions["values"])
            predictions["values"] = dict(
                zip(names, scaled(list(predictions["values"].values())), strict=True)
            )
    else:
        predictions = _unbinned_predictions(version, environment, start, end, stats)
    metrics, labelled = live_metrics(_labelled(version, environment, start, end))
    p50, p95, p99 = stats["latency"]
    sources = (
        _in_window(version, environment, start, end)
        .values("token_id")
        .annotate(requests=Count("request_id"), errors=Count("request_id", filter=~Q(error="")))
    )
    return {
        "model_id": version.model_id,
        "end": end,
        "requests": stats["requests"],
        "errors": stats["errors"],
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "predictions": predictions,
        "drift": features,
        "live_metrics": metrics,
        "labelled": labelled,
        "sources": {str(s["token_id"]): [s["requests"], s["errors"]] for s in sources},
    }


def _unbinned_predictions(version, environment, start, end, stats, top: int = 20) -> dict:
    """Without a baseline profile of the prediction: its most frequent values."""
    if connection.vendor == "postgresql":
        sample, sample_args = stats.get("sample") or ("", [])
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT outputs ->> 'prediction', count(*) FROM {RECORDS} "  # noqa: S608
                "WHERE model_id = %s AND version_number = %s AND environment = %s "
                f"AND at >= %s AND at < %s AND error = '' AND outputs ? 'prediction'{sample} "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT %s",
                [version.model_id, version.number, environment, start, end, *sample_args, top],
            )
            found = cursor.fetchall()
        return {"values": {str(v): round(n / stats["sampled"]) for v, n in found}}
    found = Counter()
    records = _in_window(version, environment, start, end).filter(error="")
    for outputs in records.values_list("outputs", flat=True).iterator():
        if "prediction" in outputs:
            found[drift.category_text(outputs["prediction"])] += 1
    return {"values": dict(found.most_common(top))}


def aggregate_window(version: ModelVersion, environment: str, start: datetime, now=None):
    """Recompute one window and store it (replacing what was there)."""
    end = start + timedelta(seconds=window_seconds())
    fields = compute_window(version, environment, start, end)
    with transaction.atomic():
        window, _ = MonitoringWindow.objects.update_or_create(
            version=version,
            environment=environment,
            start=start,
            defaults={**fields, "computed_at": now or timezone.now()},
        )
    return window


# --- the beat task -------------------------------------------------------------------


def dirty_windows(since: datetime) -> set[tuple[int, int, str, datetime]]:
    """(model id, version number, environment, window start) of the windows with records
    or feedback received since `since`."""
    length = window_seconds()
    if connection.vendor == "postgresql":
        slot = "floor(extract(epoch FROM r.at) / %s)::bigint"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT r.model_id, r.version_number, r.environment, {slot} "  # noqa: S608
                f"FROM {RECORDS} r WHERE r.received_at >= %s GROUP BY 1, 2, 3, 4 "
                f"UNION SELECT r.model_id, r.version_number, r.environment, {slot} "
                f"FROM {FEEDBACK} f JOIN {RECORDS} r "
                "ON r.model_id = f.model_id AND r.request_id = f.request_id "
                "WHERE f.at >= %s GROUP BY 1, 2, 3, 4",
                [length, since, length, since],
            )
            return {
                (m, v, e, datetime.fromtimestamp(slot * length, UTC))
                for m, v, e, slot in cursor.fetchall()
            }
    fields = ("model_id", "version_number", "environment", "at")
    rows = list(PredictionRecord.objects.filter(received_at__gte=since).values_list(*fields))
    for model_id, request_id in PredictionFeedback.objects.filter(at__gte=since).values_list(
        "model_id", "request_id"
    ):
        rows += PredictionRecord.objects.filter(
            model_id=model_id, request_id=request_id
        ).values_list(*fields)
    return {(m, v, e, window_start(at, length)) for m, v, e, at in rows}


def _try_lock() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
        return cursor.fetchone()[0]


def _unlock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def aggregate(now: datetime | None = None) -> dict[str, int]:
    """Recompute every window that got records since the last run; safe to run twice."""
    now = now or timezone.now()
    if not _try_lock():
        return {"windows": 0, "skipped": 1}
    try:
        last = MonitoringWindow.objects.aggregate(last=Max("computed_at"))["last"]
        backfill = now - timedelta(seconds=settings.MODELGATE_MONITOR_BACKFILL_SECONDS)
        since = max(last - SAFETY, backfill) if last else backfill
        dirty = dirty_windows(since)
        versions = {
            (v.model_id, v.number): v
            for v in ModelVersion.objects.filter(
                model_id__in={d[0] for d in dirty}, number__in={d[1] for d in dirty}
            ).select_related("model")
        }
        done = 0
        for model_id, number, environment, start in sorted(dirty, key=lambda d: d[3]):
            version = versions.get((model_id, number))
            if version is not None:
                aggregate_window(version, environment, start, now)
                done += 1
        return {"windows": done, "skipped": 0}
    finally:
        _unlock()
