"""Helpers for the storage tests (their fixtures are in storage_fixtures.py)."""

import base64
import secrets
import subprocess

from .processes import BIN, ROOT, base_env


def s3_client():
    from registry.storage.s3 import make_client

    return make_client()


def bucket_objects(bucket: str) -> dict[str, bytes]:
    client = s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for page in pages
        for item in page.get("Contents", [])
    }


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def shares_a_run(plaintext: bytes, stored: bytes, run: int = 4096) -> bool:
    """Whether any `run` consecutive bytes of `plaintext` appear in `stored`.

    Any run of 4096 bytes contains a whole 2048-byte block at a multiple of 2048, so
    looking for those blocks finds every such run (and some shorter ones: it errs strict).
    """
    block = run // 2
    return any(
        plaintext[start : start + block] in stored
        for start in range(0, len(plaintext) - block + 1, block)
    )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `manage.py` in a process of its own, as an operator would."""
    return subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def store_env(broker: str = "redis://127.0.0.1:1/0", **extra: str) -> dict[str, str]:
    """The environment of a process sharing this test's database and store settings."""
    from django.conf import settings

    env = base_env(broker, **extra)
    env["MODELGATE_ENCRYPTION_KEY"] = extra.get(
        "MODELGATE_ENCRYPTION_KEY", settings.MODELGATE_ENCRYPTION_KEY
    )
    old_keys = ",".join(settings.MODELGATE_ENCRYPTION_OLD_KEYS)
    env.setdefault("MODELGATE_ENCRYPTION_OLD_KEYS", old_keys)
    return env
