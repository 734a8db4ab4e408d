"""MLflow's tracking calls that registering needs: experiments, runs, logged models.

Paths, methods and fields follow mlflow/store/tracking/rest_store.py and service.proto;
the rules (who may read and write, limits, what feeds a version) are
`registry.services.tracking`'s. Searches are reads even when MLflow POSTs them, so a
read-only token may search.
"""

import re

from django.urls import path

from registry.errors import Conflict
from registry.models import Experiment, LoggedModel, Run
from registry.services import access, tracking

from .errors import RESOURCE_ALREADY_EXISTS, MlflowError, invalid
from .shapes import millis, tag_list
from .views import Call, _max_results, _offset, _page, endpoint, read, write

MAX_RUNS_PAGE = 50_000  # MLflow's SEARCH_MAX_RESULTS_THRESHOLD
MAX_EXPERIMENTS_PAGE = 50_000


# --- shapes ---------------------------------------------------------------------------------


def experiment_shape(experiment: Experiment) -> dict:
    return {
        "experiment_id": str(experiment.pk),
        "name": experiment.name,
        "artifact_location": tracking.experiment_uri(experiment),
        "lifecycle_stage": experiment.lifecycle_stage,
        "creation_time": millis(experiment.created_at),
        "last_update_time": millis(experiment.updated_at),
        "tags": tag_list({**experiment.tags, tracking.TEAM_TAG: experiment.team.name}),
    }


def _metric_shape(metric) -> dict:
    shape = {
        "key": metric.key,
        "value": metric.value,
        "timestamp": metric.timestamp,
        "step": metric.step,
        "run_id": metric.run_id,
    }
    for field in ("model_id", "dataset_name", "dataset_digest"):
        if getattr(metric, field):
            shape[field] = getattr(metric, field)
    return shape


def run_info(run: Run) -> dict:
    info = {
        "run_id": run.pk,
        "run_uuid": run.pk,
        "run_name": run.name,
        "experiment_id": str(run.experiment_id),
        "user_id": run.created_by.get_username() if run.created_by else "",
        "status": run.status,
        "start_time": run.start_time,
        "artifact_uri": f"mlflow-artifacts:/{tracking.run_artifact_path(run)}",
        "lifecycle_stage": run.lifecycle_stage,
    }
    if run.end_time is not None:
        info["end_time"] = run.end_time
    return info


def run_shape(run: Run, latest: dict | None = None) -> dict:
    if latest is None:
        latest = tracking.latest_metrics([run.pk])[run.pk]
    datasets = [
        {
            "tags": tag_list(d.tags),
            "dataset": {
                "name": d.name,
                "digest": d.digest,
                "source_type": d.source_type,
                "source": d.source,
                "schema": d.schema,
                "profile": d.profile,
            },
        }
        for d in run.datasets.all()
    ]
    return {
        "info": run_info(run),
        "data": {
            "metrics": [_metric_shape(m) for _, m in sorted(latest.items())],
            "params": tag_list(run.params),
            "tags": tag_list(run.tags),
        },
        "inputs": {"dataset_inputs": datasets, "model_inputs": run.model_inputs},
        "outputs": {"model_outputs": run.model_outputs},
    }


def logged_model_shape(model: LoggedModel) -> dict:
    info = {
        "model_id": model.pk,
        "experiment_id": str(model.experiment_id),
        "name": model.name,
        "creation_timestamp_ms": millis(model.created_at),
        "last_updated_timestamp_ms": millis(model.updated_at),
        "artifact_uri": f"mlflow-artifacts:/{tracking.logged_model_artifact_path(model)}",
        "status": model.status,
        "tags": tag_list(model.tags),
    }
    if model.created_by_id is not None:
        info["creator_id"] = model.created_by_id
    if model.model_type:
        info["model_type"] = model.model_type
    if model.source_run_id:
        info["source_run_id"] = model.source_run_id
    if model.status_message:
        info["status_message"] = model.status_message
    metrics = [_metric_shape(m) for m in tracking.logged_model_metrics(model)]
    return {"info": info, "data": {"params": tag_list(model.params), "metrics": metrics}}


