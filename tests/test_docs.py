"""The API's documentation pages work offline: Swagger UI (/api/v1/docs/) and Redoc
(/api/v1/redoc/) load everything from this server (drf-spectacular-sidecar's files, served
as our static files), in Chromium with every other host cut off; plus the favicon and the
web UI's link to the docs."""

import re
from urllib.parse import urljoin, urlparse

import pytest
from django.core.management import call_command
from django.test import Client, RequestFactory

from .conftest import ROOT, sign_in

DOCS, REDOC, SCHEMA = "/api/v1/docs/", "/api/v1/redoc/", "/api/v1/schema/"
SWAGGER_INIT = f"{DOCS}?script="
URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.IGNORECASE)
LINKED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def external_urls(html: str, host: str = "testserver") -> list[str]:
    """Every absolute or protocol-relative URL in the page whose host is not the server."""
    return [url for url in URL.findall(html) if urlparse(url).hostname not in {host, None}]


def linked(html: str) -> list[str]:
    return LINKED.findall(html)


# --- the pages' HTML, through Django's test client ---------------------------------------


@pytest.mark.parametrize("page", [DOCS, REDOC])
def test_the_docs_pages_reference_no_other_host(db, page):
    response = Client().get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert external_urls(html) == []
    # Everything they load comes from our own static files, our schema or Swagger UI's
    # init script (served apart from the page: the Content-Security-Policy has no inline).
    links = linked(html)
    assert links, html
    assert all(link.startswith(("/static/", SCHEMA, SWAGGER_INIT)) for link in links), links


