from django.contrib import admin

from .models import Alias, ApiToken, Environment, Event, ModelVersion, RegisteredModel


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "required_approvals", "reviewer_group", "allow_self_approval"]


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "visibility", "last_version_number", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["last_version_number"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["model", "number", "state", "created_by", "created_at"]
    list_filter = ["state"]

    # Versions change only through the services; the admin is for looking.
    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    list_display = ["model", "name", "version", "updated_at"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["at", "type", "actor_name", "model_name", "version_number"]
    list_filter = ["type"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "scopes", "expires_at", "revoked_at"]
    exclude = ["secret_hash"]
    readonly_fields = ["key_id"]

    def has_add_permission(self, request):
        return False
