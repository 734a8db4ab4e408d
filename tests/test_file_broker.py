"""The file broker (workers/file_broker.py): a worker never sees a message half-written.

kombu's own transport makes a message visible as an empty `.msg` file before writing it,
and a worker that takes it stops on the decode error; ours writes under a name no queue
takes and renames it into place."""

import json
import os
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from workers import file_broker


def channel(tmp_path, transport):
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    connection = Connection("filesystem://", transport=transport, transport_options=options)
    return connection, connection.channel()


def test_a_message_being_written_is_not_taken(tmp_path):
    connection, ours = channel(tmp_path, file_broker.Transport)
    with connection:
        # What a sender mid-write leaves in the folder: a file under the partial name.
        (tmp_path / f"1_{'0' * 32}.celery.msg{file_broker.PARTIAL}").write_bytes(b"")
        with pytest.raises(Empty):
            ours._get("celery")

        ours._put("celery", {"body": "x" * 10_000})
        names = os.listdir(tmp_path)
        assert [n for n in names if n.endswith(".celery.msg")], names
        assert ours._get("celery") == {"body": "x" * 10_000}


def test_kombus_own_layout_hands_an_unwritten_message_to_the_worker(tmp_path):
    """Why the transport exists: an empty `.msg` file (kombu's between open and write)
    is taken and fails to decode, out of the worker's consumer loop."""
    connection, theirs = channel(tmp_path, filesystem.Transport)
    with connection:
        (tmp_path / f"1_{'0' * 32}.celery.msg").write_bytes(b"")
        with pytest.raises(json.JSONDecodeError):
            theirs._get("celery")


def test_the_settings_use_it_with_the_file_broker(settings):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the run's broker is not the file broker")
    assert settings.CELERY_BROKER_TRANSPORT == "workers.file_broker:Transport"