def test_swagger_ui_loads_its_bundle_from_the_sidecar(db):
    html = Client().get(DOCS).content.decode()
    sidecar = "/static/drf_spectacular_sidecar/swagger-ui-dist/"
    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert f"{sidecar}{name}" in html
    assert f'<script src="{SWAGGER_INIT}">' in html and "<style" not in html
    init = Client().get(SWAGGER_INIT)
    assert init.status_code == 200 and init["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in init.content.decode() and SCHEMA in init.content.decode()


def test_the_redoc_page_loads_redoc_from_the_sidecar(db):
    response = Client().get(REDOC)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in html
    assert SCHEMA in html
    assert "fonts.googleapis" not in html
    # Redoc's sidebar logo is an <img> from Redocly's CDN in every build: the page's policy
    # keeps the browser from fetching anything but this server's files.
    policy = response["Content-Security-Policy"]
    assert "img-src 'self' data:" in policy and "default-src 'self'" in policy
    # Redoc's own <style> elements carry the page's nonce; the page has none of its own.
    nonce = re.search(r"style-src 'self' 'nonce-([^']+)'", policy).group(1)
    assert f'nonce="{nonce}"' in html and "<style" not in html
    assert nonce != re.search(r"'nonce-([^']+)'", Client().get(REDOC)["Content-Security-Policy"])[1]


def test_favicon_ico_answers_with_the_svg_icon(db):
    response = Client().get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.lstrip().startswith(b"<svg")
    assert Client().head("/favicon.ico").status_code == 200
    assert Client().post("/favicon.ico").status_code == 405


def test_the_web_ui_links_the_favicon_and_the_api_docs(alice):
    client = Client()
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert re.search(r'<link rel="icon" href="/static/webui/favicon\.svg"', html)
    nav = html[html.index('<nav class="nav"') : html.index("</nav>")]
    assert f'<a href="{DOCS}">API</a>' in nav
    # The sign-in page (no nav) still has the icon.
    assert 'rel="icon"' in Client().get("/login/").content.decode()


def test_collectstatic_gathers_the_docs_files_and_whitenoise_serves_them(db, settings, tmp_path):
    """As the image and `make run` serve them: collectstatic, then whitenoise (no finders)."""
    from whitenoise.middleware import WhiteNoiseMiddleware

    settings.STATIC_ROOT = tmp_path / "static"
    settings.WHITENOISE_USE_FINDERS = False
    call_command("collectstatic", interactive=False, verbosity=0)
    whitenoise = WhiteNoiseMiddleware(lambda request: pytest.fail(f"not static: {request}"))
    wanted = {
        link
        for page in (DOCS, REDOC, "/login/")
        for link in linked(Client().get(page).content.decode())
        if link.startswith("/static/")
    }
    assert any("swagger-ui-bundle.js" in link for link in wanted)
    assert any("redoc.standalone.js" in link for link in wanted)
    assert "/static/webui/favicon.svg" in wanted
    for link in sorted(wanted):
        response = whitenoise(RequestFactory().get(link))
        assert response.status_code == 200, link
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, link
        response.close()


# --- in Chromium, offline ----------------------------------------------------------------


def offline(page, base: str) -> tuple[list[str], list[str], list[str]]:
    """Cut the page off from every host but the live server's: (URLs refused on their way
    out, other failed requests as "url failure", URLs the page's Content-Security-Policy
    kept the browser from requesting at all)."""
    origin = urlparse(base)
    refused, failed, blocked = [], [], []

    def route(route, request):
        url = urlparse(request.url)
        if (url.scheme, url.hostname, url.port) == (origin.scheme, origin.hostname, origin.port):
            route.continue_()
        else:
            refused.append(request.url)
            route.abort("internetdisconnected")

    page.context.route("**/*", route)

    def request_failed(request):
        if request.failure in {"csp", "net::ERR_BLOCKED_BY_CSP"}:
            blocked.append(request.url)
        elif request.url not in refused:
            failed.append(f"{request.url} {request.failure}")

    page.on("requestfailed", request_failed)
    return refused, failed, blocked


@pytest.mark.browser
def test_swagger_ui_renders_and_lists_operations_offline(page, live_server):
    from playwright.sync_api import expect

    base = live_server.url
    refused, failed, blocked = offline(page, base)
    loaded = []
    page.on("response", lambda response: loaded.append((response.url, response.status)))

    page.goto(urljoin(base, DOCS))
    models = page.locator(".opblock", has_text="/api/v1/models/")
    expect(models.first).to_be_visible()
    assert page.locator(".opblock").count() > 20
    expect(page.locator(".opblock-summary-method", has_text="GET").first).to_be_visible()
    # An operation opens and shows its parameters and responses, all rendered locally.
    models.first.locator(".opblock-summary").click()
    expect(models.first.locator(".responses-wrapper")).to_be_visible()

    page.wait_for_load_state("networkidle")
    assert refused == [] and failed == [] and blocked == []
    statuses = dict(loaded)
    assert statuses[urljoin(base, DOCS)] == 200
    assert statuses[urljoin(base, SCHEMA)] == 200
    sidecar = [url for url in statuses if "/static/drf_spectacular_sidecar/" in url]
    assert len(sidecar) >= 3 and all(statuses[url] == 200 for url in sidecar)
    assert all(urlparse(url).netloc == urlparse(base).netloc for url in statuses)


@pytest.mark.browser
def test_redoc_renders_offline(page, live_server):
    from playwright.sync_api import expect

    base = live_server.url
    refused, failed, blocked = offline(page, base)
    page.goto(urljoin(base, REDOC))
    expect(page.get_by_role("heading", name=re.compile("Modelgate API"))).to_be_visible()
    expect(
        page.locator("[role=menuitem]", has_text=re.compile("models", re.I)).first
    ).to_be_attached()
    # Styled by its own nonce'd <style>s (the sidebar is laid out beside the content), and
    # searching in its blob: worker.
    sidebar = page.locator(".menu-content")
    assert sidebar.evaluate("e => getComputedStyle(e).display") == "flex"
    page.get_by_placeholder("Search...").fill("promotion")
    expect(page.locator("[data-role='search:results'] li").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert refused == [] and failed == []
    # Only Redocly's logo was held back, inside the browser; our scripts and styles ran.
    assert all(urlparse(url).hostname == "cdn.redoc.ly" for url in blocked), blocked


@pytest.mark.browser
def test_the_nav_link_opens_the_api_docs(page, live_server, alice):
    from playwright.sync_api import expect

    base = live_server.url
    refused, _, _ = offline(page, base)
    sign_in(page, base, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API").click()
    page.wait_for_url(urljoin(base, DOCS))
    expect(page.locator(".opblock").first).to_be_visible()
    assert refused == []


def _api_routes() -> set[str]:
    """Every /api/v1/ route the server answers, as `{name}`-style paths."""
    from django.urls import get_resolver
    from django.urls.resolvers import URLResolver

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    routes = {r for r in walk(get_resolver().url_patterns) if r.startswith("api/v1/")}
    return {"/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r).rstrip("$") for r in routes}


def test_the_repository_contract_names_every_api_route_and_the_readme_links_it():
    contract = (ROOT / "docs" / "API.md").read_text()
    # The contract's own parameter names differ (`{n}` for `ref`, `{id}` for ids).
    written = re.sub(r"\{(ref|n)\}", "{ref}", contract)
    missing = []
    for route in sorted(_api_routes()):
        shape = re.sub(r"\{(\w+_id)\}", "{id}", route).replace("{environment}", "{name}")
        if shape.replace("{path}", "") not in written.replace("{path}", ""):
            missing.append(route)
    assert not missing, f"docs/API.md does not describe: {missing}"
    assert "](docs/API.md)" in (ROOT / "README.md").read_text()
