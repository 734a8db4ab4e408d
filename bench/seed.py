"""Bulk-seed Modelgate's database with models and ready, metadata-only versions.

Rows go in with Postgres COPY (about 1,000,000 versions in a minute), not through the
API: the point is to measure reads at that scale, not to wait for it. Model `m-0000` …
get versions 1…N, each tagged `team: t<N % 10>` with a metric `accuracy` spread over
[0, 1), and an alias `champion` on version 1, the same data the MLflow seeder writes.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import psycopg

from .core import BenchError
from .server import PG_DSN

BATCH = 50_000
VERSION_VALUES = {
    "state": "ready",
    "status_reason": "",
    "description": "",
    "params": "{}",
    "lineage": "{}",
    "framework": "",
    "model_card": "",
    "scan_status": "clean",
    "scan_findings": "[]",
    "package_state": "none",
    "package_sha256": "",
    "requirements": "[]",
    "extracted": "{}",
    "pipeline": "{}",
    # Marked as mirrored already: otherwise the worker's Git sync would commit every
    # seeded version, one by one, and compete with the server for the CPUs.
    "git_commit": "0" * 40,
}


def _not_null_columns(cursor, table: str) -> set[str]:
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL",
        [table],
    )
    return {row[0] for row in cursor.fetchall()}


def _copy(cursor, table: str, columns: list[str], rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % BATCH == 0:
            _send(cursor, sql, buffer)
            buffer = io.StringIO()
            writer = csv.writer(buffer)
    _send(cursor, sql, buffer)


def _send(cursor, sql: str, buffer: io.StringIO) -> None:
    with cursor.copy(sql) as copy:
        copy.write(buffer.getvalue())


def seed(database: str, models: int, per_model: int, first_model: int = 0) -> None:
    """Add models m-<first_model> … with `per_model` versions each (ids continue)."""
    conn = psycopg.connect(PG_DSN.replace("dbname=postgres", f"dbname={database}"))
    now = datetime.now(UTC).isoformat()
    try:
        with conn.transaction(), conn.cursor() as cursor:
            required = _not_null_columns(cursor, "registry_modelversion")
            columns = [
                "model_id", "number", "metrics", "tags", "created_at", "updated_at",
                "finalized_at", *VERSION_VALUES,
            ]  # fmt: skip
            missing = required - set(columns) - {"id"}
            if missing:
                raise BenchError(f"seed.py does not fill new NOT NULL columns: {missing}")
            names = [f"m-{m:04d}" for m in range(first_model, first_model + models)]
            cursor.execute(
                "INSERT INTO registry_team (name, description, created_at) "
                "VALUES ('default', '', %s) ON CONFLICT (name) DO NOTHING",
                [now],
            )
            cursor.execute(
                "INSERT INTO registry_registeredmodel (name, description, tags, team_id, "
                "visibility, primary_metric, last_version_number, created_at, updated_at) "
                "SELECT n, '', '{}', (SELECT id FROM registry_team WHERE name = 'default'), "
                "'internal', 'accuracy', %s, %s, %s FROM unnest(%s) AS n "
                "RETURNING id, name",
                [per_model, now, now, names],
            )
            model_ids = sorted(row[0] for row in cursor.fetchall())
            fixed = list(VERSION_VALUES.values())

            def rows():
                for model_id in model_ids:
                    for number in range(1, per_model + 1):
                        metrics = json.dumps({"accuracy": (number * 7919 % 10007) / 10007})
                        tags = json.dumps({"team": f"t{number % 10}"})
                        yield [model_id, number, metrics, tags, now, now, now, *fixed]

            _copy(cursor, "registry_modelversion", columns, rows())
            cursor.execute(
                "INSERT INTO registry_alias (model_id, name, version_id, updated_at) "
                "SELECT v.model_id, 'champion', v.id, %s FROM registry_modelversion v "
                "WHERE v.model_id = ANY(%s) AND v.number = 1",
                [now, model_ids],
            )
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE registry_modelversion")
            cursor.execute("ANALYZE registry_alias")
            cursor.execute("ANALYZE registry_registeredmodel")
    finally:
        conn.close()
