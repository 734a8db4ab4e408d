"""Template context for every page: the signed-in user's review count for the nav."""

from registry.services import access
from registry.services.promotions import reviewable_by


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated:
        return {}
    return {
        "pending_reviews_count": reviewable_by(user).count(),
        "user_scopes": access.role_scopes(user),
    }
