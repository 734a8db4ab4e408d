"""MLflow tracking: experiments, runs and logged models, kept to register versions from.

An experiment belongs to a team: the team's readers read it and its runs and logged
models, its contributors write them; one the caller may not read does not exist for them
(the same NotFound as a missing one). Artifacts are `ArtifactFile`s under
`experiments/<experiment>/<run>/artifacts/...` and `experiments/<experiment>/models/
<model id>/artifacts/...`, written only by the run's (logged model's) creator, so a version
made from them takes nobody else's files.

Metric values are finite: the versions they feed and the gates that read them need
numbers (MLflow itself would take NaN).
"""

import math
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from registry.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from registry.models import (
    DEFAULT_TEAM,
    Experiment,
    LoggedModel,
    RegisteredModel,
    Run,
    RunDataset,
    RunMetric,
    Team,
)

from . import access, gitmirror, validation
from .events import record_event
from .locking import for_update
from .teams import get_team

TEAM_TAG = "modelgate.team"
ROOT = "experiments"  # the artifact area's folder of runs and logged models
DEFAULT_ID = 0
# MLflow's own limits (mlflow/utils/validation.py).
MAX_METRICS, MAX_PARAMS_TAGS, MAX_ENTITIES = 1000, 100, 1000
MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 8000
MAX_NAME = 500
_KEY = re.compile(r"[\w\-. /:]+")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")


def now_ms() -> int:
    return int(timezone.now().timestamp() * 1000)


# --- URIs ---------------------------------------------------------------------------------


def experiment_uri(experiment: Experiment) -> str:
    return f"mlflow-artifacts:/{ROOT}/{experiment.pk}"


def run_artifact_path(run: Run) -> str:
    return f"{ROOT}/{run.experiment_id}/{run.pk}/artifacts"


def logged_model_artifact_path(model: LoggedModel) -> str:
    return f"{ROOT}/{model.experiment_id}/models/{model.pk}/artifacts"


# --- access -------------------------------------------------------------------------------


def _experiment_missing(ref) -> NotFound:
    return NotFound(f"Experiment '{ref}' does not exist.", {"experiment": str(ref)})


def _run_missing(run_id) -> NotFound:
    return NotFound(f"Run '{run_id}' does not exist.", {"run": str(run_id)})


def _logged_model_missing(model_id) -> NotFound:
    return NotFound(f"Logged model '{model_id}' does not exist.", {"model_id": str(model_id)})


def _require(user, experiment: Experiment, level: str, missing: NotFound) -> None:
    held = access.team_level(user, experiment.team_id)
    if held is None:
        raise missing
    if access.RANK[held] < access.RANK[level]:
        raise PermissionDenied(
            f"You may not write to experiment '{experiment.name}': your role in its team "
            "only reads.",
            {"experiment": str(experiment.pk)},
        )


def default_experiment() -> Experiment:
    """MLflow's "Default" (id 0), where runs go without `set_experiment`: the default team's."""
    found = Experiment.objects.filter(pk=DEFAULT_ID).first()
    if found is None:
        team = Team.objects.get_or_create(name=DEFAULT_TEAM)[0]
        try:
            with transaction.atomic():
                found = Experiment.objects.create(pk=DEFAULT_ID, name="Default", team=team)
        except IntegrityError:  # made meanwhile by another request
            found = Experiment.objects.get(pk=DEFAULT_ID)
    return found


def get_experiment(user, experiment_id: Any, level: str = access.READ) -> Experiment:
    ref = str(experiment_id) if isinstance(experiment_id, str | int) else ""
    if not (ref.isascii() and ref.isdigit()) or len(ref) > 18:
        raise _experiment_missing(experiment_id)
    if int(ref) == DEFAULT_ID:
        found = default_experiment()
    else:
        found = Experiment.objects.filter(pk=int(ref)).first()
    if found is None:
        raise _experiment_missing(ref)
    missing = _experiment_missing(ref)
    if found.pk == DEFAULT_ID:  # everyone's MLflow has one: say why this one is not yours
        missing = NotFound(
            f"Experiment '0' (MLflow's Default) belongs to team '{found.team.name}', which "
            "you are not in: choose an experiment of your team with mlflow.set_experiment().",
            {"experiment": ref},
        )
    _require(user, found, level, missing)
    return found


