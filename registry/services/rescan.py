"""Re-judging stored versions under the current scanner and policy.

A new scanner release, or an operator naming more dangerous globals
(MODELGATE_SCAN_UNSAFE_GLOBALS), can change a verdict after the fact. `rescan_version`
reads the stored bytes again; a version that is now `unsafe` is quarantined, and where it
is live the environment gets a firing alert (and the events reach webhooks). A quarantined
version whose new scan is not unsafe stays quarantined: releasing one is a decision for
a person, made by uploading it again.
"""

from django.db import transaction

from registry.errors import InvalidInput, PermissionDenied
from registry.models import ModelVersion, RegisteredModel

from . import access, jobs
from .environments import live_environments
from .events import record_event
from .monitoring import alerts
from .processing import Heartbeat, record_scan, scan_version, unsafe_reason
from .versions import quarantine

KIND = "rescan_version"
# Versions whose stored bytes are final and may be served: the ones worth re-judging.
RESCANNED_STATES = (ModelVersion.State.READY, ModelVersion.State.QUARANTINED)


def rescannable(model_name: str | None = None):
    versions = ModelVersion.objects.filter(state__in=RESCANNED_STATES).select_related("model")
    if model_name:
        # Admins and the `rescan` command only: every model is theirs to see.
        model = RegisteredModel.objects.filter(name=model_name).first()
        if model is None:
            raise access.not_found(model_name)
        versions = versions.filter(model=model)
    return versions.order_by("model__name", "number")


@jobs.handler(KIND)
def rescan_version(version_id: int, actor=None) -> dict:
    """Scan one version again; returns {"before", "after", "quarantined", "alerts"}."""
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or version.state not in RESCANNED_STATES:
        return {"before": None, "after": None, "quarantined": False, "alerts": []}
    before = version.scan_status
    result = scan_version(version, Heartbeat(KIND, version_id))
    with transaction.atomic():
        record_scan(version, result)
        record_event(
            "version.rescanned",
            actor,
            version=version,
            data={"before": before, "after": result.status},
        )
    quarantined = result.status == "unsafe" and quarantine(version, unsafe_reason(result), actor)
    fired = []
    if quarantined:
        for environment in live_environments(version.model):
            if alerts.watch_quarantine(version.model, environment) == "fired":
                fired.append(environment)
    return {"before": before, "after": result.status, "quarantined": quarantined, "alerts": fired}


def request_rescan(user, model_name: str | None = None) -> int:
    """Queue a rescan of every stored version (of one model); admins only. Returns how many."""
    if not access.is_admin(user):
        raise PermissionDenied("Only an admin may rescan versions.")
    if model_name is not None and not isinstance(model_name, str):
        raise InvalidInput("'model' must be a model name.", {"model": model_name})
    ids = list(rescannable(model_name).values_list("pk", flat=True))
    with transaction.atomic():
        for version_id in ids:
            jobs.enqueue(KIND, version_id)
        record_event(
            "scan.rescan_requested", user, data={"model": model_name, "versions": len(ids)}
        )
    return len(ids)
