"""Fixtures of the storage tests: a real moto S3 server, this process pointed at it, buckets.

Test modules load them with `pytest_plugins = ["tests.storage_fixtures"]`.
"""

import secrets

import pytest

from .processes import MotoServer
from .storage_support import s3_client


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """One moto_server process for the session; every test gets buckets of its own."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(moto, monkeypatch):
    """This process reaches moto the way a deployment reaches S3: through the environment."""
    for name, value in moto.client_env().items():
        monkeypatch.setenv(name, value)
    return moto.client_env()


@pytest.fixture
def bucket(s3_env) -> str:
    name = f"mg-{secrets.token_hex(6)}"
    s3_client().create_bucket(Bucket=name)
    return name
