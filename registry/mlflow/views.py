"""MLflow Model Registry REST endpoints (the calls `mlflow.MlflowClient` makes).

Every write goes through `registry.services`, so permissions, validation, audit events and
promotion rules are the native API's. Methods and parameter passing follow MLflow's
`rest_store.py`: GET calls carry query parameters, the others a JSON body.
"""

import base64
import binascii
import json
import re

from django.http import HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from registry.errors import Conflict, InvalidInput, RegistryError
from registry.models import Environment, ModelVersion, RegisteredModel
from registry.services import (
    access,
    aliases,
    artifacts,
    promotions,
    readiness,
    registered_models,
    validation,
    versions,
)
from registry.services.environments import is_protected

from . import shapes
from .auth import authenticate, require_scope
from .errors import (
    ENDPOINT_NOT_FOUND,
    INVALID_STATE,
    PERMISSION_DENIED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    MlflowError,
    from_registry_error,
    invalid,
    method_not_allowed,
)

LIST_PARAMS = {"order_by", "stages"}  # repeated fields, lists even when sent once
MAX_MODELS_PAGE = 1000
MAX_VERSIONS_PAGE = 200_000  # MLflow's SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD


class Call:
    """One request: the caller, and its parameters from the query string or JSON body."""

    def __init__(self, request, user, scopes):
        self.request, self.user, self.scopes = request, user, scopes
        self._params = None

    @property
    def params(self) -> dict:
        if self._params is None:
            self._params = self._parse()
        return self._params

    def _parse(self) -> dict:
        request = self.request
        if request.method == "GET":
            return {
                key: (values if len(values) > 1 or key in LIST_PARAMS else values[0])
                for key, values in request.GET.lists()
            }
        try:
            body = validation.json_document(request.body or b"{}")
        except InvalidInput as exc:
            raise invalid(exc.message) from None
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        return body

    def get(self, key, default=None):
        return self.params.get(key, default)

    def required(self, key) -> str:
        value = self.params.get(key)
        if value in (None, ""):
            raise invalid(f"Missing value for required parameter '{key}'.")
        if not isinstance(value, str):
            raise invalid(f"Parameter '{key}' must be a string.")
        return value


def endpoint(methods: dict):
    """A view dispatching on method to handlers `(call, **url_kwargs) -> dict | response`,
    each with the scope it needs."""

    @csrf_exempt
    def view(request, **kwargs):
        try:
            if request.method not in methods:
                raise method_not_allowed(request)
            level, handler = methods[request.method]
            user, scopes = authenticate(request)
            require_scope(scopes, level)
            with shapes.answering(request):  # download URIs name the host asked
                result = handler(Call(request, user, scopes), **kwargs)
            return result if isinstance(result, HttpResponseBase) else JsonResponse(result)
        except MlflowError as error:
            return error.response()
        except RegistryError as error:
            return from_registry_error(error).response()

    return view


def read(handler):
    return (access.READ, handler)


def write(handler):
    return (access.WRITE, handler)


def _model(call: Call, name: str) -> RegisteredModel:
    return registered_models.get_model(call.user, name)


def _version(call: Call) -> ModelVersion:
    model = _model(call, call.required("name"))
    number = call.get("version")
    if isinstance(number, int) and not isinstance(number, bool):
        number = str(number)
    if not isinstance(number, str) or not (number.isascii() and number.isdigit()):
        raise invalid("Parameter 'version' must be a version number.")
    found = (
        ModelVersion.objects.filter(model=model, number=int(number))
        .select_related("model", "created_by")
        .first()
    )
    if found is None:
        raise MlflowError(
            RESOURCE_DOES_NOT_EXIST, f"Version {number} of model '{model.name}' does not exist."
        )
    return found


