"""Single sign-on (OpenID Connect) against a real provider on loopback, in Chromium.

The provider is npm's oidc-provider (tests/oidc/provider.mjs, PKCE required); Modelgate runs
as gunicorn with the MODELGATE_OIDC_* variables, as deployed. A user's groups live in the
provider's account file, which it reads at every sign-in, so a test changes them between two
logins. Then the group map's parsing, the sign-in rules on their own, and the switch that
turns passwords off at every door.
"""

import re
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import requests
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from config import sso as sso_config
from registry import models as registry_models
from registry.models import Event, RegisteredModel, Team, TeamMembership
from registry.services import sso

from .conftest import _make_user
from .oidc_support import Provider
from .processes import Web, base_env, free_port

GROUP_MAP = (
    '{"fraud-devs": "fraud:contributor", "fraud-leads": "fraud:maintainer",'
    ' "ml-reviewers": "@reviewers"}'
)
DANA = {
    "password": "dana-at-the-provider",
    "email": "dana@example.com",
    "name": "Dana Scully",
    "groups": ["fraud-devs", "ml-reviewers", "unmapped"],
}


def sso_web(tmp_path, issuer: str, **extra) -> Web:
    env = base_env(
        settings.CELERY_BROKER_URL,
        MODELGATE_OIDC_ISSUER=issuer,
        MODELGATE_OIDC_CLIENT_ID="modelgate",
        MODELGATE_OIDC_CLIENT_SECRET="modelgate-test-client-secret",
        MODELGATE_OIDC_SCOPES="openid email profile groups",
        MODELGATE_OIDC_GROUP_MAP=GROUP_MAP,
        **extra,
    )
    return Web(env, tmp_path, workers=1)


@pytest.fixture
def idp(request, tmp_path, transactional_db):
    """The provider with dana's account, and Modelgate using it: (provider, web).
    Parametrized with "fixed-redirect", Modelgate is given its redirect URI (as behind a
    proxy), one the request's own URL would not give."""
    provider = Provider(tmp_path, {"dana": DANA})
    web = sso_web(tmp_path, provider.issuer)
    redirect_uri = f"{web.url}/oidc/callback/"
    if getattr(request, "param", None) == "fixed-redirect":
        redirect_uri += "?via=proxy"
        web.env["MODELGATE_OIDC_REDIRECT_URI"] = redirect_uri
    provider.start(redirect_uri)
    web.start()
    yield provider, web
    web.stop()
    provider.stop()


def sso_memberships(username: str) -> set[tuple[str, str, str]]:
    return set(
        TeamMembership.objects.filter(user__username=username).values_list(
            "team__name", "role", "source"
        )
    )


