"""However many beats run, one sends the schedule: the others stand by, and one of them
takes over within the lock's lifetime once the holder is killed."""

import signal

import pytest

from .processes import BIN, Process, Redis, base_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def beat(tmp_path, broker: str, name: str) -> Process:
    env = base_env(broker, MODELGATE_RECONCILE_SECONDS="1", MODELGATE_BEAT_LOCK_SECONDS="2")
    args = [
        str(BIN / "celery"), "-A", "workers.celery", "beat", "--loglevel", "INFO",
        "--schedule", str(tmp_path / f"schedule-{name}"),
        "--pidfile", str(tmp_path / f"{name}.pid"),
    ]  # fmt: skip
    return Process(args, env, tmp_path / f"{name}.log").start()


def sent(process: Process) -> int:
    return process.log_path.read_text(errors="replace").count("Sending due task")


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(tmp_path):
    redis = Redis(tmp_path).start()
    first = second = None
    try:
        first = beat(tmp_path, redis.url, "first")
        wait_until(lambda: sent(first) >= 2, 30, "the first beat sending", first)
        second = beat(tmp_path, redis.url, "second")
        wait_until(lambda: "standing by" in second.output(), 30, "the second standing by", second)
        before = sent(first)
        wait_until(lambda: sent(first) >= before + 3, 30, "the first still sending", first)
        assert sent(second) == 0, second.output()

        first.kill(signal.SIGKILL)
        wait_until(lambda: sent(second) >= 2, 30, "the second taking over", second)
        assert "holding the lock" in second.output()
    finally:
        for process in (first, second, redis):
            if process:
                process.stop()


def test_with_the_file_broker_a_second_beat_also_stands_by(tmp_path, settings):
    broker = "filesystem://localhost//"
    first = beat(tmp_path, broker, "first")
    second = None
    try:
        wait_until(lambda: sent(first) >= 2, 30, "the first beat sending", first)
        second = beat(tmp_path, broker, "second")
        wait_until(lambda: "standing by" in second.output(), 30, "the second standing by", second)
        assert sent(second) == 0
        first.kill(signal.SIGKILL)
        wait_until(lambda: sent(second) >= 1, 30, "the second taking over", second)
    finally:
        for process in (first, second):
            if process:
                process.stop()
