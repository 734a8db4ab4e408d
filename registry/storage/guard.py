"""Locks that keep garbage collection from deleting a blob an upload is landing on.

Whoever publishes or deduplicates onto a blob holds its lock *shared* while it touches the
blob (refreshes its "last touched" time) and checks whether it exists; the collector holds
it *exclusive* while it re-checks the blob's references and age and deletes it. So an
upload either touches the blob before the collector looks (and the blob is kept) or finds
it gone afterwards (and writes it again); it can never count on a blob that is deleted.

On Postgres these are advisory locks, shared by every web and worker node; on SQLite (one
machine) a file lock beside the database stands in for them.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator

# Advisory-lock namespaces (arbitrary constants): one per digest, one for a whole GC run.
_BLOB_LOCKS = 0x6D67_626C  # "mgbl"
_RUN_LOCK = (0x6D67_6763, 0)  # "mggc": gc_store and backup never overlap


def _key(digest: str) -> tuple[int, int]:
    # 32 bits of the digest; a collision only makes two blobs share a lock.
    return _BLOB_LOCKS, int(digest[:8], 16) - 2**31


@contextlib.contextmanager
def _pg_lock(key: tuple[int, int], exclusive: bool) -> Iterator[None]:
    from django.db import connection, transaction

    # Transaction-level locks cannot leak: they end with the transaction — the caller's, if
    # there is one (an upload's lock then lasts until its file is recorded as complete).
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s, %s)", key)
        yield


@contextlib.contextmanager
def _file_lock(name: str, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    from django.conf import settings

    folder = getattr(settings, "VAR_DIR", None) or "."
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def blob_lock(digest: str, exclusive: bool = False):
    """Hold a blob's lock: shared to touch or publish it, exclusive to delete it."""
    if _postgres():
        return _pg_lock(_key(digest), exclusive)
    return _file_lock("store-blobs", exclusive, True)


@contextlib.contextmanager
def _pg_session_lock(key: tuple[int, int], wait: bool) -> Iterator[bool]:
    from django.db import connection

    # Session-level, so that the run's own statements are not one long transaction (a
    # transaction-level blob lock taken inside it would be held until the run ends).
    function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", key)
        got = cursor.fetchone()[0] is not False
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def run_lock(wait: bool = False):
    """The lock of a whole GC run or backup; yields whether it was taken."""
    if _postgres():
        return _pg_session_lock(_RUN_LOCK, wait)
    return _file_lock("store-care", True, wait)
