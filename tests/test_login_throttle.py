"""Password guessing is throttled at every door: the web UI, the admin, the token endpoint
and MLflow's Basic auth, over real HTTP against a live server.

Failures are counted per username and client address (django-axes); the client address is
read from X-Forwarded-For only behind MODELGATE_TRUSTED_PROXIES. The cool-off is moved by
setting the attempts' time back in the database, never by sleeping.
"""

import re
import time
from datetime import timedelta

import pytest
import requests
from axes.models import AccessAttempt
from django.db.models import F
from django.test import RequestFactory

from registry.api.views.auth import ClientAddressThrottle
from registry.models import Event
from registry.services.client_address import client_address

from .conftest import _make_user, token_for

LIMIT = 3
HERE, THERE = "203.0.113.7", "198.51.100.9"  # clients behind the proxy (documentation ranges)


def password(username: str) -> str:
    return f"{username}-password-1"


@pytest.fixture
def lockouts(settings):
    """A small limit, and the live server's peer (127.0.0.1) as the trusted proxy."""
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.MODELGATE_TRUSTED_PROXIES = ["127.0.0.1"]
    return settings


@pytest.fixture
def users(transactional_db):
    # Staff, so that the admin door lets them in too.
    return _make_user("ann", staff=True), _make_user("ben", staff=True)


# --- the doors: each signs in over HTTP and says "ok", "failed" or "locked" ------------------


class Door:
    name = ""

    def __init__(self, base_url: str):
        self.base = base_url

    def attempt(self, username: str, secret: str, address: str | None) -> requests.Response:
        raise NotImplementedError

    def outcome(self, response: requests.Response) -> str:
        raise NotImplementedError

    def sign_in(self, username: str, secret: str, address: str | None = None) -> str:
        response = self.attempt(username, secret, address)
        result = self.outcome(response)
        if result == "locked":
            retry = int(response.headers["Retry-After"])
            assert 0 < retry <= 15 * 60, retry
            self.last_retry_after = retry
        return result


def forwarded(address: str | None) -> dict:
    return {"X-Forwarded-For": address} if address else {}