def groups_of(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


def sign_in_with_sso(page, base: str, path: str = "/") -> None:
    page.goto(f"{base}{path}")
    page.get_by_role("link", name="Sign in with single sign-on").click()


def at_the_provider(page, provider, username: str, password: str) -> None:
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


# --- the whole flow, in Chromium ------------------------------------------------------------


def test_sso_signs_in_through_the_provider_and_the_group_claim_is_reread_at_every_login(
    idp, page, tmp_path
):
    provider, web = idp
    fraud = Team.objects.create(name="fraud")
    RegisteredModel.objects.create(name="fraud-detector", team=fraud)  # private to its team
    assert not User.objects.filter(username="dana").exists()

    # First login: sent to the provider, a wrong password is refused there, then the right
    # one, consent, and back where dana was going, signed in.
    sign_in_with_sso(page, web.url, "/models/fraud-detector/")
    at_the_provider(page, provider, "dana", "not-her-password")
    page.get_by_role("alert").filter(has_text="Wrong username or password").wait_for()
    at_the_provider(page, provider, "dana", DANA["password"])
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{web.url}/models/fraud-detector/")
    assert page.locator(".who").inner_text().startswith("dana")
    assert page.get_by_role("heading", name="fraud-detector").is_visible()

    dana = User.objects.get(username="dana")
    assert dana.email == DANA["email"] and not dana.has_usable_password()
    assert sso_memberships("dana") == {("fraud", "contributor", "sso")}
    assert groups_of("dana") == {"reviewers"}
    # The provider saw a PKCE challenge (S256) and the matching verifier at the token request.
    (authorization,) = provider.events("authorization")
    assert authorization["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", authorization["code_challenge"])
    assert [g["code_verifier"] for g in provider.events("grant")] == [True]
    (signed_in,) = Event.objects.filter(type=sso.SIGNED_IN_EVENT)
    assert signed_in.actor_name == "dana" and signed_in.data["method"] == "sso"
    assert signed_in.data["user_created"] is True
    assert signed_in.data["teams"] == {"fraud": "contributor"}
    assert signed_in.data["idp_groups"] == ["fraud-devs", "ml-reviewers"]

    # A membership granted in Modelgate is not the provider's to take away.
    churn = Team.objects.create(name="churn")
    TeamMembership.objects.create(team=churn, user=dana, role="viewer", source="local")

    # dana leaves fraud-devs and ml-reviewers at the provider; she signs out and in again
    # (the provider remembers her, so no password this time: a new code, a new challenge).
    provider.set_accounts({"dana": {**DANA, "groups": ["unmapped"]}})
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{web.url}/login/")
    sign_in_with_sso(page, web.url)
    page.wait_for_url(f"{web.url}/")
    assert page.locator(".who").inner_text().startswith("dana")

    assert sso_memberships("dana") == {("churn", "viewer", "local")}
    assert groups_of("dana") == set()
    assert len(provider.events("authorization")) == 2
    assert all(a["code_challenge_method"] == "S256" for a in provider.events("authorization"))
    # The team's private model is gone for her.
    response = page.goto(f"{web.url}/models/fraud-detector/")
    assert response.status == 404
    assert User.objects.filter(username="dana").count() == 1
    second = Event.objects.filter(type=sso.SIGNED_IN_EVENT).order_by("-id").first()
    assert second.data["user_created"] is False and second.data["groups_removed"] == ["reviewers"]
    assert Event.objects.filter(type="team.member_removed", data__team="fraud").exists()


# --- PKCE, the callback, discovery -------------------------------------------------------------


def test_the_provider_refuses_a_flow_without_pkce_and_modelgate_always_sends_s256(idp):
    provider, web = idp
    callback = f"{web.url}/oidc/callback/"
    plain = httpx.get(
        f"{provider.issuer}/auth",
        params={
            "client_id": "modelgate",
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": callback,
            "state": "s",
        },
    )
    assert plain.status_code == 303
    refused = parse_qs(urlparse(plain.headers["location"]).query)
    assert refused["error"] == ["invalid_request"]
    assert "PKCE" in refused["error_description"][0]

    start = httpx.get(f"{web.url}/oidc/authenticate/", params={"next": "/audit/"})
    assert start.status_code == 302
    sent = urlparse(start.headers["location"])
    query = parse_qs(sent.query)
    assert f"{sent.scheme}://{sent.netloc}{sent.path}" == f"{provider.issuer}/auth"
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [callback]
    assert query["scope"] == ["openid email profile groups"]


@pytest.mark.parametrize("idp", ["fixed-redirect"], indirect=True)
def test_a_configured_redirect_uri_serves_the_authorization_and_the_code_exchange(idp, page):
    provider, web = idp
    sign_in_with_sso(page, web.url)
    at_the_provider(page, provider, "dana", DANA["password"])
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{web.url}/")
    assert page.locator(".who").inner_text().startswith("dana")
    # The provider checks the token request's redirect_uri against the authorization's.
    assert [g["code_verifier"] for g in provider.events("grant")] == [True]


def test_a_forged_callback_signs_nobody_in_and_is_no_password_guess(idp):
    provider, web = idp
    with httpx.Client(base_url=web.url) as browser:
        start = browser.get("/oidc/authenticate/")
        state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
        # This session's real state, with a code the provider never issued: refused at its
        # token endpoint. And a state this session never had.
        for forged in ({"code": "made-up", "state": state}, {"code": "x", "state": "made-up"}):
            answer = browser.get("/oidc/callback/", params=forged)
            assert (answer.status_code, answer.headers["location"]) == (302, "/login/?sso=failed")
        assert "Single sign-on did not sign you in" in browser.get("/login/?sso=failed").text
        assert browser.get("/").headers["location"].startswith("/login/")
    assert [e["error"] for e in provider.events("grant.error")] == ["invalid_grant"]
    assert User.objects.count() == 0
    assert AccessAttempt.objects.count() == 0  # axes counts password guesses only


def test_discovery_waits_for_the_first_sign_in_and_a_down_provider_is_retried(
    tmp_path, transactional_db
):
    port = free_port()
    web = sso_web(tmp_path, f"http://127.0.0.1:{port}").start()  # nothing listens there yet
    try:
        login = httpx.get(f"{web.url}/login/")
        assert login.status_code == 200 and "Sign in with single sign-on" in login.text
        down = httpx.get(f"{web.url}/oidc/authenticate/")
        assert (down.status_code, down.headers["location"]) == (302, "/login/?sso=unavailable")
        assert "cannot be reached" in httpx.get(f"{web.url}{down.headers['location']}").text

        provider = Provider(tmp_path, {"dana": DANA}, port=port)
        provider.start(f"{web.url}/oidc/callback/")
        try:
            up = httpx.get(f"{web.url}/oidc/authenticate/")
            assert up.status_code == 302
            assert up.headers["location"].startswith(f"{provider.issuer}/auth?")
        finally:
            provider.stop()
    finally:
        web.stop()


def test_without_an_issuer_there_is_no_sso_button_and_no_route(client, db):
    assert not settings.MODELGATE_OIDC_ISSUER  # the test run's own settings
    page = client.get("/login/").content.decode()
    assert "single sign-on" not in page and 'name="password"' in page
    assert client.get("/oidc/authenticate/").status_code == 404


# --- the sign-in rules, on the database -------------------------------------------------------


@pytest.fixture
def group_map(settings):
    settings.MODELGATE_OIDC_GROUPS_CLAIM = "roles"
    settings.MODELGATE_OIDC_GROUP_MAP = sso_config.parse_group_map(GROUP_MAP)
    return settings.MODELGATE_OIDC_GROUP_MAP


def claims(**values) -> dict:
    return {"sub": "248289761001", **values}


def test_an_existing_user_keeps_groups_and_teams_the_map_does_not_own(db, group_map, rf):
    erin = _make_user("erin", ["auditors", "reviewers"], team=None)
    TeamMembership.objects.create(team=Team.objects.create(name="churn"), user=erin, role="viewer")
    user = sso.sign_in(rf.get("/oidc/callback/"), claims(preferred_username="erin", roles=[]))
    assert user == erin and erin.has_usable_password()  # a laptop password stays
    assert groups_of("erin") == {"auditors"}  # "reviewers" is the map's, "auditors" is not
    assert sso_memberships("erin") == {("churn", "viewer", "local")}


def test_of_several_roles_in_one_team_the_highest_wins(db, group_map, rf):
    roles = ["fraud-leads", "fraud-devs"]
    sso.sign_in(rf.get("/"), claims(preferred_username="fay", roles=roles))
    assert sso_memberships("fay") == {("fraud", "maintainer", "sso")}
    sso.sign_in(rf.get("/"), claims(preferred_username="fay", roles="fraud-devs"))  # one string
    assert sso_memberships("fay") == {("fraud", "contributor", "sso")}


def test_a_deactivated_user_is_refused_and_left_as_they_are(db, group_map, rf):
    gus = _make_user("gus", team=None)
    gus.is_active = False
    gus.save()
    with pytest.raises(sso.Refused, match="deactivated"):
        sso.sign_in(rf.get("/"), claims(preferred_username="gus", roles=["fraud-devs"]))
    assert sso_memberships("gus") == set()


@pytest.mark.parametrize(
    ("values", "username"),
    [
        ({"preferred_username": "hal", "email": "hal@example.com"}, "hal"),
        ({"preferred_username": "has space", "email": "hal@example.com"}, "hal@example.com"),
        ({"email": ["not", "a", "string"]}, "248289761001"),
        ({"sub": "auth0|abc", "preferred_username": ""}, None),
    ],
)
def test_the_username_comes_from_preferred_username_email_or_sub(values, username):
    if username is None:
        with pytest.raises(sso.Refused):
            sso.username_from(claims(**values))
    else:
        assert sso.username_from(claims(**values)) == username


# --- the group map -------------------------------------------------------------------------


def test_the_group_map_gives_team_roles_and_django_groups():
    parsed = sso_config.parse_group_map(
        '{"a": "fraud:viewer", "b": ["fraud:maintainer", "@reviewers"], "c": "churn-2:contributor"}'
    )
    Target = sso_config.Target
    assert parsed == {
        "a": (Target(team="fraud", role="viewer"),),
        "b": (Target(team="fraud", role="maintainer"), Target(group="reviewers")),
        "c": (Target(team="churn-2", role="contributor"),),
    }
    assert sso.what_groups_give(["a", "b", "x"], parsed) == ({"fraud": "maintainer"}, {"reviewers"})
    assert sso_config.parse_group_map("") == {}
    assert sso_config.TEAM_NAME_PATTERN == registry_models.TEAM_NAME_PATTERN


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("fraud-devs=fraud:contributor", "not JSON"),
        ('["fraud:contributor"]', "must be a JSON object"),
        ('{"devs": "fraud:owner"}', "'devs': 'fraud:owner' is not <team>:<viewer|contributor|"),
        ('{"devs": "fraud"}', "is not <team>:<viewer"),
        ('{"devs": "Fraud Team:viewer"}', "team 'Fraud Team' must be"),
        ('{"devs": "@"}', "does not name a Django group"),
        ('{"devs": []}', "'devs' maps to nothing"),
        ('{"devs": 7}', "7 is not a string"),
        ('{"": "fraud:viewer"}', "is empty"),
    ],
)
def test_a_wrong_group_map_stops_the_start_with_a_clear_error(text, says):
    with pytest.raises(ImproperlyConfigured, match="MODELGATE_OIDC_GROUP_MAP") as raised:
        sso_config.from_env({"MODELGATE_OIDC_GROUP_MAP": text})
    assert says in str(raised.value)
    assert "Example:" in str(raised.value)


