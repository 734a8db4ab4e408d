"""One scheduler at a time: a beat that does not hold the lock stands by and sends nothing.

However many beats run (a restarted `worker --beat`, a second replica, an operator's
stray one), only the lock holder sends the schedule; the others poll and take over once
the holder is gone. With Redis the lock is a key that expires MODELGATE_BEAT_LOCK_SECONDS
after its holder stops renewing it (every tick); with the file broker of `make run`, an
flock on var/beat.lock, released by the kernel when the holder dies.
"""

import fcntl
import logging
import os
import uuid

from celery.beat import PersistentScheduler
from django.conf import settings

log = logging.getLogger(__name__)

STANDBY_POLL_SECONDS = 2.0


class _FileLock:
    def __init__(self, path):
        self._path, self._fd = path, None

    def hold(self) -> bool:
        if self._fd is None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
        return True


class _RedisLock:
    # Take the key if free, or renew it if ours: one atomic step either way.
    _SCRIPT = """
    local holder = redis.call('GET', KEYS[1])
    if holder == false or holder == ARGV[1] then
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
      return 1
    end
    return 0
    """

    def __init__(self, url: str, seconds: float):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5)
        self._claim = self._redis.register_script(self._SCRIPT)
        self._me, self._ms = uuid.uuid4().hex, int(seconds * 1000)

    def hold(self) -> bool:
        try:
            return bool(self._claim(keys=["modelgate:beat"], args=[self._me, self._ms]))
        except Exception as exc:  # Redis down: send nothing rather than risk two schedulers
            log.warning("beat lock: cannot reach Redis (%s); standing by", exc)
            return False


def _lock():
    broker = settings.CELERY_BROKER_URL
    if broker.startswith(("redis://", "rediss://")):
        return _RedisLock(broker, settings.MODELGATE_BEAT_LOCK_SECONDS)
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    return _FileLock(settings.VAR_DIR / "beat.lock")


class LockedScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, sending only while this beat holds the lock."""

    def __init__(self, *args, **kwargs):
        self._lock, self._holding = _lock(), None
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        holding = self._lock.hold()
        if holding != self._holding:
            log.warning(
                "beat: %s", "holding the lock, sending the schedule"
                if holding else "another beat holds the lock; standing by"
            )  # fmt: skip
            self._holding = holding
        if not holding:
            return STANDBY_POLL_SECONDS
        # Back well before the lock could expire, to renew it.
        return min(super().tick(*args, **kwargs), settings.MODELGATE_BEAT_LOCK_SECONDS / 3)
