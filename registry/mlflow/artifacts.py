"""MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts`), served from the blob store.

`MlflowArtifactsRepository` lists with `GET .../artifacts?path=<folder>`, downloads with
`GET .../artifacts/<path>` and uploads with `PUT .../artifacts/<path>`. Bodies stream both
ways; paths are names in `registry.services.artifacts`, never file-system paths.
"""

from django.urls import path

from registry.api.downloads import blob_response
from registry.errors import Conflict
from registry.services import artifacts

from .errors import RESOURCE_ALREADY_EXISTS, MlflowError
from .views import Call, endpoint, read, write


def list_artifacts(call: Call) -> dict:
    entries = artifacts.list_artifacts(call.get("path") or "", call.user)
    return {
        "files": [
            {"path": e.name, "is_dir": e.is_dir} | ({} if e.is_dir else {"file_size": str(e.size)})
            for e in entries
        ]
    }


def download_artifact(call: Call, artifact_path: str):
    blob = artifacts.find_file(artifact_path, call.user)
    return blob_response(call.request, blob.sha256, blob.size, blob.path)


def upload_artifact(call: Call, artifact_path: str) -> dict:
    try:
        artifacts.upload_artifact(call.user, artifact_path, call.request)
    except Conflict as error:
        raise MlflowError(RESOURCE_ALREADY_EXISTS, error.message) from None
    return {}


listing = endpoint({"GET": read(list_artifacts)})
artifact = endpoint(
    {"GET": read(download_artifact), "HEAD": read(download_artifact), "PUT": write(upload_artifact)}
)

urlpatterns = [
    path("artifacts", listing),
    path("artifacts/", listing),
    path("artifacts/<path:artifact_path>", artifact),
]
