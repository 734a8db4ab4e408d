"""Background jobs that are never lost and never run twice at once.

`enqueue` records the job in the caller's transaction and publishes it after commit;
`run` takes a lease before doing the work, so a duplicate message is a no-op; the
reconciler (a beat task) re-publishes jobs whose message never arrived or whose worker
died (its lease ran out).

A job asked for while it runs is marked `rerun` and queued again when that run ends, so
every request is followed by a run that starts after it; `running` is never overwritten.
A coalesced job that is already queued keeps its message and its re-send time: either
that message arrives, or the reconciler sends another when the time comes.
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from registry.models import Job

log = logging.getLogger(__name__)

# kind -> the service that does the work; filled in by the modules that own each kind.
HANDLERS: dict[str, Callable[[int], None]] = {}
# kind -> what to do when a job has failed too often (e.g. mark the version failed).
GIVE_UP: dict[str, Callable[[int, str], None]] = {}

TASK_NAME = "modelgate.run_job"
# Jobs that may run for minutes go to their own queue (see CELERY_TASK_QUEUES).
QUEUES = {"process_version": "processing"}
# The longest wait between two re-sends of a queued job, in re-send intervals.
MAX_RESEND_BACKOFF = 16


def handler(kind: str, give_up: Callable[[int, str], None] | None = None):
    def register(function: Callable[[int], None]) -> Callable[[int], None]:
        HANDLERS[kind] = function
        if give_up is not None:
            GIVE_UP[kind] = give_up
        return function

    return register


def now():
    """The clock every timestamp here is taken from; tests replace it to step through time."""
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
    at = now()
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


def acquire(kind: str, ref_id: int) -> bool:
    """Take the job's lease; False if it is done, running elsewhere, or not due yet."""
    at = now()
    runnable = Q(state=Job.State.QUEUED, not_before__lte=at) | Q(
        state=Job.State.RUNNING, lease_until__lt=at
    )
    taken = Job.objects.filter(runnable, kind=kind, ref_id=ref_id).update(
        state=Job.State.RUNNING, lease_until=at + _lease(), attempts=F("attempts") + 1
    )
    return bool(taken)


def heartbeat(kind: str, ref_id: int) -> None:
    """Extend the lease during long work (packaging a large file, say)."""
    Job.objects.filter(kind=kind, ref_id=ref_id, state=Job.State.RUNNING).update(
        lease_until=now() + _lease()
    )


def run(kind: str, ref_id: int) -> None:
    """What the worker's task calls: at most one runner at a time, retried on errors."""
    if kind not in HANDLERS:
        log.error("unknown job kind %r", kind)
        return
    if not acquire(kind, ref_id):
        return
    try:
        HANDLERS[kind](ref_id)
    except Exception as exc:
        log.exception("job %s:%s failed", kind, ref_id)
        if isinstance(exc, OperationalError | InterfaceError):
            # The database went away mid-job: record the failure on a fresh connection, so
            # the job is retried now rather than when its lease runs out.
            connection.close()
        _retry_or_give_up(kind, ref_id, f"{type(exc).__name__}: {exc}")
        return
    finish(kind, ref_id)


def finish(kind: str, ref_id: int) -> None:
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
        at = now()
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


def _retry_or_give_up(kind: str, ref_id: int, error: str) -> None:
    job = Job.objects.get(kind=kind, ref_id=ref_id)
    if job.attempts >= settings.MODELGATE_JOB_MAX_ATTEMPTS:
        Job.objects.filter(pk=job.pk).update(state=Job.State.FAILED, last_error=error[:5000])
        if kind in GIVE_UP:
            GIVE_UP[kind](ref_id, error)
        return
    delay = min(2**job.attempts, 300)
    at = now()
    not_before = at + timedelta(seconds=delay)
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.QUEUED,
        last_error=error[:5000],
        lease_until=None,
        enqueued_at=at,
        not_before=not_before,
        resend_at=not_before + _resend_after(),
        rerun=False,  # the retry is a run that starts after any request so far
    )
    publish(kind, ref_id, delay)


def reconcile() -> int:
    """Re-publish jobs whose message was lost or whose worker died. Returns how many.

    A queued job's message may simply be waiting behind a backlog, so each re-send of the
    same job waits twice as long as the one before (up to MAX_RESEND_BACKOFF re-send
    intervals): a lost message is still sent again soon, while a long queue is not flooded
    with duplicates that every worker must take and drop.
    """
    at = now()
    resend_after = _resend_after()
    expired = Job.objects.filter(state=Job.State.RUNNING, lease_until__lt=at)
    expired.update(
        state=Job.State.QUEUED, lease_until=None, enqueued_at=at, resend_at=at, rerun=False
    )
    stale = list(
        Job.objects.filter(state=Job.State.QUEUED, resend_at__lte=at, not_before__lte=at)
        .order_by("resend_at")
        .values_list("pk", "kind", "ref_id", "enqueued_at", "not_before")[:1000]
    )
    sent = 0
    for pk, kind, ref_id, enqueued_at, not_before in stale:
        if publish(kind, ref_id):
            # Wait as long again as the job has been due (whole seconds), within bounds.
            waited = timedelta(seconds=int((at - max(enqueued_at, not_before)).total_seconds()))
            waited = min(max(waited, resend_after), resend_after * MAX_RESEND_BACKOFF)
            Job.objects.filter(pk=pk, state=Job.State.QUEUED).update(resend_at=at + waited)
            sent += 1
    if sent:
        log.info("reconciler re-sent %d job(s)", sent)
    return sent