def get_experiment_by_name(user, name: Any) -> Experiment:
    if name == "Default":
        default_experiment()
    found = Experiment.objects.filter(name=name).first() if isinstance(name, str) else None
    if found is None:
        raise _experiment_missing(name)
    _require(user, found, access.READ, _experiment_missing(name))
    return found


def visible_experiments(user, level: str = access.READ):
    default_experiment()
    teams = access.visible_team_ids(user, level)
    experiments = Experiment.objects.select_related("team")
    return experiments if teams is None else experiments.filter(team_id__in=teams)


def _team_for_experiment(user, name: str | None) -> Team:
    """The team named by the `modelgate.team` tag, else the caller's one writable team."""
    writable = [
        pk
        for pk, role in access.team_roles(user).items()
        if access.ROLE_LEVEL[role] in (access.WRITE, access.MANAGE)
    ]
    if name is not None:
        team = get_team(validation.team_name(name))
        if not access.is_admin(user) and team.pk not in writable:
            raise PermissionDenied(f"You may not create experiments in team '{team.name}'.")
        return team
    if len(writable) == 1:
        return Team.objects.get(pk=writable[0])
    if not writable and not access.is_admin(user):
        raise PermissionDenied("You may not create experiments: no team of yours lets you.")
    raise InvalidInput(
        f"Say which team owns the experiment with the tag '{TEAM_TAG}' (you write in "
        "several teams).",
        {"tag": TEAM_TAG},
    )


def create_experiment(user, name: Any, tags: dict, artifact_location: Any = None) -> Experiment:
    if access.WRITE not in access.role_scopes(user):
        raise PermissionDenied("Your role does not allow creating experiments.")
    name = _name(name, "name")
    if artifact_location:
        raise InvalidInput(
            "Modelgate keeps artifacts in its own store: leave 'artifact_location' empty.",
            {"artifact_location": str(artifact_location)[:200]},
        )
    tags = _tags(tags, MAX_TAG_VALUE)
    team = _team_for_experiment(user, tags.pop(TEAM_TAG, None))
    if name == "Default":
        default_experiment()
    try:
        with transaction.atomic():
            existing = Experiment.objects.filter(name=name).first()
            if existing is not None:
                if access.team_level(user, existing.team_id) is None:
                    raise PermissionDenied(f"You may not create an experiment named '{name}'.")
                raise Conflict(f"Experiment '{name}' already exists.", {"experiment": name})
            experiment = Experiment.objects.create(name=name, team=team, tags=tags, created_by=user)
            record_event(
                "experiment.created",
                user,
                data={"experiment": str(experiment.pk), "name": name, "team": team.name},
            )
    except IntegrityError:
        raise Conflict(f"Experiment '{name}' already exists.", {"experiment": name}) from None
    return experiment


def set_experiment_tag(user, experiment: Experiment, key: Any, value: Any) -> None:
    _require(user, experiment, access.WRITE, _experiment_missing(experiment.pk))
    tags = _tags({key: value}, MAX_TAG_VALUE)
    with transaction.atomic():
        locked = for_update(Experiment).get(pk=experiment.pk)
        locked.tags = {**locked.tags, **tags}
        locked.save(update_fields=["tags", "updated_at"])


# --- runs ---------------------------------------------------------------------------------


def get_run(user, run_id: Any, level: str = access.READ) -> Run:
    found = None
    if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        found = Run.objects.select_related("experiment", "created_by").filter(pk=run_id).first()
    if found is None:
        raise _run_missing(run_id)
    _require(user, found.experiment, level, _run_missing(run_id))
    return found


def create_run(user, experiment_id: Any, *, name: Any, start_time: Any, tags: Any) -> Run:
    experiment = get_experiment(user, experiment_id or DEFAULT_ID, access.WRITE)
    if experiment.lifecycle_stage != Experiment.Stage.ACTIVE:
        raise Conflict(f"Experiment '{experiment.name}' is deleted.")
    tags = _tags(tags, MAX_TAG_VALUE)
    run_id = uuid.uuid4().hex
    name = _name(name or tags.get("mlflow.runName") or f"run-{run_id[:8]}", "run_name", 250)
    tags["mlflow.runName"] = name
    tags["mlflow.user"] = user.get_username()  # who is calling, whatever the client says
    with transaction.atomic():
        run = Run.objects.create(
            id=run_id,
            experiment=experiment,
            name=name,
            start_time=_millis(start_time, "start_time") or now_ms(),
            tags=tags,
            created_by=user,
        )
    run.experiment = experiment
    return run