def _max_results(call: Call, default: int, ceiling: int) -> int:
    value = call.get("max_results", default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise invalid("'max_results' must be a positive integer.") from None
    if value < 1 or value > ceiling:
        raise invalid(f"'max_results' must be between 1 and {ceiling}.")
    return value


def _offset(call: Call) -> int:
    token = call.get("page_token")
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError, RecursionError):
        raise invalid("Invalid page token.") from None
    if not isinstance(offset, int) or offset < 0:
        raise invalid("Invalid page token.")
    return offset


def _page(items: list, offset: int, size: int, key: str, shape) -> dict:
    page = items[offset : offset + size + 1]
    result = {key: [shape(item) for item in page[:size]]}
    if len(page) > size:
        token = json.dumps({"offset": offset + size}).encode()
        result["next_page_token"] = base64.urlsafe_b64encode(token).decode()
    return result


# --- search filters ------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""^\s*(?P<key>tags?\.`[^`]+`|tags?\."[^"]+"|[A-Za-z_][\w.]*|`[^`]+`)\s*
    (?P<op>=|!=|LIKE|ILIKE)\s*
    (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\d+)\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


# AND between clauses, never inside a quoted value ("name = 'Salt AND Pepper'").
_AND = re.compile(
    r"""\s+AND\s+(?=(?:[^'"`]|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)*$)""",
    re.IGNORECASE,
)


def parse_filter(text: str | None) -> list[tuple[str, str, str]]:
    """`a = 'x' AND b LIKE 'y%'` as [(key, op, value)]: MLflow's subset we answer."""
    if not text or not text.strip():
        return []
    clauses = []
    for part in _AND.split(text.strip()):
        match = _CLAUSE.match(part)
        if not match:
            raise invalid(f"Unsupported filter clause: {part!r}.")
        key = match["key"]
        if key.lower().startswith(("tags.", "tag.")):
            key = "tags." + key.split(".", 1)[1].strip('`"')
        else:
            key = key.strip("`")
        value = match["value"]
        if value[0] in "'\"":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        clauses.append((key, match["op"].upper(), value))
    return clauses


def _like_regex(pattern: str) -> str:
    """SQL LIKE wildcards (% and _) as a regular expression, everything else literal."""
    return "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)


def _like(pattern: str, value: str, ignore_case: bool) -> bool:
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(_like_regex(pattern), value, flags) is not None


def _matches(actual: str | None, op: str, expected: str) -> bool:
    if actual is None:  # an absent tag differs from every value
        return op == "!="
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    return _like(expected, actual, ignore_case=op == "ILIKE")


def _check_keys(clauses, allowed: set[str]) -> None:
    for key, _, _ in clauses:
        if key not in allowed and not key.startswith("tags."):
            raise invalid(f"Filtering on '{key}' is not supported.")


def _order(call: Call, allowed: dict[str, str], default: list[str]) -> list[str]:
    order = call.get("order_by") or []
    if isinstance(order, str):
        order = [order]
    fields = []
    for item in order:
        parts = str(item).split()
        if not parts or len(parts) > 2 or parts[0] not in allowed:
            raise invalid(f"Unsupported order_by clause: {item!r}.")
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise invalid(f"Unsupported order_by clause: {item!r}.")
        fields.append(("-" if direction == "DESC" else "") + allowed[parts[0]])
    return fields + [f for f in default if f.lstrip("-") not in {x.lstrip("-") for x in fields}]


# --- registered models ---------------------------------------------------------------


# Tags that place a model created through MLflow, which has no such fields of its own.
TEAM_TAG, VISIBILITY_TAG = "modelgate.team", "modelgate.visibility"


def create_registered_model(call: Call) -> dict:
    tags = _tags_dict(call.get("tags"))
    team, visibility = tags.pop(TEAM_TAG, None), tags.pop(VISIBILITY_TAG, "team")
    try:
        model = registered_models.create_model(
            call.user,
            call.required("name"),
            description=call.get("description") or "",
            tags=tags,
            team=team,
            visibility=visibility,
        )
    except Conflict as error:
        raise MlflowError(RESOURCE_ALREADY_EXISTS, error.message) from None
    return {"registered_model": shapes.registered_model(model)}