# --- turning passwords off ----------------------------------------------------------------


ISSUER_ENV = {
    "MODELGATE_OIDC_ISSUER": "https://idp.example/realms/x/",
    "MODELGATE_OIDC_CLIENT_ID": "modelgate",
    "MODELGATE_OIDC_CLIENT_SECRET": "s",
}


def test_the_local_login_switch_decides_the_password_backend():
    backends = sso_config.from_env
    assert backends({})["AUTHENTICATION_BACKENDS"] == [
        "axes.backends.AxesStandaloneBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    on = backends(ISSUER_ENV)
    assert on["AUTHENTICATION_BACKENDS"][1:] == [
        "django.contrib.auth.backends.ModelBackend",
        "webui.oidc.OIDCBackend",
    ]
    assert on["MODELGATE_OIDC_ISSUER"] == "https://idp.example/realms/x"
    off = backends({**ISSUER_ENV, "MODELGATE_LOCAL_LOGIN": "0"})
    assert off["AUTHENTICATION_BACKENDS"] == [
        "axes.backends.AxesStandaloneBackend",
        "webui.oidc.OIDCBackend",
    ]
    assert off["MODELGATE_LOCAL_LOGIN"] is False
    with pytest.raises(ImproperlyConfigured, match="nobody could sign in"):
        backends({"MODELGATE_LOCAL_LOGIN": "0"})
    with pytest.raises(ImproperlyConfigured, match="MODELGATE_OIDC_CLIENT_SECRET"):
        backends({"MODELGATE_OIDC_ISSUER": "https://idp.example"})


# Without a password form the page sets no CSRF cookie; a client may make its own (Django
# takes any 32-character secret in both places), so the POST reaches the password check.
CSRF = "s" * 32


def door_outcomes(base: str, username: str, password: str) -> dict[str, bool]:
    """For each password door: did the right password get in?"""
    results = {}
    for door, after in (("/login/", "/"), ("/admin/login/", "/admin/")):
        session = requests.Session()
        session.cookies.set("csrftoken", CSRF)
        session.post(
            f"{base}{door}?next={after}",
            data={"username": username, "password": password, "next": after},
            headers={"X-CSRFToken": CSRF},
            timeout=30,
        )
        inside = session.get(f"{base}{after}", allow_redirects=False, timeout=30)
        results[door] = inside.status_code == 200
    token = requests.post(
        f"{base}/api/v1/auth/tokens/",
        json={"username": username, "password": password, "name": "ci"},
        timeout=30,
    )
    results["token"] = token.status_code == 201
    mlflow = requests.get(
        f"{base}/api/2.0/mlflow/registered-models/search", auth=(username, password), timeout=30
    )
    results["mlflow"] = mlflow.status_code == 200
    return results


@pytest.mark.parametrize("local_login", [True, False])
def test_the_password_forms_check_passwords_through_the_backends_alone(local_login, settings, db):
    """The site's and the admin's forms (the latter redirected away when passwords are off,
    see below) authenticate through AUTHENTICATION_BACKENDS: without ModelBackend, none."""
    _make_user("ann", staff=True)
    environ = {**ISSUER_ENV, "MODELGATE_LOCAL_LOGIN": "1" if local_login else "0"}
    settings.AUTHENTICATION_BACKENDS = sso_config.from_env(environ)["AUTHENTICATION_BACKENDS"]
    settings.MODELGATE_LOCAL_LOGIN = local_login
    for door, after in (("/login/", "/"), ("/admin/login/", "/admin/")):
        client = Client()
        answer = client.post(
            f"{door}?next={after}",
            {"username": "ann", "password": "ann-password-1", "next": after},
        )
        assert (answer.status_code == 302) is local_login, door
        assert (client.get(after).status_code == 200) is local_login, door
        if door == "/login/" and not local_login:
            assert "Passwords are turned off here" in answer.content.decode()


@pytest.mark.parametrize("local_login", ["1", "0"])
def test_with_local_login_off_every_door_refuses_a_right_password(
    local_login, tmp_path, transactional_db
):
    _make_user("ann", staff=True)
    web = sso_web(tmp_path, "http://127.0.0.1:9", MODELGATE_LOCAL_LOGIN=local_login).start()
    try:
        outcomes = door_outcomes(web.url, "ann", "ann-password-1")
        login = requests.get(f"{web.url}/login/", timeout=30).text
        admin_login = requests.get(f"{web.url}/admin/login/?next=/admin/", timeout=30)
    finally:
        web.stop()
    assert "Sign in with single sign-on" in login
    if local_login == "1":
        assert outcomes == {"/login/": True, "/admin/login/": True, "token": True, "mlflow": True}
        assert 'name="password"' in login
    else:
        assert outcomes == {
            "/login/": False,
            "/admin/login/": False,
            "token": False,
            "mlflow": False,
        }
        assert 'name="password"' not in login
        # The admin's password form sends staff to the site's sign-in page instead.
        assert admin_login.url == f"{web.url}/login/?next=/admin/"
