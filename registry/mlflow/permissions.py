"""MLflow's per-user permission calls, answered from Modelgate's model grants.

MLflow 3's `get_app_client("basic-auth")` client grants, revokes and checks one user's
permission on one resource at /api/3.0/mlflow/users/permissions/{grant,revoke,get}. For
`resource_type="registered_model"` (the resource id is the model's name) they map onto a
`ModelGrant` for that user: READ and USE are read, EDIT is write, MANAGE is manage,
NO_PERMISSIONS takes the grant back. Granting and revoking need manage on the model; a
check is for the caller themselves or for someone who manages the model. Other resource
types (experiments, prompts, gateway…) are not Modelgate's and are refused.
"""

from django.contrib.auth import get_user_model
from django.urls import path

from registry.services import access, registered_models

from .errors import RESOURCE_DOES_NOT_EXIST, MlflowError, invalid
from .views import Call, _model, endpoint, read, write

REGISTERED_MODEL = "registered_model"
TO_LEVEL = {"READ": "read", "USE": "read", "EDIT": "write", "MANAGE": "manage"}
TO_PERMISSION = {None: "NO_PERMISSIONS", "read": "READ", "write": "EDIT", "manage": "MANAGE"}


def _target(call: Call):
    if call.required("resource_type") != REGISTERED_MODEL:
        raise invalid("Modelgate answers permissions for resource_type 'registered_model' only.")
    model = _model(call, call.required("resource_id"))
    username = call.required("username")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise MlflowError(RESOURCE_DOES_NOT_EXIST, f"User '{username}' does not exist.")
    return model, user


def grant_permission(call: Call) -> dict:
    model, user = _target(call)
    permission = call.required("permission")
    if permission == "NO_PERMISSIONS":
        return revoke_permission(call)
    if permission not in TO_LEVEL:
        raise invalid(f"Invalid permission '{permission}': use one of {', '.join(TO_LEVEL)}.")
    registered_models.grant_access(
        model, call.user, TO_LEVEL[permission], username=user.get_username()
    )
    return {}


def revoke_permission(call: Call) -> dict:
    model, user = _target(call)
    access.require_model(call.user, model, access.MANAGE)
    grant = model.grants.filter(user=user).first()
    if grant is None:
        raise MlflowError(
            RESOURCE_DOES_NOT_EXIST,
            f"User '{user.get_username()}' has no permission on model '{model.name}'.",
        )
    registered_models.revoke_access(model, call.user, grant.pk)
    return {}


def get_permission(call: Call) -> dict:
    model, user = _target(call)
    if user.pk != call.user.pk:
        access.require_model(call.user, model, access.MANAGE)
    level = access.model_level(user, model)
    return {"allowed": level is not None, "permission": TO_PERMISSION[level]}


urlpatterns = [
    path("users/permissions/grant", endpoint({"POST": write(grant_permission)})),
    path("users/permissions/revoke", endpoint({"POST": write(revoke_permission)})),
    path("users/permissions/get", endpoint({"GET": read(get_permission)})),
]
