"""One permission class: each view says which scope each HTTP method needs."""

from rest_framework import permissions

from registry.services import access

from .auth import request_scopes

DEFAULT_LEVELS = {
    "GET": access.READ,
    "HEAD": access.READ,
    "OPTIONS": access.READ,
    "POST": access.WRITE,
    "PUT": access.WRITE,
    "PATCH": access.WRITE,
    "DELETE": access.ADMIN,
}


class ScopedAccess(permissions.BasePermission):
    """Authenticated, and holding the scope the view's `access_levels` asks for."""

    message = "Your token or role does not allow this."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        levels = {**DEFAULT_LEVELS, **getattr(view, "access_levels", {})}
        needed = levels.get(request.method, access.ADMIN)
        if needed is None:
            return True
        ok = needed in request_scopes(request)
        if not ok:
            self.message = f"This needs the '{needed}' scope, which your token or role lacks."
        return ok