def update_run(user, run: Run, *, status: Any, end_time: Any, name: Any) -> Run:
    _require(user, run.experiment, access.WRITE, _run_missing(run.pk))
    with transaction.atomic():
        locked = for_update(Run).get(pk=run.pk)
        if status not in (None, ""):
            locked.status = validation.choice(status, "status", Run.Status.values)
        if end_time not in (None, ""):
            locked.end_time = _millis(end_time, "end_time")
        if name not in (None, ""):
            locked.name = _name(name, "run_name", 250)
            locked.tags = {**locked.tags, "mlflow.runName": locked.name}
        locked.save()
    locked.experiment = run.experiment
    return locked


def log_batch(user, run: Run, metrics: Any = None, params: Any = None, tags: Any = None) -> None:
    """Metrics, params and tags of one run in one transaction: all of them or nothing.
    A param, once logged, keeps its value (MLflow's rule)."""
    _require(user, run.experiment, access.WRITE, _run_missing(run.pk))
    metrics, params, tags = _list(metrics, "metrics"), _list(params, "params"), _list(tags, "tags")
    if len(metrics) > MAX_METRICS or len(params) > MAX_PARAMS_TAGS or len(tags) > MAX_PARAMS_TAGS:
        raise InvalidInput(
            f"A batch holds at most {MAX_METRICS} metrics, {MAX_PARAMS_TAGS} params and "
            f"{MAX_PARAMS_TAGS} tags; this one has {len(metrics)}, {len(params)} and "
            f"{len(tags)}.",
        )
    if len(metrics) + len(params) + len(tags) > MAX_ENTITIES:
        raise InvalidInput(f"A batch holds at most {MAX_ENTITIES} metrics, params and tags.")
    rows = [_metric(run, item, index) for index, item in enumerate(metrics)]
    new_params = _pairs(params, "params", MAX_PARAM_VALUE)
    new_tags = _pairs(tags, "tags", MAX_TAG_VALUE)
    with transaction.atomic():
        locked = for_update(Run).get(pk=run.pk)
        if locked.lifecycle_stage != "active":
            raise Conflict(f"Run '{run.pk}' is deleted.")
        if new_params:
            for key, value in new_params.items():
                if key in locked.params and locked.params[key] != value:
                    raise InvalidInput(
                        f"Param '{key}' of run '{run.pk}' is already '{locked.params[key][:100]}'"
                        f"; a param cannot be changed (tried '{value[:100]}').",
                        {"key": key},
                    )
            locked.params = {**locked.params, **new_params}
        if new_tags:
            locked.tags = {**locked.tags, **new_tags}
            if "mlflow.runName" in new_tags:
                locked.name = new_tags["mlflow.runName"][:250]
        if new_params or new_tags:
            locked.save(update_fields=["params", "tags", "name"])
        RunMetric.objects.bulk_create(rows)


def delete_run_tag(user, run: Run, key: Any) -> None:
    _require(user, run.experiment, access.WRITE, _run_missing(run.pk))
    with transaction.atomic():
        locked = for_update(Run).get(pk=run.pk)
        if key not in locked.tags:
            raise NotFound(f"Tag '{key}' of run '{run.pk}' does not exist.", {"key": str(key)})
        locked.tags = {k: v for k, v in locked.tags.items() if k != key}
        locked.save(update_fields=["tags"])


def log_inputs(user, run: Run, datasets: Any, models: Any) -> None:
    """Datasets are kept as MLflow describes them (name, digest, source, schema, profile,
    tags): never their rows. Logging the same dataset again changes nothing."""
    _require(user, run.experiment, access.WRITE, _run_missing(run.pk))
    datasets, models = _list(datasets, "datasets"), _list(models, "models")
    if len(datasets) > MAX_ENTITIES:
        raise InvalidInput(f"At most {MAX_ENTITIES} datasets per call.")
    rows = [_dataset(run, item, index) for index, item in enumerate(datasets)]
    model_ids = [_model_ref(item, f"models[{i}]") for i, item in enumerate(models)]
    with transaction.atomic():
        locked = for_update(Run).get(pk=run.pk)
        RunDataset.objects.bulk_create(rows, ignore_conflicts=True)
        if model_ids:
            known = {m["model_id"] for m in locked.model_inputs}
            locked.model_inputs += [{"model_id": m} for m in model_ids if m not in known]
            locked.save(update_fields=["model_inputs"])