def _tags_dict(tags) -> dict:
    if tags in (None, ""):
        return {}
    if not isinstance(tags, list) or not all(isinstance(t, dict) and "key" in t for t in tags):
        raise invalid("'tags' must be a list of {key, value}.")
    return {t["key"]: t.get("value", "") for t in tags}


def get_registered_model(call: Call) -> dict:
    return {"registered_model": shapes.registered_model(_model(call, call.required("name")))}


def rename_registered_model(call: Call) -> dict:
    model = _model(call, call.required("name"))
    try:
        model = registered_models.rename_model(model, call.user, call.required("new_name"))
    except Conflict as error:
        code = RESOURCE_ALREADY_EXISTS if "model" in error.details else INVALID_STATE
        raise MlflowError(code, error.message) from None
    return {"registered_model": shapes.registered_model(model)}


def update_registered_model(call: Call) -> dict:
    model = _model(call, call.required("name"))
    if "description" in call.params:
        model = registered_models.update_model(
            model, call.user, description=call.get("description") or ""
        )
    return {"registered_model": shapes.registered_model(model)}


def delete_registered_model(call: Call) -> dict:
    model = _model(call, call.required("name"))
    if access.ADMIN not in call.scopes:
        raise MlflowError(PERMISSION_DENIED, "Only an administrator may delete a model.")
    try:
        registered_models.delete_model(model, call.user)
    except Conflict as error:
        raise invalid(error.message) from None
    return {}


def search_registered_models(call: Call) -> dict:
    clauses = parse_filter(call.get("filter"))
    _check_keys(clauses, {"name"})
    size = _max_results(call, 100, MAX_MODELS_PAGE)
    offset = _offset(call)
    order = _order(
        call,
        {
            "name": "name",
            "timestamp": "updated_at",
            "last_updated_timestamp": "updated_at",
            "creation_timestamp": "created_at",
        },
        ["name"],
    )
    queryset = access.visible(
        call.user, RegisteredModel.objects.select_related("created_by").order_by(*order), "pk"
    )
    for key, op, value in clauses:
        if key == "name" and op == "=":
            queryset = queryset.filter(name=value)
        elif key == "name" and op in ("LIKE", "ILIKE"):
            lookup = "name__iregex" if op == "ILIKE" else "name__regex"
            queryset = queryset.filter(**{lookup: f"^{_like_regex(value)}$"})
    models = [
        model
        for model in queryset
        if all(
            _matches(model.name if key == "name" else model.tags.get(key[5:]), op, value)
            for key, op, value in clauses
        )
    ]
    return _page(models, offset, size, "registered_models", shapes.registered_model)


def get_latest_versions(call: Call) -> dict:
    model = _model(call, call.required("name"))
    stages = call.get("stages") or []
    if stages and not any(str(s).lower() == "none" for s in stages):
        return {"model_versions": []}
    latest = shapes.latest_version(model)
    return {"model_versions": [shapes.model_version(latest)] if latest else []}


def set_registered_model_tag(call: Call) -> dict:
    model = _model(call, call.required("name"))
    key, value = call.required("key"), call.get("value", "")
    registered_models.update_model(model, call.user, tags={**model.tags, key: value})
    return {}


def delete_registered_model_tag(call: Call) -> dict:
    model = _model(call, call.required("name"))
    key = call.required("key")
    if key not in model.tags:
        raise MlflowError(
            RESOURCE_DOES_NOT_EXIST, f"Tag '{key}' of model '{model.name}' does not exist."
        )
    tags = {k: v for k, v in model.tags.items() if k != key}
    registered_models.update_model(model, call.user, tags=tags)
    return {}


# --- model versions ------------------------------------------------------------------


def get_model_version(call: Call) -> dict:
    return {"model_version": shapes.model_version(_version(call))}


def update_model_version(call: Call) -> dict:
    version = _version(call)
    if "description" in call.params:
        version = versions.update_version(
            version, call.user, {"description": call.get("description") or ""}
        )
    return {"model_version": shapes.model_version(version)}


