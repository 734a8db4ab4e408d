"""The API's documentation pages (drf-spectacular, its files from drf-spectacular-sidecar)
under the site's Content-Security-Policy: nothing inline but what Redoc itself needs."""

from csp.constants import NONCE
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView


class SwaggerView(SpectacularSwaggerSplitView):
    """Swagger UI with its init script fetched from this same URL (`?script`), not inline,
    and our template's stylesheet in place of drf-spectacular's inline <style>."""

    template_name = "webui/swagger_ui.html"


# The two <style> elements Redoc's bundle writes as it loads, before it can be handed the
# nonce: perfect-scrollbar's CSS (with its source map) and an empty one. Their hashes are
# those of drf-spectacular-sidecar's Redoc 2.5.4; a new Redoc's are named in Chromium's
# console, and the browser tests (tests/csp.py) fail on it.
REDOC_LOAD_STYLES = [
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
]


class RedocView(SpectacularRedocView):
    """Redoc, offline: our template has no Google Fonts. Redoc writes its styles into <style>
    elements at run time, marked with the nonce it is given, and searches in a blob: worker.
    Its sidebar logo (an <img> from Redocly's CDN, in every build) stays blocked by img-src."""

    template_name = "webui/redoc.html"
    POLICY = {"style-src": [NONCE, *REDOC_LOAD_STYLES], "worker-src": ["'self'", "blob:"]}

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response._csp_update = self.POLICY  # what django-csp's @csp_update sets
        return response
