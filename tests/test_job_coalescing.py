"""Coalesced jobs cannot starve: every request is followed by a run that starts after it.

The Git sync is one coalesced job for the whole registry. Under sustained load it once
stayed `queued` for minutes with no message in flight (each enqueue pushed its re-send
time ahead), and a request during a run overwrote `running`. Here hypothesis interleaves
requests, deliveries, lost messages, runs that end or fail, lease expiry and the
reconciler on the real job table; then threads do the same against one another.
"""

import queue
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from registry.models import Job
from registry.services import jobs

KIND = "coalesce-test"


class Broker:
    """The messages published to Celery, as a list the test delivers from (or loses)."""

    def __init__(self):
        self.messages: list[tuple[str, int]] = []

    def publish(self, kind, ref_id, delay=0):
        self.messages.append((kind, ref_id))
        return True


class Coalescing(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        Job.objects.all().delete()
        self.clock = timezone.now()
        self.broker = Broker()
        self.seq = 0
        self.requests: list[int] = []
        self.starts: list[int] = []
        self.running = False
        self.last_seen = None  # (state, resend_at) after the previous step
        self.reconciled = False
        jobs.clock = lambda: self.clock
        jobs.publish = self.broker.publish

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    @rule()
    def request(self):
        with transaction.atomic():
            jobs.enqueue(KIND, 0, coalesce=True)
        self.requests.append(self._tick())

    @rule(lost=st.booleans())
    def deliver(self, lost):
        if not self.broker.messages:
            return
        self.broker.messages.pop(0)
        if lost or self.running:  # a message lost, or one a busy job's worker drops
            if self.running:
                assert not jobs.acquire(KIND, 0)
            return
        if jobs.acquire(KIND, 0):
            self.running = True
            self.starts.append(self._tick())

    @rule(failed=st.booleans())
    def end_run(self, failed):
        if not self.running:
            return
        self.running = False
        if failed:
            jobs._retry_or_give_up(KIND, 0, "boom", self.clock)
        else:
            jobs.finish(KIND, 0)

    @rule(seconds=st.sampled_from([1, 30, 61, 400, 700]))
    def time_passes(self, seconds):
        self.clock += timedelta(seconds=seconds)
        if self.running and Job.objects.get(kind=KIND).lease_until < self.clock:
            self.running = False  # the worker died or hung: its lease is over

    @rule()
    def reconcile(self):
        jobs.reconcile()
        self.reconciled = True

    @invariant()
    def a_waiting_job_is_never_put_off(self):
        """Queued with no message on the way, the reconciler must find it: nothing but the
        reconciler's own re-send moves its re-send time later."""
        job = Job.objects.filter(kind=KIND).first()
        seen = (job.state, job.resend_at) if job else None
        if seen and self.last_seen and seen[0] == self.last_seen[0] == Job.State.QUEUED:
            assert self.reconciled or seen[1] <= self.last_seen[1], (self.last_seen, seen)
        self.last_seen, self.reconciled = seen, False

    @invariant()
    def never_running_without_a_runner_or_a_lease(self):
        job = Job.objects.filter(kind=KIND).first()
        if job is not None and job.state == Job.State.RUNNING and not self.running:
            assert job.lease_until < self.clock or job.lease_until is not None

    def teardown(self):
        try:
            self._drain()
            if self.requests:
                assert self.starts and self.starts[-1] > self.requests[-1], (
                    self.requests,
                    self.starts,
                )
        finally:
            jobs.clock = ORIGINAL_CLOCK
            jobs.publish = ORIGINAL_PUBLISH

    def _drain(self):
        """Let time pass, the reconciler run and every message arrive, until quiet."""
        for _ in range(60):
            if self.running:
                self.end_run(failed=False)
            self.clock += timedelta(seconds=3600)
            jobs.reconcile()
            while self.broker.messages:
                self.deliver(lost=False)
            job = Job.objects.filter(kind=KIND).first()
            if job is None or (
                job.state in (Job.State.DONE, Job.State.FAILED) and not self.running
            ):
                return
        raise AssertionError(f"the job never settled: {job}")


ORIGINAL_CLOCK, ORIGINAL_PUBLISH = jobs.clock, jobs.publish


@pytest.mark.django_db
def test_interleaved_requests_runs_and_lost_messages_never_starve_the_job(settings):
    settings.MODELGATE_JOB_MAX_ATTEMPTS = 100  # a run that fails is retried, not given up
    run_state_machine_as_test(
        Coalescing,
        settings=settings_for_machine(),
    )


def settings_for_machine():
    return settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.mark.django_db(transaction=True)
def test_threads_requesting_and_running_at_once_leave_no_request_unserved(monkeypatch):
    """6 threads ask for the sync while 3 worker threads run it (each run takes a moment);
    once everyone stops, the last run started after the last request."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database that takes concurrent writers (Postgres)")
    messages: queue.Queue = queue.Queue()
    monkeypatch.setattr(jobs, "publish", lambda kind, ref_id, delay=0: messages.put(1) or True)
    lock, seq, requests, starts = threading.Lock(), [0], [], []

    def tick() -> int:
        with lock:
            seq[0] += 1
            return seq[0]

    def handler(_ref: int) -> None:
        starts.append(tick())
        threading.Event().wait(0.005)

    monkeypatch.setitem(jobs.HANDLERS, KIND, handler)
    stop = threading.Event()

    def requester():
        try:
            for _ in range(40):
                with transaction.atomic():
                    jobs.enqueue(KIND, 0, coalesce=True)
                requests.append(tick())
        finally:
            connection.close()

    def worker():
        try:
            while not stop.is_set() or not messages.empty():
                try:
                    messages.get(timeout=0.05)
                except queue.Empty:
                    continue
                jobs.run(KIND, 0)
        finally:
            connection.close()

    workers = [threading.Thread(target=worker) for _ in range(3)]
    askers = [threading.Thread(target=requester) for _ in range(6)]
    for thread in workers + askers:
        thread.start()
    for thread in askers:
        thread.join()
    stop.set()
    for thread in workers:
        thread.join()
    job = Job.objects.get(kind=KIND)
    assert job.state == Job.State.DONE and not job.rerun, job
    assert starts[-1] > max(requests), (max(requests), starts[-5:])
    assert len(starts) < len(requests)  # coalesced: far fewer runs than requests