def log_outputs(user, run: Run, models: Any) -> None:
    _require(user, run.experiment, access.WRITE, _run_missing(run.pk))
    outputs = []
    for index, item in enumerate(_list(models, "models")):
        step = item.get("step", 0) if isinstance(item, dict) else 0
        outputs.append(
            {"model_id": _model_ref(item, f"models[{index}]"), "step": _int(step, "step")}
        )
    with transaction.atomic():
        locked = for_update(Run).get(pk=run.pk)
        known = {(o["model_id"], o["step"]) for o in locked.model_outputs}
        locked.model_outputs += [o for o in outputs if (o["model_id"], o["step"]) not in known]
        locked.save(update_fields=["model_outputs"])


def latest_metrics(run_ids: list[str]) -> dict[str, dict[str, RunMetric]]:
    """{run id: {key: latest value}}: MLflow's latest is the highest step, then the latest
    timestamp, then the highest value (the rows' ordering)."""
    latest: dict[str, dict[str, RunMetric]] = {run_id: {} for run_id in run_ids}
    rows = RunMetric.objects.filter(run_id__in=run_ids)
    if connection.vendor == "postgresql":  # one row per (run, key) instead of every value
        rows = rows.order_by("run_id", "key", "-step", "-timestamp", "-value")
        for metric in rows.distinct("run_id", "key"):
            latest[metric.run_id][metric.key] = metric
        return latest
    for metric in rows.order_by("run_id", "key", "step", "timestamp", "value"):
        latest[metric.run_id][metric.key] = metric
    return latest


def metric_history(user, run: Run, key: Any) -> list[RunMetric]:
    _require(user, run.experiment, access.READ, _run_missing(run.pk))
    return list(run.metric_values.filter(key=key).order_by("step", "timestamp", "id"))


def visible_runs(user, experiment_ids: list[Any]):
    experiments = [get_experiment(user, ref) for ref in experiment_ids]
    return Run.objects.filter(experiment__in=experiments).select_related("experiment", "created_by")


# --- logged models --------------------------------------------------------------------------


def get_logged_model(
    user, model_id: Any, level: str = access.READ, allow_deleted: bool = False
) -> LoggedModel:
    found = None
    if isinstance(model_id, str) and _MODEL_ID.fullmatch(model_id):
        found = LoggedModel.objects.select_related("experiment", "created_by").filter(pk=model_id)
        found = found.first()
    if found is None or (found.deleted and not allow_deleted):
        raise _logged_model_missing(model_id)
    _require(user, found.experiment, level, _logged_model_missing(model_id))
    return found


def create_logged_model(
    user,
    experiment_id: Any,
    *,
    name: Any,
    model_type: Any,
    source_run_id: Any,
    params: Any,
    tags: Any,
) -> LoggedModel:
    experiment = get_experiment(user, experiment_id or DEFAULT_ID, access.WRITE)
    model_id = f"m-{uuid.uuid4().hex}"
    run = get_run(user, source_run_id) if source_run_id else None
    with transaction.atomic():
        created = LoggedModel.objects.create(
            id=model_id,
            experiment=experiment,
            name=_name(name or f"model-{model_id[2:10]}", "name", 250),
            model_type=validation.text(model_type, "model_type", 250),
            source_run=run,
            params=_pairs(_list(params, "params"), "params", MAX_PARAM_VALUE),
            tags=_pairs(_list(tags, "tags"), "tags", MAX_TAG_VALUE),
            created_by=user,
        )
    created.experiment = experiment
    return created


def _writable_model(user, model: LoggedModel) -> LoggedModel:
    _require(user, model.experiment, access.WRITE, _logged_model_missing(model.pk))
    return for_update(LoggedModel).get(pk=model.pk)


def finalize_logged_model(user, model: LoggedModel, status: Any) -> LoggedModel:
    status = validation.choice(status, "status", LoggedModel.Status.values)
    with transaction.atomic():
        locked = _writable_model(user, model)
        locked.status = status
        locked.save(update_fields=["status", "updated_at"])
    locked.experiment = model.experiment
    return locked


