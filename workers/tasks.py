"""Task wrappers: load ids, call one service, safe to run twice."""

from celery import shared_task

# Importing the services registers their job handlers.
from registry.services import gitmirror, jobs, processing, promotions, webhooks  # noqa: F401

# A task that cannot reach the database to take its lease is sent again after 1, 2, 2…
# s, for about as long as a lease (2 minutes by default): it runs as soon as the database
# is back, not when the reconciler re-sends it. (Celery's Django fixup drops the broken
# connection after the failed task.)
DATABASE_RETRIES = 60
DATABASE_RETRY_MAX_SECONDS = 2


@shared_task(
    bind=True,
    name=jobs.TASK_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=DATABASE_RETRIES,
)
def run_job(self, kind: str, ref_id: int) -> None:
    try:
        jobs.run(kind, ref_id)
    except Exception as exc:
        if not jobs.is_database_fault(exc) or self.request.retries >= self.max_retries:
            raise
        countdown = min(2**self.request.retries, DATABASE_RETRY_MAX_SECONDS)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name="modelgate.reconcile")
def reconcile() -> int:
    return jobs.reconcile()


@shared_task(name="modelgate.sync_git")
def sync_git() -> None:
    gitmirror.request_sync()


@shared_task(name="modelgate.expire_predictions")
def expire_predictions() -> dict:
    from registry.services.monitoring import retention

    return retention.expire_predictions()


@shared_task(name="modelgate.aggregate_monitoring")
def aggregate_monitoring() -> dict:
    """Roll new prediction records into windows, then evaluate every monitor."""
    from registry.services.monitoring import aggregation, alerts

    return {**aggregation.aggregate(), **alerts.evaluate_monitors()}


@shared_task(name="modelgate.verify_sample")
def verify_sample() -> int:
    """Re-hash a random share (MODELGATE_VERIFY_SAMPLE) of the blobs; returns problems found."""
    from django.conf import settings

    from registry.services import store_care

    report = store_care.verify_store(sample=settings.MODELGATE_VERIFY_SAMPLE)
    return len(report.problems)
