"""Retention of aggregated monitoring windows: MODELGATE_MONITORING_WINDOW_RETENTION_DAYS,
applied by the same beat task that drops old prediction records."""

from datetime import timedelta

from django.conf import settings as django_settings
from django.utils import timezone

from registry.models import Event, ModelVersion, MonitoringWindow
from registry.services.monitoring import aggregation

from .test_monitoring_ingest import PREDICTIONS, ingest, post, record, version  # noqa: F401


def old_window(version_row: ModelVersion, days_ago: int) -> MonitoringWindow:
    start = timezone.now() - timedelta(days=days_ago)
    return MonitoringWindow.objects.create(
        model_id=version_row.model_id,
        version=version_row,
        environment="staging",
        start=start,
        end=start + timedelta(minutes=5),
        requests=10,
    )


def test_the_default_keeps_windows_for_well_over_a_year():
    assert django_settings.MODELGATE_MONITORING_WINDOW_RETENTION_DAYS == 400


def test_the_beat_task_deletes_windows_past_their_retention(ingest, settings):  # noqa: F811
    from workers import tasks

    settings.MODELGATE_PREDICTION_RETENTION_DAYS = 30
    settings.MODELGATE_MONITORING_WINDOW_RETENTION_DAYS = 100
    # Today's window comes from real records through the aggregation.
    assert post(ingest, PREDICTIONS, [record(i) for i in range(3)]).status_code == 202
    assert aggregation.aggregate()["windows"] == 1
    current = MonitoringWindow.objects.get()
    row = ModelVersion.objects.get(model__name="fraud", number=1)
    kept, gone = old_window(row, 99), old_window(row, 101)

    result = tasks.expire_predictions()
    assert result["windows_deleted"] == 1
    remaining = set(MonitoringWindow.objects.values_list("pk", flat=True))
    assert remaining == {current.pk, kept.pk}
    assert gone.pk not in remaining
    event = Event.objects.get(type="monitoring.expired")
    assert event.data["windows_deleted"] == 1 and event.data["window_retention_days"] == 100
    # Safe to run again: nothing more is old enough.
    assert tasks.expire_predictions()["windows_deleted"] == 0
    assert MonitoringWindow.objects.count() == 2


def test_windows_are_never_deleted_before_their_records(ingest, settings):  # noqa: F811
    from workers import tasks

    settings.MODELGATE_PREDICTION_RETENTION_DAYS = 30
    settings.MODELGATE_MONITORING_WINDOW_RETENTION_DAYS = 1  # shorter than the records'
    row = ModelVersion.objects.get(model__name="fraud", number=1)
    kept, gone = old_window(row, 20), old_window(row, 40)
    assert tasks.expire_predictions()["windows_deleted"] == 1
    assert list(MonitoringWindow.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not MonitoringWindow.objects.filter(pk=gone.pk).exists()
