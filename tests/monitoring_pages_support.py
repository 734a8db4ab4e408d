"""Monitoring data made the way production makes it, for the page and browser tests: a
version with a baseline and explanations, prediction records and feedback POSTed with an
ingest token, rolled into windows by the real aggregation, monitors evaluated by the real
alert service. Normal traffic matches the baseline bin for bin; the last complete window
is shifted on `age` only."""

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import Alias, Environment, ModelVersion
from registry.services.monitoring import aggregation, alerts, monitors

from .conftest import upload_version

MODEL = "fraud"
ENVIRONMENT = "staging"
PLANS = ["basic"] * 5 + ["pro"] * 3 + ["team"] * 2
PER_WINDOW = 200
NORMAL_WINDOWS = 4
BASELINE = {
    "format": "modelgate-baseline/1",
    "source": {"name": "train.csv", "rows": 1000},
    "columns": ["age", "income", "plan"],
    "features": {
        "age": {
            "type": "numeric",
            "count": 1000,
            "missing": 0,
            "mean": 50.0,
            "std": 28.7,
            "min": 0.0,
            "max": 100.0,
            "bins": {"edges": [float(10 * i) for i in range(11)], "counts": [100] * 10},
        },
        "income": {
            "type": "numeric",
            "count": 1000,
            "missing": 0,
            "mean": 500.0,
            "std": 287.0,
            "min": 0.0,
            "max": 1000.0,
            "bins": {"edges": [float(100 * i) for i in range(11)], "counts": [100] * 10},
        },
        "plan": {
            "type": "categorical",
            "count": 1000,
            "missing": 0,
            "top": [
                {"value": "basic", "count": 500},
                {"value": "pro", "count": 300},
                {"value": "team", "count": 200},
            ],
            "other": 0,
        },
    },
}


def explanations(age: float = 0.12, income: float = 0.31, plan: float = 0.05) -> dict:
    return {
        "format": "modelgate-explanations/1",
        "method": "permutation_importance",
        "scoring": "accuracy",
        "n_repeats": 5,
        "data": {"name": "train.csv", "rows": 1000},
        "features": {
            "age": {"importance": age, "std": 0.01},
            "income": {"importance": income, "std": 0.02},
            "plan": {"importance": plan, "std": 0.004},
        },
    }


def inputs(index: int, shifted: bool) -> dict:
    return {
        "age": 95.0 if shifted else (index % 10) * 10 + 5.0,
        "income": (index % 10) * 100 + 50.0,
        "plan": PLANS[index % 10],
    }


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def token_request(username: str = "alice") -> dict:
    """The body that asks for an ingest token bound to fraud in staging."""
    return {
        "username": username,
        "password": f"{username}-password-1",
        "name": "serving",
        "scopes": ["ingest"],
        "model": MODEL,
        "environment": ENVIRONMENT,
    }


def ingest_client(username: str = "alice"):
    """POST as the serving process does: JSON with an ingest token (Django's test client)."""
    response = APIClient().post("/api/v1/auth/tokens/", token_request(username), format="json")
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return lambda path, body: client.post(path, body, format="json")


def live_version(api: APIClient, with_explanations: dict | None = None) -> ModelVersion:
    """A ready version of `fraud` with a baseline and explanations, live in staging."""
    number = upload_version(
        api,
        MODEL,
        {"model.pkl": b"not a real model"},
        metrics={"accuracy": 0.9},
        baseline=BASELINE,
        explanations=with_explanations or explanations(),
    )
    version = ModelVersion.objects.select_related("model").get(model__name=MODEL, number=number)
    ModelVersion.objects.filter(pk=version.pk).update(
        state="ready", scan_status="clean", package_state="ready"
    )
    Environment.objects.get_or_create(name=ENVIRONMENT, defaults={"required_approvals": 0})
    Alias.objects.update_or_create(
        model=version.model, name=ENVIRONMENT, defaults={"version": version}
    )
    return version


def send_traffic(post, version: int, now: datetime | None = None) -> datetime:
    """NORMAL_WINDOWS windows of normal traffic, then the last complete window shifted on
    `age`; feedback for every record (90% right). `post(path, body)` sends one JSON batch
    with an ingest token. Returns the `now` the traffic was made for."""
    now = now or timezone.now()
    current = aggregation.window_start(now)
    length = timedelta(seconds=aggregation.window_seconds())
    records, feedback = [], []
    for back in range(NORMAL_WINDOWS + 1, 0, -1):
        start = current - back * length
        shifted = back == 1
        for index in range(PER_WINDOW):
            rid = f"w{back}-r{index}"
            at = start + length * (index + 0.5) / PER_WINDOW
            label = index % 2
            records.append(
                {
                    "model": MODEL,
                    "version": version,
                    "environment": ENVIRONMENT,
                    "request_id": rid,
                    "at": iso(at),
                    "inputs": inputs(index, shifted),
                    "outputs": {"prediction": label},
                    "latency_ms": 4.0 + (index % 20) + (30 if shifted else 0),
                    "error": "boom" if index % 50 == 0 else "",
                }
            )
            feedback.append({"model": MODEL, "request_id": rid, "label": label ^ (index % 10 == 9)})
    answer = post("/api/v1/monitoring/predictions/", {"records": records})
    assert answer.status_code == 202, answer.content
    answer = post("/api/v1/monitoring/feedback/", {"records": feedback})
    assert answer.status_code == 202, answer.content
    return now


def drift_monitor(user, **changes):
    data = {
        "model": MODEL,
        "environment": ENVIRONMENT,
        "metric": "drift.psi.max",
        "op": ">",
        "value": 0.2,
        "window": aggregation.window_seconds(),
        "min_samples": 50,
        **changes,
    }
    return monitors.create_monitor(user, data)


def aggregate_and_alert(now: datetime) -> dict:
    """What the beat task does: aggregate the new records, then evaluate the monitors."""
    return {**aggregation.aggregate(now), **alerts.evaluate_monitors(now)}