def set_logged_model_tags(user, model: LoggedModel, tags: Any) -> None:
    new = _pairs(_list(tags, "tags"), "tags", MAX_TAG_VALUE)
    with transaction.atomic():
        locked = _writable_model(user, model)
        locked.tags = {**locked.tags, **new}
        locked.save(update_fields=["tags", "updated_at"])


def delete_logged_model_tag(user, model: LoggedModel, key: Any) -> None:
    with transaction.atomic():
        locked = _writable_model(user, model)
        if key not in locked.tags:
            raise NotFound(f"Tag '{key}' of logged model '{model.pk}' does not exist.")
        locked.tags = {k: v for k, v in locked.tags.items() if k != key}
        locked.save(update_fields=["tags", "updated_at"])


def log_logged_model_params(user, model: LoggedModel, params: Any) -> None:
    params = _list(params, "params")
    if len(params) > MAX_PARAMS_TAGS:
        raise InvalidInput(f"At most {MAX_PARAMS_TAGS} params per call.")
    new = _pairs(params, "params", MAX_PARAM_VALUE)
    with transaction.atomic():
        locked = _writable_model(user, model)
        locked.params = {**locked.params, **new}
        locked.save(update_fields=["params", "updated_at"])


def delete_logged_model(user, model: LoggedModel) -> None:
    """Marked deleted (hidden from get and search); its files stay, as a version may hold them."""
    with transaction.atomic():
        locked = _writable_model(user, model)
        locked.deleted = True
        locked.save(update_fields=["deleted", "updated_at"])


def logged_model_metrics(model: LoggedModel) -> list[RunMetric]:
    if model.source_run_id is None:
        return []
    latest = latest_metrics([model.source_run_id])[model.source_run_id]
    return [m for m in latest.values() if m.model_id == model.pk]


def visible_logged_models(user, experiment_ids: list[Any]):
    experiments = [get_experiment(user, ref) for ref in experiment_ids]
    return LoggedModel.objects.filter(experiment__in=experiments, deleted=False).select_related(
        "experiment", "created_by"
    )


# --- artifacts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """What a tracking artifact path or version source belongs to: a run's or a logged
    model's artifact folder (`prefix`, with the path inside it under `prefix`)."""

    prefix: str
    run: Run | None = None
    logged_model: LoggedModel | None = None


def is_tracking_path(path: str) -> bool:
    return path == ROOT or path.startswith(f"{ROOT}/")


def artifact_origin(user, path: str, level: str = access.READ) -> Origin:
    """The run or logged model whose artifact folder holds `path` (at least its folder),
    if the caller may act on it at `level`; NotFound otherwise, and for writes by anyone
    but its creator PermissionDenied."""
    parts = path.split("/")
    missing = NotFound(f"No artifacts at '{path}'.", {"path": path})
    if len(parts) >= 4 and parts[2] != "models" and parts[3] == "artifacts":
        try:
            owner = get_run(user, parts[2], level)
        except NotFound:
            raise missing from None
        origin = Origin(run_artifact_path(owner), run=owner)
    elif len(parts) >= 5 and parts[2] == "models" and parts[4] == "artifacts":
        try:
            owner = get_logged_model(user, parts[3], level, allow_deleted=level == access.READ)
        except NotFound:
            raise missing from None
        origin = Origin(logged_model_artifact_path(owner), logged_model=owner)
    else:
        raise missing
    if not path.startswith(origin.prefix):  # the experiment part named another experiment
        raise missing
    if level != access.READ and owner.created_by_id != user.pk and not access.is_admin(user):
        raise PermissionDenied(
            f"Only the user who created {'run' if origin.run else 'logged model'} "
            f"'{owner.pk}' may write its artifacts.",
            {"path": path},
        )
    return origin