def create_model_version(call: Call) -> dict:
    model = _model(call, call.required("name"))
    fields = {"description": call.get("description") or "", "tags": _tags_dict(call.get("tags"))}
    lineage = {"run_id": call.get("run_id"), "run_url": call.get("run_link")}
    fields["lineage"] = {key: str(value) for key, value in lineage.items() if value}
    version = artifacts.create_version_from_source(model, call.user, call.get("source"), fields)
    version = readiness.wait_settled(version)  # READY now rather than after a 3 s client poll
    return {"model_version": shapes.model_version(version, aliases=[])}


def delete_model_version(call: Call) -> dict:
    """Modelgate never deletes what a user stored: MLflow's delete archives the version."""
    version = _version(call)
    try:
        versions.archive_version(version, call.user)
    except Conflict as error:
        raise invalid(error.message) from None
    return {}


def transition_model_version_stage(call: Call) -> dict:
    """Stages are environments here: moving into one is a promotion request, reviewed."""
    version = _version(call)
    stage = call.required("stage")
    if stage.lower() == "archived":
        try:
            version = versions.archive_version(version, call.user)
        except Conflict as error:
            raise invalid(error.message) from None
    elif stage.lower() == "none":
        if shapes.current_stage(version) != "None":
            raise invalid(
                "A version leaves an environment only when another version is promoted to it."
            )
    else:
        environment = Environment.objects.filter(name__iexact=stage).first()
        if environment is None:
            names = ", ".join(Environment.objects.values_list("name", flat=True))
            raise invalid(f"Unknown stage '{stage}': use None, Archived or one of: {names}.")
        promotions.request_promotion(
            version,
            call.user,
            environment.name,
            comment="Requested with MLflow's transition_model_version_stage.",
        )
    return {"model_version": shapes.model_version(_version(call))}


def search_model_versions(call: Call) -> dict:
    clauses = parse_filter(call.get("filter"))
    _check_keys(clauses, {"name", "run_id", "version_number", "source_path"})
    size = _max_results(call, 10_000, MAX_VERSIONS_PAGE)
    offset = _offset(call)
    order = _order(
        call,
        {
            "name": "model__name",
            "version_number": "number",
            "creation_timestamp": "created_at",
            "last_updated_timestamp": "updated_at",
            "timestamp": "updated_at",
        },
        ["model__name", "-number"],
    )
    queryset = access.visible(
        call.user,
        ModelVersion.objects.select_related("model", "created_by")
        .prefetch_related("aliases")
        .order_by(*order),
    )
    for key, op, value in clauses:
        if key == "name" and op == "=":
            queryset = queryset.filter(model__name=value)
        elif key == "run_id" and op == "=":
            queryset = queryset.filter(lineage__run_id=value)
        elif key == "version_number" and op == "=" and value.isascii() and value.isdigit():
            queryset = queryset.filter(number=int(value))

    def field(version, key):
        if key == "name":
            return version.model.name
        if key == "run_id":
            return str((version.lineage or {}).get("run_id") or "")
        if key == "version_number":
            return str(version.number)
        if key == "source_path":
            return shapes.download_uri(version)
        return (version.tags or {}).get(key[5:])

    found = [v for v in queryset if all(_matches(field(v, k), op, val) for k, op, val in clauses)]
    return _page(found, offset, size, "model_versions", shapes.model_version)


def set_model_version_tag(call: Call) -> dict:
    version = _version(call)
    key, value = call.required("key"), call.get("value", "")
    versions.update_version(version, call.user, {"tags": {**version.tags, key: value}})
    return {}


def delete_model_version_tag(call: Call) -> dict:
    version = _version(call)
    key = call.required("key")
    if key not in version.tags:
        raise MlflowError(
            RESOURCE_DOES_NOT_EXIST, f"Tag '{key}' of version {version} does not exist."
        )
    tags = {k: v for k, v in version.tags.items() if k != key}
    versions.update_version(version, call.user, {"tags": tags})
    return {}


