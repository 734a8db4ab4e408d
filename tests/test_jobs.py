"""The reconciler re-sends a queued job whose message may be lost, backing off per job.

Messages really go to the broker (Redis in CI); Celery's after_task_publish signal counts
what was sent. Time is moved by shifting the job's timestamps into the past.
"""

from datetime import timedelta

import pytest
from celery.signals import after_task_publish
from django.utils import timezone

from registry.models import Job
from registry.services import jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent():
    """(kind, ref_id) of every run_job message published while the test runs."""
    messages: list[tuple[str, int]] = []

    def record(sender=None, body=None, **_):
        if sender == jobs.TASK_NAME:  # message protocol 2: body is (args, kwargs, embed)
            messages.append(tuple(body[0]))

    after_task_publish.connect(record, weak=False)
    yield messages
    after_task_publish.disconnect(record)


@pytest.fixture
def interval(settings):
    return timedelta(seconds=settings.MODELGATE_JOB_RESEND_SECONDS)


def _age(job_id: int, by: timedelta) -> None:
    """Let `by` pass for the job: every timestamp it holds moves that far into the past."""
    job = Job.objects.get(pk=job_id)
    Job.objects.filter(pk=job_id).update(
        enqueued_at=job.enqueued_at - by,
        not_before=job.not_before - by,
        resend_at=job.resend_at - by,
        lease_until=job.lease_until - by if job.lease_until else None,
    )


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """Enqueue a job as a request does: recorded, then published on commit."""

    def enqueue(kind: str = "process_version", ref_id: int = 1, delay: float = 0) -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            jobs.enqueue(kind, ref_id, delay)
        return Job.objects.get(kind=kind, ref_id=ref_id)

    return enqueue


def test_a_queued_job_is_not_resent_before_its_interval(sent, interval, queue):
    job = queue()
    assert sent == [("process_version", 1)]
    _age(job.pk, interval - timedelta(seconds=1))
    assert jobs.reconcile() == 0
    assert len(sent) == 1


def test_a_lost_message_is_sent_again_after_one_interval(sent, interval, queue):
    job = queue()
    _age(job.pk, interval)
    assert jobs.reconcile() == 1
    assert sent == [("process_version", 1)] * 2
    assert jobs.reconcile() == 0  # not again at once
    job.refresh_from_db()
    assert job.enqueued_at < timezone.now() - interval / 2  # the queue lag keeps counting
    assert job.resend_at > timezone.now() + interval / 2


def test_resends_of_one_waiting_job_back_off_so_a_backlog_is_not_flooded(sent, interval, queue):
    """A job waiting 64 intervals behind a long queue, the reconciler running every half
    interval: re-sent at 1, 2, 4, 8, 16, 32 and 48 intervals, not 64 times."""
    job = queue()
    resends = []
    for tick in range(1, 129):
        _age(job.pk, interval / 2)
        if jobs.reconcile():
            resends.append(tick / 2)
    assert resends == [1, 2, 4, 8, 16, 32, 48, 64]
    assert len(sent) == 1 + len(resends)


def test_a_job_whose_worker_died_is_requeued_and_sent_at_once(sent, interval, settings, queue):
    job = queue()
    assert jobs.acquire("process_version", 1)
    _age(job.pk, timedelta(seconds=settings.MODELGATE_JOB_LEASE_SECONDS + 1))
    assert jobs.reconcile() == 1
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert sent == [("process_version", 1)] * 2
    assert job.resend_at > timezone.now() + interval / 2  # its next re-send: one interval


def test_a_job_delayed_for_a_retry_is_not_resent_before_it_is_due(sent, interval, queue):
    job = queue("deliver_webhook", 7, delay=10 * interval.total_seconds())
    _age(job.pk, 5 * interval)
    assert jobs.reconcile() == 0
    _age(job.pk, 6 * interval)  # due for one interval now
    assert jobs.reconcile() == 1


def test_jobs_are_resent_oldest_first_and_done_ones_never(sent, interval, queue):
    done = queue(ref_id=1)
    Job.objects.filter(pk=done.pk).update(state=Job.State.DONE)
    first, second = queue(ref_id=2), queue(ref_id=3)
    _age(second.pk, interval)
    _age(first.pk, 2 * interval)
    del sent[:]
    assert jobs.reconcile() == 2
    assert sent == [("process_version", 2), ("process_version", 3)]


@pytest.mark.django_db(transaction=True)
def test_two_transactions_enqueueing_the_same_new_job_at_once_both_succeed():
    """Two versions finishing together both ask for the Git sync, a job not yet recorded."""
    import threading
    import time

    from django.db import connection, transaction

    if connection.vendor == "sqlite":
        pytest.skip("SQLite serializes writers: no two transactions enqueue at once")
    barrier, errors = threading.Barrier(2), []

    def finish():
        try:
            with transaction.atomic():
                Job.objects.exists()  # the transaction has begun
                barrier.wait()
                jobs.enqueue("sync_git", 0, coalesce=True)
                time.sleep(0.3)  # both have written before either commits
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finish) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(Job.objects.values_list("kind", "ref_id", "state")) == [("sync_git", 0, "queued")]