# --- search filters -------------------------------------------------------------------------

_IDENT = r"`[^`]+`|\"[^\"]+\"|[\w.\-]+"
_CLAUSE = re.compile(
    rf"""^\s*(?:(?P<kind>metrics?|params?|parameters?|tags?|attributes?|attr|run|datasets?)\.)?
    (?P<key>{_IDENT})\s*
    (?P<op>>=|<=|!=|=|>|<|NOT\s+IN|IN|NOT\s+LIKE|LIKE|ILIKE)\s*
    (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\([^)]*\))\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
}
RUN_ATTRIBUTES = {
    "run_id": lambda r: r.pk,
    "run_name": lambda r: r.name,
    "status": lambda r: r.status,
    "user_id": lambda r: r.created_by.get_username() if r.created_by else "",
    "start_time": lambda r: r.start_time,
    "end_time": lambda r: r.end_time,
    "artifact_uri": lambda r: f"mlflow-artifacts:/{tracking.run_artifact_path(r)}",
    "lifecycle_stage": lambda r: r.lifecycle_stage,
}
NUMERIC_ATTRIBUTES = {"start_time", "end_time"}


def _unquote(text: str) -> str:
    if text[:1] in "'\"`":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _literal(text: str):
    text = text.strip()
    if text.startswith("("):
        items = re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", text)
        return [_unquote(item) for item in items]
    if text[:1] in "'\"":
        return _unquote(text)
    return float(text)


def parse_run_filter(
    text, attributes=RUN_ATTRIBUTES, numeric_attributes=NUMERIC_ATTRIBUTES
) -> list[tuple[str, str, str, object]]:
    """MLflow's search syntax as [(kind, key, op, value)]: metrics, params, tags and the
    runs' attributes with =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, joined by AND.
    Anything else (OR, datasets, parentheses) is refused with a message."""
    if text in (None, ""):
        return []
    if not isinstance(text, str):
        raise invalid("'filter' must be a string.")
    clauses = []
    for part in _split_and(text):
        match = _CLAUSE.match(part)
        if not match:
            raise invalid(
                f"Unsupported filter clause {part.strip()!r}: Modelgate answers metrics.<key>, "
                "params.<key>, tags.<key> and attributes.<name> compared with = != < <= > >= "
                "LIKE ILIKE IN, joined by AND."
            )
        kind = KINDS.get((match["kind"] or "attributes").lower())
        if kind is None:
            raise invalid(f"Filtering on {match['kind']!r} is not supported.")
        key = _unquote(match["key"])
        op = " ".join(match["op"].upper().split())
        value = _literal(match["value"])
        if kind == "attributes" and key not in attributes:
            raise invalid(f"Unknown attribute {key!r}: use one of {', '.join(sorted(attributes))}.")
        numeric = kind == "metrics" or (kind == "attributes" and key in numeric_attributes)
        if numeric != isinstance(value, float) and op not in ("IN", "NOT IN"):
            what = "a number" if numeric else "a quoted string"
            raise invalid(f"{kind}.{key} must be compared with {what}.")
        if op in ("IN", "NOT IN") and not isinstance(value, list):
            raise invalid(f"{op} takes a parenthesised list of quoted strings.")
        if numeric and op in ("LIKE", "ILIKE", "NOT LIKE"):
            raise invalid(f"{op} compares strings, not {kind}.{key}.")
        clauses.append((kind, key, op, value))
    return clauses


def _split_and(text: str) -> list[str]:
    """Split on AND outside quotes; OR is refused (MLflow's own search has no OR either)."""
    parts, current, quote = [], "", None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current += ch
            if ch == "\\" and i + 1 < len(text):
                current += text[i + 1]
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            current += ch
        elif re.match(r"\s+AND\s+", text[i:], re.IGNORECASE) and current.strip():
            parts.append(current)
            current = ""
            i += len(re.match(r"\s+AND\s+", text[i:], re.IGNORECASE).group(0))
            continue
        else:
            current += ch
        i += 1
    if quote:
        raise invalid("The filter has an unclosed quote.")
    parts.append(current)
    return parts


def _compare(actual, op: str, expected) -> bool:
    if op == "IN":
        return actual is not None and actual in expected
    if op == "NOT IN":
        return actual is None or actual not in expected
    if actual is None:
        return op == "!="
    if op in ("LIKE", "ILIKE", "NOT LIKE"):
        from .views import _like

        found = _like(expected, str(actual), ignore_case=op == "ILIKE")
        return not found if op == "NOT LIKE" else found
    if isinstance(expected, float):
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            return False
    return {
        "=": actual == expected,
        "!=": actual != expected,
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
    }[op]


def _run_value(run: Run, latest: dict, kind: str, key: str):
    if kind == "metrics":
        metric = latest.get(key)
        return metric.value if metric else None
    if kind == "params":
        return run.params.get(key)
    if kind == "tags":
        return run.tags.get(key)
    return RUN_ATTRIBUTES[key](run)


def _run_order(call: Call) -> list[tuple[str, str, bool]]:
    order = call.get("order_by") or []
    if isinstance(order, str):
        order = [order]
    if not isinstance(order, list):
        raise invalid("'order_by' must be a list.")
    fields = []
    for item in order:
        match = re.fullmatch(
            rf"\s*(?:(metrics?|params?|tags?|attributes?|attr)\.)?({_IDENT})\s*(ASC|DESC)?\s*",
            str(item),
            re.IGNORECASE,
        )
        if not match:
            raise invalid(f"Unsupported order_by clause: {item!r}.")
        kind = KINDS[(match[1] or "attributes").lower()]
        key = _unquote(match[2])
        if kind == "attributes" and key not in RUN_ATTRIBUTES:
            raise invalid(f"Unsupported order_by clause: {item!r}.")
        fields.append((kind, key, (match[3] or "ASC").upper() == "DESC"))
    return fields


def _view_type(value) -> set[str]:
    value = value or "ACTIVE_ONLY"
    stages = {"ACTIVE_ONLY": {"active"}, "DELETED_ONLY": {"deleted"}, "ALL": {"active", "deleted"}}
    if value not in stages:
        raise invalid(f"Unknown view type {value!r}: use ACTIVE_ONLY, DELETED_ONLY or ALL.")
    return stages[value]


# --- experiments ----------------------------------------------------------------------------


def create_experiment(call: Call) -> dict:
    tags = call.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise invalid("'tags' must be a list of {key, value}.")
    try:
        experiment = tracking.create_experiment(
            call.user,
            call.get("name"),
            {t.get("key"): t.get("value", "") for t in tags},
            call.get("artifact_location"),
        )
    except Conflict as error:
        raise MlflowError(RESOURCE_ALREADY_EXISTS, error.message) from None
    return {"experiment_id": str(experiment.pk)}


def get_experiment(call: Call) -> dict:
    found = tracking.get_experiment(call.user, call.required("experiment_id"))
    return {"experiment": experiment_shape(found)}


def get_experiment_by_name(call: Call) -> dict:
    found = tracking.get_experiment_by_name(call.user, call.required("experiment_name"))
    return {"experiment": experiment_shape(found)}


_EXPERIMENT_FILTER = re.compile(
    r"""^\s*(?:attributes?\.)?(?P<key>name|tags?\.(?:`[^`]+`|"[^"]+"|[\w.\-]+))\s*
    (?P<op>!=|=|LIKE|ILIKE)\s*(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def search_experiments(call: Call) -> dict:
    clauses = []
    text = call.get("filter")
    if text:
        for part in _split_and(str(text)):
            match = _EXPERIMENT_FILTER.match(part)
            if not match:
                raise invalid(
                    f"Unsupported filter clause {part.strip()!r}: Modelgate answers name and "
                    "tags.<key> with = != LIKE ILIKE, joined by AND."
                )
            key = match["key"]
            key = "name" if key.lower() == "name" else "tags." + _unquote(key.split(".", 1)[1])
            clauses.append((key, " ".join(match["op"].upper().split()), _unquote(match["value"])))
    stages = _view_type(call.get("view_type"))
    size = _max_results(call, 1000, MAX_EXPERIMENTS_PAGE)
    offset = _offset(call)
    experiments = tracking.visible_experiments(call.user).filter(lifecycle_stage__in=stages)
    ordering = {"name": "name", "experiment_id": "id", "creation_time": "created_at"}
    ordering["last_update_time"] = "updated_at"
    order = []
    for item in call.get("order_by") or []:
        parts = str(item).split()
        key = parts[0].removeprefix("attributes.") if parts else ""
        if key not in ordering or len(parts) > 2 or parts[1:] not in ([], ["ASC"], ["DESC"]):
            raise invalid(f"Unsupported order_by clause: {item!r}.")
        order.append(("-" if parts[1:] == ["DESC"] else "") + ordering[key])
    experiments = experiments.order_by(*(order or ["-created_at"]), "-id")

    def value(experiment, key):
        if key == "name":
            return experiment.name
        tags = {**experiment.tags, tracking.TEAM_TAG: experiment.team.name}
        return tags.get(key[5:])

    found = [e for e in experiments if all(_compare(value(e, k), op, v) for k, op, v in clauses)]
    return _page(found, offset, size, "experiments", experiment_shape)


def set_experiment_tag(call: Call) -> dict:
    experiment = tracking.get_experiment(call.user, call.required("experiment_id"))
    tracking.set_experiment_tag(call.user, experiment, call.required("key"), call.get("value"))
    return {}


# --- runs -----------------------------------------------------------------------------------


def _run_id(call: Call) -> str:
    run_id = call.get("run_id") or call.get("run_uuid")
    if not run_id:
        raise invalid("Missing value for required parameter 'run_id'.")
    return run_id


def _run(call: Call, level: str = access.READ) -> Run:
    return tracking.get_run(call.user, _run_id(call), level)


def create_run(call: Call) -> dict:
    run = tracking.create_run(
        call.user,
        call.get("experiment_id"),
        name=call.get("run_name"),
        start_time=call.get("start_time"),
        tags=call.get("tags"),
    )
    return {"run": run_shape(run, latest={})}


def get_run(call: Call) -> dict:
    return {"run": run_shape(_run(call))}


def update_run(call: Call) -> dict:
    run = tracking.update_run(
        call.user,
        _run(call, access.WRITE),
        status=call.get("status"),
        end_time=call.get("end_time"),
        name=call.get("run_name"),
    )
    return {"run_info": run_info(run)}


def log_batch(call: Call) -> dict:
    run = _run(call, access.WRITE)
    tracking.log_batch(call.user, run, call.get("metrics"), call.get("params"), call.get("tags"))
    return {}


def log_metric(call: Call) -> dict:
    metric = {k: call.get(k) for k in ("key", "value", "timestamp", "step", "model_id")}
    metric |= {k: call.get(k) for k in ("dataset_name", "dataset_digest")}
    if metric["value"] is None:
        raise invalid("Missing value for required parameter 'value'.")
    tracking.log_batch(call.user, _run(call, access.WRITE), metrics=[metric])
    return {}


def log_param(call: Call) -> dict:
    param = {"key": call.get("key"), "value": call.get("value")}
    tracking.log_batch(call.user, _run(call, access.WRITE), params=[param])
    return {}


def set_tag(call: Call) -> dict:
    tag = {"key": call.get("key"), "value": call.get("value")}
    tracking.log_batch(call.user, _run(call, access.WRITE), tags=[tag])
    return {}


def delete_tag(call: Call) -> dict:
    tracking.delete_run_tag(call.user, _run(call, access.WRITE), call.required("key"))
    return {}


def log_inputs(call: Call) -> dict:
    run = _run(call, access.WRITE)
    tracking.log_inputs(call.user, run, call.get("datasets"), call.get("models"))
    return {}


def log_outputs(call: Call) -> dict:
    tracking.log_outputs(call.user, _run(call, access.WRITE), call.get("models"))
    return {}


def log_model(call: Call) -> dict:
    """MLflow 2's record of a model logged in a run (`mlflow.log-model.history`): accepted
    and not kept, the logged model or the run's artifacts hold what matters."""
    _run(call, access.WRITE)
    return {}


def get_metric_history(call: Call) -> dict:
    key = call.required("metric_key")
    history = tracking.metric_history(call.user, _run(call), key)
    return {"metrics": [_metric_shape(m) for m in history]}


def search_runs(call: Call) -> dict:
    ids = call.get("experiment_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids:
        raise invalid("'experiment_ids' must name at least one experiment.")
    clauses = parse_run_filter(call.get("filter"))
    order = _run_order(call)
    stages = _view_type(call.get("run_view_type"))
    size = _max_results(call, 1000, MAX_RUNS_PAGE)
    offset = _offset(call)
    runs = list(
        tracking.visible_runs(call.user, ids)
        .filter(lifecycle_stage__in=stages)
        .prefetch_related("datasets")
        .order_by("-start_time", "id")
    )
    latest = tracking.latest_metrics([r.pk for r in runs])
    runs = [
        r
        for r in runs
        if all(_compare(_run_value(r, latest[r.pk], k, key), op, v) for k, key, op, v in clauses)
    ]
    for kind, key, descending in reversed(order):
        # MLflow puts runs without the value last, whichever the direction.
        present = [r for r in runs if _run_value(r, latest[r.pk], kind, key) is not None]
        absent = [r for r in runs if _run_value(r, latest[r.pk], kind, key) is None]
        present.sort(key=lambda r: _run_value(r, latest[r.pk], kind, key), reverse=descending)
        runs = present + absent
    return _page(runs, offset, size, "runs", lambda r: run_shape(r, latest[r.pk]))


# --- logged models --------------------------------------------------------------------------


def create_logged_model(call: Call) -> dict:
    model = tracking.create_logged_model(
        call.user,
        call.get("experiment_id"),
        name=call.get("name"),
        model_type=call.get("model_type"),
        source_run_id=call.get("source_run_id"),
        params=call.get("params"),
        tags=call.get("tags"),
    )
    return {"model": logged_model_shape(model)}


def get_logged_model(call: Call, model_id: str) -> dict:
    allow_deleted = str(call.get("allow_deleted", "")).lower() == "true"
    model = tracking.get_logged_model(call.user, model_id, allow_deleted=allow_deleted)
    return {"model": logged_model_shape(model)}


def finalize_logged_model(call: Call, model_id: str) -> dict:
    model = tracking.get_logged_model(call.user, model_id, access.WRITE)
    model = tracking.finalize_logged_model(call.user, model, call.get("status"))
    return {"model": logged_model_shape(model)}


def delete_logged_model(call: Call, model_id: str) -> dict:
    model = tracking.get_logged_model(call.user, model_id, access.WRITE)
    tracking.delete_logged_model(call.user, model)
    return {}


def set_logged_model_tags(call: Call, model_id: str) -> dict:
    model = tracking.get_logged_model(call.user, model_id, access.WRITE)
    tracking.set_logged_model_tags(call.user, model, call.get("tags"))
    return {}


def delete_logged_model_tag(call: Call, model_id: str, tag_key: str) -> dict:
    model = tracking.get_logged_model(call.user, model_id, access.WRITE)
    tracking.delete_logged_model_tag(call.user, model, tag_key)
    return {}


def log_logged_model_params(call: Call, model_id: str) -> dict:
    model = tracking.get_logged_model(call.user, model_id, access.WRITE)
    tracking.log_logged_model_params(call.user, model, call.get("params"))
    return {}


LOGGED_MODEL_ATTRIBUTES = {
    "name": lambda m: m.name,
    "model_id": lambda m: m.pk,
    "source_run_id": lambda m: m.source_run_id or "",
    "status": lambda m: m.status,
    "model_type": lambda m: m.model_type,
    "creation_timestamp": lambda m: float(millis(m.created_at)),
    "creation_time": lambda m: float(millis(m.created_at)),
    "last_updated_timestamp": lambda m: float(millis(m.updated_at)),
}


def search_logged_models(call: Call) -> dict:
    ids = call.get("experiment_ids")
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids:
        raise invalid("'experiment_ids' must name at least one experiment.")
    if call.get("datasets"):
        raise invalid("Searching logged models by dataset is not supported.")
    numeric = {k for k in LOGGED_MODEL_ATTRIBUTES if "time" in k}
    clauses = parse_run_filter(call.get("filter"), LOGGED_MODEL_ATTRIBUTES, numeric)
    for kind, key, _, _ in clauses:
        if kind == "metrics":
            raise invalid(
                f"Filtering logged models on {kind}.{key} is not supported: use name, "
                "model_id, source_run_id, status, model_type, params.<key> or tags.<key>."
            )
    size = _max_results(call, 100, MAX_RUNS_PAGE)
    offset = _offset(call)
    order = call.get("order_by") or []
    if not isinstance(order, list):
        raise invalid("'order_by' must be a list.")
    models = list(tracking.visible_logged_models(call.user, ids).order_by("-created_at", "id"))

    def value(model, kind, key):
        if kind == "params":
            return model.params.get(key)
        if kind == "tags":
            return model.tags.get(key)
        return LOGGED_MODEL_ATTRIBUTES[key](model)

    models = [
        m for m in models if all(_compare(value(m, k, key), op, v) for k, key, op, v in clauses)
    ]
    for item in reversed(order):
        field = item.get("field_name") if isinstance(item, dict) else None
        if field not in LOGGED_MODEL_ATTRIBUTES or item.get("dataset_name"):
            raise invalid(f"Unsupported order_by: {item!r}.")
        models.sort(key=LOGGED_MODEL_ATTRIBUTES[field], reverse=not item.get("ascending", True))
    return _page(models, offset, size, "models", logged_model_shape)


# --- routes ---------------------------------------------------------------------------------


urlpatterns = [
    path("experiments/create", endpoint({"POST": write(create_experiment)})),
    path("experiments/get", endpoint({"GET": read(get_experiment)})),
    path("experiments/get-by-name", endpoint({"GET": read(get_experiment_by_name)})),
    path(
        "experiments/search",
        endpoint({"POST": read(search_experiments), "GET": read(search_experiments)}),
    ),
    path("experiments/set-experiment-tag", endpoint({"POST": write(set_experiment_tag)})),
    path("runs/create", endpoint({"POST": write(create_run)})),
    path("runs/update", endpoint({"POST": write(update_run)})),
    path("runs/get", endpoint({"GET": read(get_run)})),
    path("runs/search", endpoint({"POST": read(search_runs)})),
    path("runs/log-batch", endpoint({"POST": write(log_batch)})),
    path("runs/log-metric", endpoint({"POST": write(log_metric)})),
    path("runs/log-parameter", endpoint({"POST": write(log_param)})),
    path("runs/set-tag", endpoint({"POST": write(set_tag)})),
    path("runs/delete-tag", endpoint({"POST": write(delete_tag)})),
    path("runs/log-inputs", endpoint({"POST": write(log_inputs)})),
    path("runs/outputs", endpoint({"POST": write(log_outputs)})),
    path("runs/log-model", endpoint({"POST": write(log_model)})),
    path("metrics/get-history", endpoint({"GET": read(get_metric_history)})),
    path("logged-models", endpoint({"POST": write(create_logged_model)})),
    path("logged-models/search", endpoint({"POST": read(search_logged_models)})),
    path(
        "logged-models/<str:model_id>",
        endpoint(
            {
                "GET": read(get_logged_model),
                "PATCH": write(finalize_logged_model),
                "DELETE": write(delete_logged_model),
            }
        ),
    ),
    path(
        "logged-models/<str:model_id>/tags",
        endpoint({"PATCH": write(set_logged_model_tags)}),
    ),
    path(
        "logged-models/<str:model_id>/tags/<path:tag_key>",
        endpoint({"DELETE": write(delete_logged_model_tag)}),
    ),
    path(
        "logged-models/<str:model_id>/params",
        endpoint({"POST": write(log_logged_model_params)}),
    ),
]