def get_model_version_download_uri(call: Call) -> dict:
    return {"artifact_uri": shapes.download_uri(_version(call))}


# --- aliases -------------------------------------------------------------------------


def _protected(name: str) -> MlflowError:
    return MlflowError(
        PERMISSION_DENIED,
        f"'{name}' is a protected environment: it moves only through a reviewed promotion "
        "(request one with the Modelgate CLI, API or UI).",
    )


def set_registered_model_alias(call: Call) -> dict:
    model = _model(call, call.required("name"))
    alias = call.required("alias")
    version = call.get("version")
    if isinstance(version, str) and version.isascii() and version.isdigit():
        version = int(version)
    if is_protected(alias):
        raise _protected(alias)
    try:
        aliases.set_alias(model, call.user, alias, version)
    except Conflict as error:
        if is_protected(alias):
            raise _protected(alias) from None
        raise invalid(error.message) from None
    return {}


def delete_registered_model_alias(call: Call) -> dict:
    model = _model(call, call.required("name"))
    alias = call.required("alias")
    if is_protected(alias):
        raise _protected(alias)
    aliases.delete_alias(model, call.user, alias)
    return {}


def get_model_version_by_alias(call: Call) -> dict:
    model = _model(call, call.required("name"))
    alias = call.required("alias")
    found = model.aliases.select_related("version__model", "version__created_by").filter(name=alias)
    found = found.first()
    if found is None:
        raise MlflowError(
            RESOURCE_DOES_NOT_EXIST, f"Alias '{alias}' of model '{model.name}' does not exist."
        )
    return {"model_version": shapes.model_version(found.version)}


def _auth_then_not_found(call: Call) -> dict:
    raise MlflowError(ENDPOINT_NOT_FOUND, f"{call.request.path} is not served by Modelgate.")


registered_model_create = endpoint({"POST": write(create_registered_model)})
registered_model_get = endpoint({"GET": read(get_registered_model)})
registered_model_rename = endpoint({"POST": write(rename_registered_model)})
registered_model_update = endpoint({"PATCH": write(update_registered_model)})
registered_model_delete = endpoint({"DELETE": write(delete_registered_model)})
registered_model_search = endpoint({"GET": read(search_registered_models)})
# MLflow's server takes POST too, but a read that needs no write scope is served on GET only:
# the client falls back to GET when POST answers ENDPOINT_NOT_FOUND.
registered_model_latest = endpoint({"GET": read(get_latest_versions)})
registered_model_set_tag = endpoint({"POST": write(set_registered_model_tag)})
registered_model_delete_tag = endpoint({"DELETE": write(delete_registered_model_tag)})
registered_model_alias = endpoint(
    {
        "POST": write(set_registered_model_alias),
        "DELETE": write(delete_registered_model_alias),
        "GET": read(get_model_version_by_alias),
    }
)
model_version_create = endpoint({"POST": write(create_model_version)})
model_version_transition = endpoint({"POST": write(transition_model_version_stage)})
model_version_get = endpoint({"GET": read(get_model_version)})
model_version_update = endpoint({"PATCH": write(update_model_version)})
model_version_delete = endpoint({"DELETE": write(delete_model_version)})
model_version_search = endpoint({"GET": read(search_model_versions)})
model_version_set_tag = endpoint({"POST": write(set_model_version_tag)})
model_version_delete_tag = endpoint({"DELETE": write(delete_model_version_tag)})
model_version_download_uri = endpoint({"GET": read(get_model_version_download_uri)})
# Anything else under the prefix: authenticated like the rest, then MLflow's "no such endpoint".
not_served = endpoint(
    {
        "GET": read(_auth_then_not_found),
        "POST": write(_auth_then_not_found),
        "PATCH": write(_auth_then_not_found),
        "PUT": write(_auth_then_not_found),
        "DELETE": write(_auth_then_not_found),
    }
)
