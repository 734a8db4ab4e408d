"""Background jobs that are never lost and never run twice at once.

`enqueue` records the job in the caller's transaction and publishes it after commit;
`run` takes a lease before doing the work, so a duplicate message is a no-op; the
reconciler (a beat task) re-publishes jobs whose message never arrived or whose worker
died (its lease ran out). A failed job runs again after its kind's `Retry` delays.

A job asked for while it runs is marked `rerun` and queued again when that run ends, so
every request is followed by a run that starts after it; `running` is never overwritten.
A coalesced job that is already queued keeps its message and its re-send time: either
that message arrives, or the reconciler sends another when the time comes.

`run`, `acquire` and `reconcile` take an optional `now`, so tests move time instead of waiting.
"""

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from registry.models import Job

log = logging.getLogger(__name__)

# kind -> the service that does the work; filled in by the modules that own each kind.
HANDLERS: dict[str, Callable[..., None]] = {}
# kind -> what to do when a job has failed too often (e.g. mark the version failed).
GIVE_UP: dict[str, Callable[[int, str], None]] = {}


@dataclass(frozen=True)
class Retry:
    """A failed job runs again `delays[n]` seconds after its (n+1)th failure, each delay
    scaled by a random factor within ±`jitter` (so receivers that failed together are not
    hit together again); after the last delay it gives up."""

    delays: tuple[float, ...]
    jitter: float = 0.0

    def delay(self, failures: int) -> float | None:
        """Seconds until the next attempt after `failures` failed ones; None: give up."""
        if failures > len(self.delays):
            return None
        return self.delays[failures - 1] * random.uniform(1 - self.jitter, 1 + self.jitter)


def default_retry() -> Retry:
    """Kinds without their own: 2, 4, 8… seconds (at most 5 minutes), MAX_ATTEMPTS in all."""
    attempts = settings.MODELGATE_JOB_MAX_ATTEMPTS
    return Retry(tuple(min(2**n, 300) for n in range(1, attempts)))


# kind -> its retry policy (read when needed, so settings changes apply); else default_retry.
RETRY: dict[str, Callable[[], Retry]] = {}
# Kinds whose handler takes the job's clock: handler(ref_id, now).
CLOCKED: set[str] = set()

TASK_NAME = "modelgate.run_job"
# Jobs that may run for minutes go to their own queue (see CELERY_TASK_QUEUES).
QUEUES = {"process_version": "processing"}
# The longest wait between two re-sends of a queued job, in re-send intervals.
MAX_RESEND_BACKOFF = 16
# A retry due later than this (seconds) is not published with a countdown: a worker would
# hold the message all that time, and Redis re-delivers one held past its visibility
# timeout. The job stays queued and the reconciler publishes it once it is due.
MAX_COUNTDOWN = 600


def handler(
    kind: str,
    give_up: Callable[[int, str], None] | None = None,
    retry: Callable[[], Retry] | None = None,
    clocked: bool = False,
):
    def register(function: Callable[..., None]) -> Callable[..., None]:
        HANDLERS[kind] = function
        if give_up is not None:
            GIVE_UP[kind] = give_up
        if retry is not None:
            RETRY[kind] = retry
        if clocked:
            CLOCKED.add(kind)
        return function

    return register


def clock() -> datetime:
    """The time when no `now` is given; tests replace it to step through time."""
    return timezone.now()


def _lease() -> timedelta:
    return timedelta(seconds=settings.MODELGATE_JOB_LEASE_SECONDS)


def _resend_after() -> timedelta:
    return timedelta(seconds=settings.MODELGATE_JOB_RESEND_SECONDS)


