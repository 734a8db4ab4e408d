"""How the OpenAPI document describes our authentication (drf-spectacular extensions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "registry.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from POST /api/v1/auth/tokens/.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "registry.api.auth.SessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The browser session (with the X-CSRFToken header for writes).",
        }


# Where a created resource can be used next: OpenAPI links on the 201 responses, so that
# clients (and schemathesis' stateful phase) can follow create → read/update/act.
_MODEL = {"name": "$response.body#/name"}
_VERSION = {"name": "$request.path.name", "ref": "$response.body#/version"}
_PROMOTION = {"promotion_id": "$response.body#/id"}
LINKS = {
    "models_create": (
        _MODEL,
        ["models_retrieve", "models_update", "versions_create", "versions_list", "aliases_list"],
    ),
    "versions_create": (
        _VERSION,
        ["versions_retrieve", "versions_update", "versions_finalize", "versions_archive"],
    ),
    "promotions_request": (
        _PROMOTION,
        ["promotions_retrieve", "promotions_review", "promotions_cancel"],
    ),
    "environments_create": (
        {"environment": "$response.body#/name"},
        ["environments_retrieve", "environments_update"],
    ),
    "webhooks_create": (
        {"webhook_id": "$response.body#/id"},
        ["webhooks_retrieve", "webhooks_update", "webhooks_deliveries", "webhooks_destroy"],
    ),
    "monitors_create": (
        {"monitor_id": "$response.body#/id"},
        ["monitors_retrieve", "monitors_update", "monitors_destroy"],
    ),
}


def add_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: the LINKS above, on each 201 response."""
    operations = {
        op["operationId"]: op
        for item in result["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for source, (parameters, targets) in LINKS.items():
        response = operations[source]["responses"]["201"]
        response["links"] = {
            target: {"operationId": target, "parameters": parameters} for target in targets
        }
    return result