def source_origin(user, source: str, scheme: str, path: str) -> Origin | None:
    """The run or logged model a `create_model_version` source names, or None for sources
    that are not tracking's: `runs:/<run id>/<path>` (the run's files there, else the
    run's logged model of that name, as MLflow's server does), `models:/m-<id>` and an
    `mlflow-artifacts:/experiments/...` artifact URI of either."""
    if scheme == "runs":
        run_id, _, inside = path.partition("/")
        if not _RUN_ID.fullmatch(run_id):
            raise InvalidInput(
                f"'{source}' does not name a run: use runs:/<32-character run id>/<path>.",
                {"source": source},
            )
        run = get_run(user, run_id)
        prefix = run_artifact_path(run)
        from registry.models import ArtifactFile

        under = f"{prefix}/{inside}" if inside else prefix
        if ArtifactFile.objects.filter(path__startswith=f"{under}/").exists() or not inside:
            return Origin(under, run=run)
        logged = (
            LoggedModel.objects.filter(source_run=run, name=inside, deleted=False)
            .select_related("experiment")
            .order_by("-created_at")
            .first()
        )
        if logged is None:
            return Origin(under, run=run)  # nothing there: refused as an empty source
        return Origin(logged_model_artifact_path(logged), run=run, logged_model=logged)
    if scheme == "models" and _MODEL_ID.fullmatch(path):
        logged = get_logged_model(user, path)
        prefix = logged_model_artifact_path(logged)
        return Origin(prefix, run=logged.source_run, logged_model=logged)
    if scheme == "mlflow-artifacts" and is_tracking_path(path):
        found = artifact_origin(user, path)
        run = found.run or (found.logged_model.source_run if found.logged_model else None)
        return Origin(path, run=run, logged_model=found.logged_model)
    return None


def fed_fields(origin: Origin, fields: dict) -> dict:
    """A version's metadata from the run (and logged model) it is made of: their metrics,
    params and tags (not MLflow's own `mlflow.*` tags), under what the caller gave; the
    run and experiment in its lineage."""
    run, logged = origin.run, origin.logged_model
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    lineage: dict[str, Any] = {}
    if run is not None:
        latest = latest_metrics([run.pk])[run.pk]
        metrics.update({key: metric.value for key, metric in latest.items()})
        params.update(run.params)
        tags.update({k: v for k, v in run.tags.items() if not k.startswith("mlflow.")})
        lineage.update({"run_id": run.pk, "experiment_id": str(run.experiment_id)})
        commit = run.tags.get("mlflow.source.git.commit")
        if commit:
            lineage["code_commit"] = commit
        datasets = [f"{d.name}@{d.digest}" for d in run.datasets.all()[:20]]
        if datasets:
            lineage["dataset"] = ", ".join(datasets)[: validation.MAX_VALUE]
    if logged is not None:
        params.update(logged.params)
        tags.update({k: v for k, v in logged.tags.items() if not k.startswith("mlflow.")})
        lineage.update({"logged_model_id": logged.pk, "experiment_id": str(logged.experiment_id)})
    given = fields.get("lineage") or {}
    return {
        **fields,
        "metrics": {**metrics, **(fields.get("metrics") or {})},
        "params": {**params, **(fields.get("params") or {})},
        "tags": {**tags, **(fields.get("tags") or {})},
        # The run the files came from wins over a run_id the caller named.
        "lineage": {**given, **lineage},
    }


def is_tracking_source(source: Any) -> bool:
    return isinstance(source, str) and (
        source.startswith(("runs:/", "models:/m-", f"mlflow-artifacts:/{ROOT}/"))
    )


# MLflow registers in two calls, the model then its first version: a first version that
# fails leaves a model nobody asked for, unless it is taken back.
UNUSED_MODEL_SECONDS = 120


def discard_unused_model(model: RegisteredModel, user) -> bool:
    """Delete `model` if it is what the caller's register step just made and nothing
    else: created by them in the last UNUSED_MODEL_SECONDS, bare (no description, tags,
    aliases or grants) and never given a version. True if it was deleted."""
    with transaction.atomic():
        locked = for_update(RegisteredModel).filter(pk=model.pk).first()
        if (
            locked is None
            or locked.last_version_number
            or locked.created_by_id != user.pk
            or locked.description
            or locked.tags
            or timezone.now() - locked.created_at > timedelta(seconds=UNUSED_MODEL_SECONDS)
            or locked.aliases.exists()
            or locked.grants.exists()
        ):
            return False
        record_event("model.discarded", user, model=locked, data={"reason": "first version failed"})
        locked.delete()
        gitmirror.request_sync()
    return True


# --- input shapes ---------------------------------------------------------------------------


def _name(value: Any, field: str, max_length: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"'{field}' must be a non-empty string.", {"field": field})
    return validation.text(value, field, max_length)


def _list(value: Any, field: str) -> list:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"'{field}' must be a list.", {"field": field})
    return value