def enqueue(kind: str, ref_id: int, delay: float = 0, coalesce: bool = False) -> None:
    """Record the job now; publish it once the surrounding transaction commits.

    Running, it is marked to run once more when done. Already queued, a coalesced job is
    left alone (its message is on the way, and its re-send time stands), while another is
    published again. The job's row is locked until the caller commits, so two enqueues and
    the end of a run never interleave.
    """
    at = clock()
    not_before = at + timedelta(seconds=delay)
    fresh = {
        "state": Job.State.QUEUED,
        "lease_until": None,
        "enqueued_at": at,
        "not_before": not_before,
        "resend_at": not_before + _resend_after(),
        "rerun": False,
    }
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(kind=kind, ref_id=ref_id).first()
        if job is None:
            try:
                with transaction.atomic():
                    Job.objects.create(kind=kind, ref_id=ref_id, **fresh)
            except IntegrityError:  # another transaction inserted it first: join it
                job = Job.objects.select_for_update().get(kind=kind, ref_id=ref_id)
        if job is not None:
            if job.state == Job.State.RUNNING:
                Job.objects.filter(pk=job.pk).update(rerun=True)
                return
            if job.state == Job.State.QUEUED and coalesce:
                return
            Job.objects.filter(pk=job.pk).update(**fresh)
    transaction.on_commit(lambda: publish(kind, ref_id, delay))


def publish(kind: str, ref_id: int, delay: float = 0) -> bool:
    """Hand the job to the broker. A broker that is down is logged, not raised: the job
    stays queued and the reconciler sends it again."""
    from celery import current_app

    try:
        current_app.send_task(
            TASK_NAME,
            args=[kind, ref_id],
            countdown=delay or None,
            queue=QUEUES.get(kind, "celery"),
        )
        return True
    except Exception:
        log.warning(
            "could not publish job %s:%s; the reconciler will retry", kind, ref_id, exc_info=True
        )
        return False


def acquire(kind: str, ref_id: int, now: datetime | None = None) -> bool:
    """Take the job's lease; False if it is done, running elsewhere, or not due yet."""
    now = now or clock()
    runnable = Q(state=Job.State.QUEUED, not_before__lte=now) | Q(
        state=Job.State.RUNNING, lease_until__lt=now
    )
    taken = Job.objects.filter(runnable, kind=kind, ref_id=ref_id).update(
        state=Job.State.RUNNING, lease_until=now + _lease(), attempts=F("attempts") + 1
    )
    return bool(taken)


def heartbeat(kind: str, ref_id: int) -> None:
    """Extend the lease during long work (packaging a large file, say)."""
    Job.objects.filter(kind=kind, ref_id=ref_id, state=Job.State.RUNNING).update(
        lease_until=clock() + _lease()
    )


def run(kind: str, ref_id: int, now: datetime | None = None) -> None:
    """What the worker's task calls: at most one runner at a time, retried on errors."""
    if kind not in HANDLERS:
        log.error("unknown job kind %r", kind)
        return
    started = now or clock()
    if not acquire(kind, ref_id, started):
        return
    try:
        if kind in CLOCKED:
            HANDLERS[kind](ref_id, started)
        else:
            HANDLERS[kind](ref_id)
    except Postpone as wait:
        log.warning("job %s:%s postponed %gs: %s", kind, ref_id, wait.seconds, wait)
        _postpone(kind, ref_id, wait, now or clock())
        return
    except Exception as exc:
        log.exception("job %s:%s failed", kind, ref_id)
        if is_database_fault(exc):
            # The database went away mid-job: record the failure on a fresh connection once
            # it is back, so the job is retried then rather than when its lease runs out.
            await_database()
        # The wait counts from the failure (the injected instant, in tests).
        _retry_or_give_up(kind, ref_id, f"{type(exc).__name__}: {exc}", now or clock())
        return
    try:
        finish(kind, ref_id, now)
    except (OperationalError, InterfaceError):
        # The work is done; only saying so failed. Say it once the database is back.
        log.warning("job %s:%s done, but the database went away; waiting", kind, ref_id)
        await_database()
        finish(kind, ref_id, now)


