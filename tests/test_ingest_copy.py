"""The fast ingest path (issue 8): bodies parsed by orjson, records reaching Postgres through
COPY; what is stored, refused and counted must not change."""

import json

import pytest
from django.db import connection

from registry.errors import InvalidInput
from registry.models import PredictionRecord
from registry.services.monitoring import ingest as service

from .test_monitoring_ingest import PREDICTIONS, ingest, record, version  # noqa: F401

TRICKY = {
    "quote": 'say "hi"',
    "backslash": "C:\\path\\n not a newline",
    "tab": "a\tb",
    "newline": "line 1\nline 2\r\n",
    "unicode": "Zürich 東京 😀",
    "copy end marker": "\\.",
}


def post_text(client, body: str):
    return client.post(PREDICTIONS, body.encode(), content_type="application/json")


def test_load_batch_reads_utf8_with_orjson_and_the_rest_with_the_standard_library():
    records = [{"request_id": "a", "inputs": {"x": 1.5}}, {"request_id": "b"}]
    pretty = json.dumps({"records": records}, indent="\t")
    assert service.load_batch(pretty.encode()) == {"records": records}
    body = {"x": 1, "records": records}
    assert service.load_batch(json.dumps(body).encode()) == body
    for encoding in ("utf-16", "utf-8-sig"):  # orjson refuses both
        assert service.load_batch(json.dumps(body).encode(encoding)) == body
    # orjson would round these to floats: they stay exact integers
    huge = {"records": [{"request_id": "c", "inputs": {"x": 10**30, "y": -(2**63) - 1}}]}
    loaded = service.load_batch(json.dumps(huge).encode())
    assert loaded == huge and isinstance(loaded["records"][0]["inputs"]["x"], int)


@pytest.mark.parametrize(
    "body", [b'{"records": [{}, ]}', b'{"records": [{"a": NaN}]}', b"[" * 100_000]
)
def test_a_syntax_error_is_reported_as_before(body):
    with pytest.raises(InvalidInput, match="not valid JSON"):
        service.load_batch(body)


def test_strings_and_numbers_are_stored_exactly_as_sent(ingest):  # noqa: F811
    sent = record(1, inputs={**TRICKY, "n": 0.1, "big": 10**30, "yes": True, "none": None})
    sent["outputs"] = {"label": TRICKY["newline"], "nested": {"q": [TRICKY["backslash"], 2]}}
    sent["error"] = TRICKY["tab"] + TRICKY["unicode"]
    # Pretty-printed, with escaped non-ASCII.
    response = post_text(ingest, json.dumps({"records": [sent]}, indent=2))
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "duplicates": 0}
    stored = PredictionRecord.objects.get(request_id="req-1")
    assert stored.inputs == sent["inputs"]
    assert stored.outputs == sent["outputs"]
    assert stored.error == sent["error"]
    assert (stored.version_number, stored.environment, stored.latency_ms) == (1, "staging", 1.5)


@pytest.mark.parametrize(
    "inputs, field",
    [
        ('{"f0": "\\ud800"}', "inputs.f0"),  # a lone surrogate: Postgres refuses it
        ('{"\\ud800": 1}', "inputs"),
        ('{"f0": 1e999, "f1": 1.0}', "inputs.f0"),
        ('{"f0": 1, "f1": -1e999}', "inputs.f1"),
        ('{"f0": "x", "f1": [1]}', "inputs.f1"),
        ('{"f0": "' + "x" * 1001 + '"}', "inputs.f0"),
    ],
)
def test_a_bad_feature_is_named_and_nothing_is_stored(ingest, inputs, field):  # noqa: F811
    batch = [json.dumps(record(i)) for i in range(10)]
    batch[7] = json.dumps(record(7, inputs={"placeholder": 0})).replace(
        '{"placeholder": 0}', inputs
    )
    response = post_text(ingest, '{"records": [' + ", ".join(batch) + "]}")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["details"] == {"index": 7, "field": field}, error
    assert PredictionRecord.objects.count() == 0


def test_repeats_within_and_across_batches_are_counted(ingest):  # noqa: F811
    batch = [record(i) for i in range(5)]
    first = post_text(ingest, json.dumps({"records": batch + batch[:2]}))
    assert first.json() == {"accepted": 5, "duplicates": 2}
    again = post_text(ingest, json.dumps({"records": [record(9), *batch[3:]]}))
    assert again.json() == {"accepted": 1, "duplicates": 2}
    assert PredictionRecord.objects.count() == 6


def test_no_temporary_table_is_left_behind(ingest):  # noqa: F811
    for start in (0, 10):  # twice in one transaction (the test's): the name is free again
        batch = [record(i) for i in range(start, start + 10)]
        assert post_text(ingest, json.dumps({"records": batch})).status_code == 202
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('pg_temp.ingest_rows')")
            assert cursor.fetchone()[0] is None
    assert PredictionRecord.objects.count() == 20