class Page(Door):
    """A Django login form: the web UI's /login/ or the admin's /admin/login/."""

    path = ""
    after = ""

    def attempt(self, username, secret, address):
        session = requests.Session()
        form = session.get(f"{self.base}{self.path}", headers=forwarded(address), timeout=30)
        assert form.status_code == 200
        return session.post(
            f"{self.base}{self.path}",
            data={
                "username": username,
                "password": secret,
                "next": self.after,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers=forwarded(address),
            allow_redirects=False,
            timeout=30,
        )

    def outcome(self, response):
        if response.status_code == 302:
            assert response.headers["Location"] == self.after
            return "ok"
        if response.status_code == 429:
            assert "Too many failed sign-ins" in response.text
            assert 'name="password"' in response.text  # our sign-in page, not axes' plain text
            return "locked"
        assert response.status_code == 200, response.status_code
        return "failed"


class WebLogin(Page):
    name, path, after = "ui", "/login/", "/"


class AdminLogin(Page):
    name, path, after = "admin", "/admin/login/", "/admin/"


class TokenEndpoint(Door):
    name = "api"

    def attempt(self, username, secret, address):
        return requests.post(
            f"{self.base}/api/v1/auth/tokens/",
            json={"username": username, "password": secret, "name": "guess"},
            headers=forwarded(address),
            timeout=30,
        )

    def outcome(self, response):
        if response.status_code == 201:
            return "ok"
        error = response.json()["error"]
        if response.status_code == 429:
            assert error["code"] == "locked_out"
            assert "Too many failed sign-ins" in error["message"]
            return "locked"
        assert (response.status_code, error["code"]) == (401, "not_authenticated")
        return "failed"


class MlflowBasic(Door):
    name = "mlflow"

    def attempt(self, username, secret, address):
        return requests.get(
            f"{self.base}/api/2.0/mlflow/registered-models/search",
            auth=(username, secret),
            headers=forwarded(address),
            timeout=30,
        )

    def outcome(self, response):
        if response.status_code == 200:
            return "ok"
        body = response.json()
        assert (response.status_code, body["error_code"]) == (401, "UNAUTHENTICATED")
        if body["error"]["code"] == "locked_out":
            assert "Too many failed sign-ins" in body["message"]
            return "locked"
        assert body["error"]["code"] == "not_authenticated"
        return "failed"


DOORS = [WebLogin, AdminLogin, TokenEndpoint, MlflowBasic]


@pytest.fixture(params=DOORS, ids=lambda door: door.name)
def door(request, live_server, lockouts, users) -> Door:
    return request.param(live_server.url)


def age_attempts(username: str, address: str, by: timedelta) -> None:
    AccessAttempt.objects.filter(username=username, ip_address=address).update(
        attempt_time=F("attempt_time") - by
    )


def lockout_events() -> list[tuple[str, str]]:
    return [
        (e.data["username"], e.data["client_address"])
        for e in Event.objects.filter(type="auth.locked_out")
    ]


# --- every door ------------------------------------------------------------------------


def test_failures_lock_one_user_at_one_address_until_the_cool_off(door):
    outcomes = [door.sign_in("ann", "wrong", HERE) for _ in range(LIMIT)]
    assert outcomes == ["failed"] * (LIMIT - 1) + ["locked"]
    # Now even the right password is refused, and refusing it does not restart the clock.
    assert door.sign_in("ann", password("ann"), HERE) == "locked"
    assert door.sign_in("ann", "wrong", HERE) == "locked"
    # Another user from the same address, and ann from another address, are not affected.
    assert door.sign_in("ben", password("ben"), HERE) == "ok"
    assert door.sign_in("ann", password("ann"), THERE) == "ok"

    # Ten seconds before the cool-off ends: still locked, and Retry-After says so.
    age_attempts("ann", HERE, timedelta(minutes=15) - timedelta(seconds=10))
    assert door.sign_in("ann", password("ann"), HERE) == "locked"
    assert door.last_retry_after <= 10
    age_attempts("ann", HERE, timedelta(seconds=11))
    assert door.sign_in("ann", password("ann"), HERE) == "ok"
    assert lockout_events() == [("ann", HERE)]  # one lockout, one audit event
    event = Event.objects.get(type="auth.locked_out")
    assert event.actor_name == "system" and event.data["failures"] == LIMIT


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(door, settings):
    """A guesser who names a fresh address per try is still one client: the peer's."""
    settings.MODELGATE_TRUSTED_PROXIES = []
    outcomes = [door.sign_in("ann", "wrong", f"192.0.2.{i}") for i in range(1, LIMIT + 1)]
    assert outcomes[-1] == "locked"
    assert door.sign_in("ann", password("ann"), "192.0.2.200") == "locked"
    assert lockout_events() == [("ann", "127.0.0.1")]


def test_a_success_forgets_earlier_failures(door):
    for _ in range(LIMIT - 1):
        assert door.sign_in("ann", "wrong", HERE) == "failed"
    assert door.sign_in("ann", password("ann"), HERE) == "ok"
    assert door.sign_in("ann", "wrong", HERE) == "failed"
    assert lockout_events() == []


# --- door-specific ---------------------------------------------------------------------


def test_a_locked_out_user_can_still_use_a_token(live_server, lockouts, users):
    ann, _ = users
    mlflow_door = MlflowBasic(live_server.url)
    for _ in range(LIMIT):
        mlflow_door.sign_in("ann", "wrong", HERE)
    url = f"{live_server.url}/api/2.0/mlflow/registered-models/search"
    with_token = requests.get(
        url, headers={"Authorization": f"Bearer {token_for(ann)}", **forwarded(HERE)}, timeout=30
    )
    assert with_token.status_code == 200


def test_mlflows_own_client_fails_fast_and_says_why(live_server, lockouts, users, monkeypatch):
    """MLflow's client retries a 429 for minutes (honouring Retry-After); locked out, it gets
    a 401 and stops at once with the message."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.exceptions import MlflowException

    lockouts.MODELGATE_TRUSTED_PROXIES = []  # the client sends no X-Forwarded-For
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    client = mlflow.MlflowClient(tracking_uri=live_server.url, registry_uri=live_server.url)
    for _ in range(LIMIT - 1):
        with pytest.raises(MlflowException, match="Invalid username or password"):
            client.search_registered_models()
    with pytest.raises(MlflowException, match="Too many failed sign-ins"):
        client.search_registered_models()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password("ann"))
    started = time.monotonic()
    with pytest.raises(MlflowException) as info:
        client.search_registered_models()
    assert time.monotonic() - started < 10
    assert info.value.error_code == "UNAUTHENTICATED"
    assert re.search(r"Too many failed sign-ins.*try again in 15 minute", str(info.value))


# --- the client address ----------------------------------------------------------------


def request_from(peer: str, forwarded_for: str | None = None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=peer, **extra)


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded_for", "client"),
    [
        ([], "10.0.0.5", "198.51.100.9", "10.0.0.5"),  # no trusted proxies: header ignored
        (["10.0.0.5"], "10.0.0.6", "198.51.100.9", "10.0.0.6"),  # peer not a trusted proxy
        (["10.0.0.5"], "10.0.0.5", "198.51.100.9", "198.51.100.9"),
        (["10.0.0.5"], "10.0.0.5", None, "10.0.0.5"),
        # the right-most hop that is not a proxy; what the client wrote left of it is not read
        (["10.0.0.0/8"], "10.0.0.5", "1.2.3.4, 198.51.100.9, 10.1.1.1", "198.51.100.9"),
        (["10.0.0.0/8"], "10.0.0.5", "198.51.100.9,10.1.1.1 ", "198.51.100.9"),
        (["10.0.0.0/8"], "10.0.0.5", "not-an-ip, 10.1.1.1", "10.1.1.1"),
        (["10.0.0.5", "2001:db8::/32"], "2001:db8::1", "2001:db8:ffff::2, ::1", "::1"),
        (["127.0.0.1"], "::ffff:127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ([], "", "203.0.113.7", ""),
    ],
)
def test_the_client_address(settings, proxies, peer, forwarded_for, client):
    settings.MODELGATE_TRUSTED_PROXIES = proxies
    assert client_address(request_from(peer, forwarded_for)) == client


def test_the_token_throttle_keys_on_the_same_client_address(settings):
    throttle = ClientAddressThrottle()
    settings.MODELGATE_TRUSTED_PROXIES = []
    assert throttle.get_ident(request_from("10.0.0.5", "198.51.100.9")) == "10.0.0.5"
    settings.MODELGATE_TRUSTED_PROXIES = ["10.0.0.5"]
    assert throttle.get_ident(request_from("10.0.0.5", "198.51.100.9")) == "198.51.100.9"


@pytest.mark.django_db
def test_metrics_loopback_rule_reads_the_same_client_address(settings, client):
    """/metrics without a token is for loopback callers: a remote client relayed by a
    trusted proxy on this host is not one, whatever X-Forwarded-For it wrote itself."""
    settings.MODELGATE_METRICS_TOKEN = ""
    settings.MODELGATE_TRUSTED_PROXIES = ["127.0.0.1"]
    remote = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert remote.status_code == 403
    spoofed = "127.0.0.1, 198.51.100.9"  # the client's "127.0.0.1", then what nginx saw
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=spoofed).status_code
        == 403
    )
    local = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert local.status_code == 200
    settings.MODELGATE_TRUSTED_PROXIES = []  # an untrusted relay: never local
    relayed = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert relayed.status_code == 403