def is_database_fault(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def await_database(limit: float | None = None) -> bool:
    """Reconnect until the database answers (short backoff), for at most `limit` seconds
    (default: the lease, after which the reconciler hands the job on anyway). True if it
    answered; False if it did not, and the caller's next query raises."""
    limit = settings.MODELGATE_JOB_LEASE_SECONDS if limit is None else limit
    deadline, pause = time.monotonic() + limit, 0.1
    while True:
        with contextlib.suppress(OperationalError, InterfaceError):
            connection.close()  # a broken one may fail to close; it is dropped either way
        try:
            connection.ensure_connection()
            return True
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def finish(kind: str, ref_id: int, now: datetime | None = None) -> None:
    """A run ended well: done, or queued once more if it was asked for meanwhile."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(kind=kind, ref_id=ref_id).first()
        if job is None or job.state != Job.State.RUNNING:
            return  # the lease ran out and the reconciler handed the job on
        if not job.rerun:
            Job.objects.filter(pk=job.pk).update(
                state=Job.State.DONE, lease_until=None, last_error=""
            )
            return
        at = now or clock()
        Job.objects.filter(pk=job.pk).update(
            state=Job.State.QUEUED,
            rerun=False,
            lease_until=None,
            attempts=0,
            last_error="",
            enqueued_at=at,
            not_before=at,
            resend_at=at + _resend_after(),
        )
        transaction.on_commit(lambda: publish(kind, ref_id))


class Postpone(Exception):
    """Raised by a handler that cannot proceed yet for a reason outside the job (a full
    disk): it runs again after `seconds`, and the attempt is not counted against it."""

    def __init__(self, seconds: float, reason: str):
        super().__init__(reason)
        self.seconds = seconds


def _postpone(kind: str, ref_id: int, wait: Postpone, now: datetime) -> None:
    not_before = now + timedelta(seconds=wait.seconds)
    Job.objects.filter(kind=kind, ref_id=ref_id).update(
        state=Job.State.QUEUED,
        attempts=F("attempts") - 1,
        last_error=str(wait)[:5000],
        lease_until=None,
        enqueued_at=now,
        not_before=not_before,
        resend_at=not_before,  # the reconciler sends it when due (no long countdown)
        rerun=False,
    )


def _retry_or_give_up(kind: str, ref_id: int, error: str, now: datetime) -> None:
    job = Job.objects.get(kind=kind, ref_id=ref_id)
    delay = RETRY.get(kind, default_retry)().delay(job.attempts)
    if delay is None:
        Job.objects.filter(pk=job.pk).update(state=Job.State.FAILED, last_error=error[:5000])
        if kind in GIVE_UP:
            GIVE_UP[kind](ref_id, error)
        return
    not_before = now + timedelta(seconds=delay)
    published = delay <= MAX_COUNTDOWN
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.QUEUED,
        last_error=error[:5000],
        lease_until=None,
        enqueued_at=now,
        not_before=not_before,
        # Unpublished, the reconciler sends it as soon as it is due.
        resend_at=not_before + _resend_after() if published else not_before,
        rerun=False,  # the retry is a run that starts after any request so far
    )
    if published:
        publish(kind, ref_id, delay)


def reconcile(now: datetime | None = None) -> int:
    """Re-publish jobs whose message was lost or whose worker died. Returns how many.

    A queued job's message may simply be waiting behind a backlog, so each re-send of the
    same job waits twice as long as the one before (up to MAX_RESEND_BACKOFF re-send
    intervals): a lost message is still sent again soon, while a long queue is not flooded
    with duplicates that every worker must take and drop.
    """
    now = now or clock()
    resend_after = _resend_after()
    expired = Job.objects.filter(state=Job.State.RUNNING, lease_until__lt=now)
    expired.update(
        state=Job.State.QUEUED, lease_until=None, enqueued_at=now, resend_at=now, rerun=False
    )
    stale = list(
        Job.objects.filter(state=Job.State.QUEUED, resend_at__lte=now, not_before__lte=now)
        .order_by("resend_at")
        .values_list("pk", "kind", "ref_id", "enqueued_at", "not_before")[:1000]
    )
    sent = 0
    for pk, kind, ref_id, enqueued_at, not_before in stale:
        if publish(kind, ref_id):
            # Wait as long again as the job has been due (whole seconds), within bounds.
            waited = timedelta(seconds=int((now - max(enqueued_at, not_before)).total_seconds()))
            waited = min(max(waited, resend_after), resend_after * MAX_RESEND_BACKOFF)
            Job.objects.filter(pk=pk, state=Job.State.QUEUED).update(resend_at=now + waited)
            sent += 1
    if sent:
        log.info("reconciler re-sent %d job(s)", sent)
    return sent
