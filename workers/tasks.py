"""Task wrappers: load ids, call one service, safe to run twice."""

from celery import shared_task

from registry.services import processing


@shared_task(name="modelgate.process_version", acks_late=True, reject_on_worker_lost=True)
def process_version(version_id: int) -> None:
    processing.process_version(version_id)
