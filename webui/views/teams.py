"""Teams: the team page (members, roles, models, service accounts and their tokens), and
the model page's access forms. Every change goes through registry.services (teams,
registered_models, tokens); a RegistryError is shown as a message, never a server error.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry.errors import RegistryError
from registry.models import ApiToken, Team
from registry.services import access, registered_models, teams
from registry.services import tokens as token_service

from .browse import model_or_404


@login_required
@require_http_methods(["GET", "POST"])
def team_index(request: HttpRequest) -> HttpResponse:
    """Every team and the user's role in it; admins create teams here."""
    if request.method == "POST":
        try:
            team = teams.create_team(
                request.user,
                request.POST.get("name", "").strip(),
                request.POST.get("description", ""),
            )
        except RegistryError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Team {team.name} created.")
            return redirect("webui:team", name=team.name)
    mine = access.team_roles(request.user)
    rows = [
        {"team": team, "role": mine.get(team.pk)}
        for team in Team.objects.order_by("name").prefetch_related("memberships")
    ]
    context = {"nav": "teams", "rows": rows, "is_admin": access.is_admin(request.user)}
    return render(request, "webui/teams.html", context)


def _team_or_404(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise Http404(f"Team '{name}' does not exist.")
    return team


@login_required
@require_GET
def team_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _team_page(request, _team_or_404(name))


def _team_page(request: HttpRequest, team: Team, created: dict | None = None) -> HttpResponse:
    manager = teams.may_manage(request.user, team)
    member = team.pk in access.team_roles(request.user) or access.is_admin(request.user)
    accounts = list(team.service_accounts.select_related("user").order_by("user__username"))
    tokens = (
        ApiToken.objects.filter(user__in=[a.user for a in accounts], revoked_at__isnull=True)
        .select_related("user")
        .order_by("user__username", "-created_at")
        if manager
        else []
    )
    context = {
        "nav": "teams",
        "team": team,
        "can_manage": manager,
        "memberships": team.memberships.select_related("user").order_by("user__username")
        if member
        else [],
        "is_member": member,
        # Only the models this user may see; the others do not exist for them.
        "models": access.visible_models(request.user).filter(team=team).order_by("name"),
        "accounts": accounts if member else [],
        "tokens": tokens,
        "roles": teams.Role.values,
        "created": created,
    }
    return render(request, "webui/team.html", context)


@login_required
@require_POST
def team_change(request: HttpRequest, name: str) -> HttpResponse:
    """One form per action: set a member's role, remove a member, add a service account,
    or mint a token for one."""
    team = _team_or_404(name)
    action, post = request.POST.get("action"), request.POST
    try:
        if action == "set-member":
            teams.set_member(request.user, team, post.get("user", "").strip(), post.get("role"))
            messages.success(request, f"{post.get('user')} is now {post.get('role')}.")
        elif action == "remove-member":
            teams.remove_member(request.user, team, post.get("user", ""))
            messages.success(request, f"{post.get('user')} left {team.name}.")
        elif action == "add-account":
            account = teams.create_service_account(
                request.user, team, post.get("name", "").strip(), post.get("role", "contributor")
            )
            messages.success(request, f"Service account {account.user.username} created.")
        elif action == "account-token":
            account = teams.service_account_for(request.user, post.get("user", ""))
            scopes = [s for s in post.getlist("scopes") if s] or ["read"]
            token, secret = token_service.create_token(
                account.user, post.get("token_name", "").strip() or "ci", scopes, teams=[name]
            )
            # Rendered in this response only: the secret is never stored or shown again.
            return _team_page(request, team, {"token": token, "secret": secret})
        else:
            messages.error(request, "Unknown action.")
    except RegistryError as exc:
        messages.error(request, exc.message)
    return redirect("webui:team", name=name)


@login_required
@require_POST
def model_access(request: HttpRequest, name: str) -> HttpResponse:
    """The model page's access forms: visibility, grants given and taken back."""
    model = model_or_404(request, name)
    action, post = request.POST.get("action"), request.POST
    try:
        if action == "visibility":
            registered_models.set_visibility(model, request.user, post.get("visibility"))
            messages.success(request, f"{model.name} is now visible to: {post['visibility']}.")
        elif action == "grant":
            target = post.get("grantee", "").strip()
            kind, _, value = target.partition(":")
            registered_models.grant_access(
                model,
                request.user,
                post.get("level"),
                team=value if kind == "team" else None,
                username=value if kind == "user" else "",
            )
            messages.success(request, f"Access granted to {target}.")
        elif action == "revoke":
            registered_models.revoke_access(model, request.user, int(post.get("grant", "0")))
            messages.success(request, "Access taken back.")
        else:
            messages.error(request, "Unknown action.")
    except (RegistryError, ValueError) as exc:
        messages.error(request, getattr(exc, "message", "Bad request."))
    return redirect("webui:model", name=model.name)
