"""Day partitions of the prediction table on Postgres (other databases: one plain table).

A partition holds the records whose `at` falls in one UTC day, so retention is a
`DROP TABLE` of whole days rather than a DELETE that bloats the table. Partitions are
created before a batch that needs them (and ahead of time by the maintenance task).
"""

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction

from registry.models import PredictionRecord

TABLE = PredictionRecord._meta.db_table
_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# Serializes partition DDL between web processes (an arbitrary, fixed advisory lock key).
_LOCK_KEY = 0x6D67_7072  # "mgpr"


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def existing() -> dict[date, str]:
    """The day partitions that exist now, by day."""
    if not is_partitioned():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = {}
    for name in names:
        match = _NAME.match(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


def ensure(days: Iterable[date]) -> list[str]:
    """Create the partitions of `days` that are missing; returns the names created."""
    if not is_partitioned():
        return []
    wanted = sorted(set(days))
    if not wanted:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d FROM unnest(%s::text[]) AS d WHERE to_regclass(d) IS NULL",
            [[partition_name(day) for day in wanted]],
        )
        missing = {row[0] for row in cursor.fetchall()}
    if not missing:
        return []
    created = []
    # Its own transaction: the DDL's lock on the parent table is held only for a moment.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for day in wanted:
            name = partition_name(day)
            if name not in missing:
                continue
            start = datetime.combine(day, time.min, UTC)
            cursor.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE}" '
                "FOR VALUES FROM (%s) TO (%s)",
                [start, start + timedelta(days=1)],
            )
            created.append(name)
    return created


def drop_before(cutoff: date) -> list[str]:
    """Drop every day partition wholly before `cutoff`; returns the names dropped."""
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for day, name in sorted(existing().items()):
            if day < cutoff:
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
    return dropped
