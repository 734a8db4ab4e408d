"""Task wrappers: load ids, call one service, safe to run twice."""

from celery import shared_task

# Importing the services registers their job handlers.
from registry.services import gitmirror, jobs, processing, promotions, webhooks  # noqa: F401


@shared_task(name=jobs.TASK_NAME, acks_late=True, reject_on_worker_lost=True)
def run_job(kind: str, ref_id: int) -> None:
    jobs.run(kind, ref_id)


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