def _key(key: Any, field: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not _KEY.fullmatch(key):
        raise InvalidInput(
            f"{field} names are 1-{MAX_KEY} characters of letters, digits, space and _ - . / :"
            f" (got {str(key)[:100]!r}).",
            {"field": field},
        )
    if key.startswith("/") or "//" in key or any(p in (".", "..") for p in key.split("/")):
        raise InvalidInput(f"Invalid {field} name {key!r}.", {"field": field})
    return key


def _value(value: Any, field: str, key: str, max_length: int) -> str:
    if isinstance(value, bool) or value is None:
        value = "" if value is None else str(value).lower()
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(
            f"The value of {field} '{key}' must be a string of at most {max_length} characters.",
            {"field": field, "key": key},
        )
    return value


def _pairs(items: list, field: str, max_value: int) -> dict[str, str]:
    """[{key, value}] as a dict, each checked as MLflow checks it."""
    pairs = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "key" not in item:
            raise InvalidInput(f"{field}[{index}] must be an object with 'key' and 'value'.")
        key = _key(item["key"], field.rstrip("s"))
        pairs[key] = _value(item.get("value"), field.rstrip("s"), key, max_value)
    return pairs


def _tags(tags: Any, max_value: int) -> dict[str, str]:
    if isinstance(tags, dict):
        tags = [{"key": k, "value": v} for k, v in tags.items()]
    return _pairs(_list(tags, "tags"), "tags", max_value)


def _int(value: Any, field: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
        value = int(value)  # protobuf's JSON writes 64-bit integers as strings
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
        raise InvalidInput(f"'{field}' must be a 64-bit integer.", {"field": field})
    return value


def _millis(value: Any, field: str) -> int | None:
    if value in (None, ""):
        return None
    value = _int(value, field)
    if value < 0:
        raise InvalidInput(f"'{field}' must be milliseconds since the epoch.", {"field": field})
    return value


def _metric(run: Run, item: Any, index: int) -> RunMetric:
    if not isinstance(item, dict):
        raise InvalidInput(f"metrics[{index}] must be an object.")
    key = _key(item.get("key"), "metric")
    value = item.get("value")
    if isinstance(value, str):  # protobuf's JSON spells non-finite doubles as strings
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(
            f"Metric '{key}' must be a finite number (got {str(item.get('value'))[:50]!r}).",
            {"key": key},
        )
    timestamp = _millis(item.get("timestamp"), "timestamp")
    return RunMetric(
        run=run,
        key=key,
        value=float(value),
        timestamp=now_ms() if timestamp is None else timestamp,
        step=_int(item.get("step") or 0, "step"),
        model_id=_optional_model_id(item.get("model_id")),
        dataset_name=validation.text(item.get("dataset_name"), "dataset_name", 500),
        dataset_digest=validation.text(item.get("dataset_digest"), "dataset_digest", 36),
    )


def _optional_model_id(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _MODEL_ID.fullmatch(value):
        raise InvalidInput(f"'model_id' {str(value)[:60]!r} is not a logged model id.")
    return value


def _model_ref(item: Any, field: str) -> str:
    if not isinstance(item, dict):
        raise InvalidInput(f"{field} must be an object with 'model_id'.")
    model_id = item.get("model_id")
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise InvalidInput(f"{field}.model_id {str(model_id)[:60]!r} is not a logged model id.")
    if not LoggedModel.objects.filter(pk=model_id).exists():
        raise _logged_model_missing(model_id)
    return model_id


def _dataset(run: Run, item: Any, index: int) -> RunDataset:
    where = f"datasets[{index}]"
    dataset = item.get("dataset") if isinstance(item, dict) else None
    if not isinstance(dataset, dict):
        raise InvalidInput(f"{where} must be an object with a 'dataset'.")
    tags = _pairs(_list(item.get("tags"), "tags"), "tags", 500)
    return RunDataset(
        run=run,
        name=_name(dataset.get("name"), f"{where}.dataset.name"),
        digest=_name(dataset.get("digest"), f"{where}.dataset.digest", 36),
        source_type=validation.text(dataset.get("source_type"), "source_type", 36),
        source=validation.text(dataset.get("source"), "source", 65535),
        schema=validation.text(dataset.get("schema"), "schema", 1_048_575),
        profile=validation.text(dataset.get("profile"), "profile", 1_048_575),
        tags=tags,
    )
