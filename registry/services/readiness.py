"""Waiting, briefly, for a new version's pipeline to settle it.

MLflow's client awaits READY after `create_model_version` by polling every 3 s, so an
answer of PENDING_REGISTRATION costs it 3 s even when the worker needs a fraction of one.
The create call waits here instead, for at most MODELGATE_MLFLOW_CREATE_WAIT_SECONDS,
reading the version's state: the pipeline alone decides it (READY only once verified
and scanned clean), this only looks sooner than the client would.
"""

import time

from django.conf import settings

from registry.models import ModelVersion

UNSETTLED = (ModelVersion.State.UPLOADING, ModelVersion.State.PROCESSING)
# The first look comes soon (a small version is done in tens of milliseconds once a worker
# has it); later ones less often, so a long wait costs few queries.
FIRST_PAUSE, MAX_PAUSE = 0.01, 0.1


def wait_settled(version: ModelVersion, seconds: float | None = None) -> ModelVersion:
    """`version` as it is once its pipeline has settled it, or after `seconds` (default:
    the setting) if it has not; re-read either way when it was not already settled."""
    seconds = settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS if seconds is None else seconds
    if version.state not in UNSETTLED or seconds <= 0:
        return version
    deadline = time.monotonic() + seconds
    pause = FIRST_PAUSE
    state = version.state
    while state in UNSETTLED:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, MAX_PAUSE)
        state = ModelVersion.objects.filter(pk=version.pk).values_list("state", flat=True).first()
        if state is None:  # deleted meanwhile: nothing newer to show
            return version
    return ModelVersion.objects.select_related("model", "created_by").get(pk=version.pk)
