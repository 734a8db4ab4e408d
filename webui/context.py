"""Template context for every page: the signed-in user's review count for the nav."""

from registry.models import Promotion
from registry.services import access


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated:
        return {}
    groups = access.user_groups(user)
    reviewable = Promotion.objects.filter(state=Promotion.State.PENDING)
    if not access.is_admin(user):
        reviewable = reviewable.filter(environment__reviewer_group__in=groups)
    reviewable = reviewable.exclude(requested_by=user).exclude(reviews__reviewer=user)
    return {"pending_reviews_count": reviewable.count(), "user_scopes": access.role_scopes(user)}
