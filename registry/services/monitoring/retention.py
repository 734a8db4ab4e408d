"""Retention of prediction records: MODELGATE_PREDICTION_RETENTION_DAYS days, then gone.

On Postgres whole day partitions are dropped (cheap, no table bloat); on SQLite (the
laptop) old rows are deleted. Feedback is small beside predictions and is deleted by row.
Aggregated windows are kept much longer (MODELGATE_MONITORING_WINDOW_RETENTION_DAYS), but
not forever: a few hundred rows a day per version and environment add up.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.models import MonitoringWindow, PredictionFeedback, PredictionRecord

from ..events import record_event
from . import partitions

log = logging.getLogger(__name__)


def expire_predictions(now=None) -> dict:
    """Drop what is older than the retention period and create the coming days'
    partitions; safe to run any number of times."""
    now = now or timezone.now()
    days = settings.MODELGATE_PREDICTION_RETENTION_DAYS
    cutoff = now - timedelta(days=days)
    today = now.date()
    partitions.ensure([today, today + timedelta(days=1)])
    if partitions.is_partitioned():
        # A day partition is dropped once all of it is older than the cutoff.
        dropped = partitions.drop_before(cutoff.date())
        deleted = 0
    else:
        dropped = []
        deleted, _ = PredictionRecord.objects.filter(at__lt=cutoff).delete()
    feedback, _ = PredictionFeedback.objects.filter(at__lt=cutoff).delete()
    # Never before the records' own cutoff: a window whose records are still there would
    # be missing until a late record made the aggregation recompute it.
    window_days = max(settings.MODELGATE_MONITORING_WINDOW_RETENTION_DAYS, days)
    windows, _ = MonitoringWindow.objects.filter(end__lt=now - timedelta(days=window_days)).delete()
    if dropped or deleted or feedback or windows:
        with transaction.atomic():
            record_event(
                "monitoring.expired",
                None,
                data={
                    "retention_days": days,
                    "partitions_dropped": dropped,
                    "records_deleted": deleted,
                    "feedback_deleted": feedback,
                    "window_retention_days": window_days,
                    "windows_deleted": windows,
                },
            )
        log.info(
            "prediction retention: dropped %s, deleted %s rows and %s windows",
            dropped,
            deleted,
            windows,
        )
    return {
        "partitions_dropped": dropped,
        "records_deleted": deleted,
        "feedback_deleted": feedback,
        "windows_deleted": windows,
    }
