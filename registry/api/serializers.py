"""Response shapes, and request shapes for the OpenAPI document.

Requests are validated by the services (so every door applies the same rules); the
request serializers here describe them for the schema and catch wrong JSON types early.
"""

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from registry.models import Alias, ApiToken, Event, ModelVersion, RegisteredModel, VersionFile
from registry.names import MAX_MODEL_NAME
from registry.services.gates import GATE_TYPES
from registry.services.gates import OPS as GATE_OPS
from registry.services.monitoring.monitors import METRICS as MONITOR_METRICS
from registry.services.monitoring.monitors import OPS as MONITOR_OPS

# --- shared pieces -------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


StringMap = serializers.DictField(child=serializers.CharField(allow_blank=True))


def _username(user) -> str | None:
    return user.get_username() if user else None


def _datetime(value, tz) -> str | None:
    """What DRF's DateTimeField gives with DATETIME_FORMAT iso-8601, without its overhead;
    `tz` is the current time zone."""
    if not value:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _file_rows(version) -> list[tuple]:
    rows = getattr(version, "file_rows", None)  # set by services.versions.read_version
    if rows is None:
        rows = [(f.path, f.size, f.sha256, f.complete) for f in version.files.all()]
    return rows


def absolute(request, viewname: str, **kwargs) -> str:
    url = reverse(viewname, kwargs=kwargs)
    return request.build_absolute_uri(url) if request else url


# --- models --------------------------------------------------------------------------


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=MAX_MODEL_NAME,
        trim_whitespace=False,
        help_text="As MLflow allows (case kept, spaces); no '/', ':' or '\\'. docs/API.md.",
    )
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    team = serializers.CharField(
        required=False, help_text="The owning team; needed when you write to several."
    )
    visibility = serializers.ChoiceField(["team", "internal"], required=False)
    primary_metric = serializers.CharField(required=False, allow_blank=True)


class ModelUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    team = serializers.CharField(required=False, help_text="Maintainers only: hand it over.")
    visibility = serializers.ChoiceField(["team", "internal"], required=False)
    primary_metric = serializers.CharField(required=False, allow_blank=True)


class RegisteredModelSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="name", read_only=True)
    latest_version = serializers.SerializerMethodField()
    aliases = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "description",
            "tags",
            "team",
            "visibility",
            "primary_metric",
            "latest_version",
            "aliases",
            "created_by",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_latest_version(self, obj) -> int | None:
        """The newest ready version whose scan is clean (what `latest` resolves to)."""
        return getattr(obj, "latest_number", None)

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_aliases(self, obj) -> dict:
        return {a.name: a.version.number for a in obj.aliases.all()}

    def get_created_by(self, obj) -> str | None:
        return _username(obj.created_by)


class GrantSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    team = serializers.CharField(source="team.name", default=None)
    user = serializers.CharField(source="user.username", default=None)
    level = serializers.ChoiceField(["read", "write", "manage"])
    created_at = serializers.DateTimeField(read_only=True)


class TeamSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    created_at = serializers.DateTimeField(read_only=True)


class TeamUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(allow_blank=True)


class MembershipSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(["viewer", "contributor", "maintainer"])
    source = serializers.CharField(read_only=True)
    service_account = serializers.SerializerMethodField()

    def get_service_account(self, obj) -> bool:
        return hasattr(obj.user, "service_account")


class ServiceAccountSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username", read_only=True)
    name = serializers.CharField(write_only=True)
    role = serializers.ChoiceField(["viewer", "contributor", "maintainer"], required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    created_at = serializers.DateTimeField(read_only=True)


# --- versions ------------------------------------------------------------------------


class LineageSerializer(serializers.Serializer):
    code_commit = serializers.CharField(required=False, allow_blank=True)
    dataset = serializers.CharField(required=False, allow_blank=True)
    run_url = serializers.CharField(required=False, allow_blank=True)
    run_id = serializers.CharField(required=False, allow_blank=True)
    parent_version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    # Filled from the MLflow run (and logged model) a version is registered from.
    experiment_id = serializers.CharField(required=False, allow_blank=True)
    logged_model_id = serializers.CharField(required=False, allow_blank=True)


class FileDeclarationSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$")


class VersionMetadataSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    metrics = serializers.DictField(child=serializers.FloatField(), required=False)
    params = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    lineage = LineageSerializer(required=False)
    baseline = serializers.DictField(
        required=False, help_text="A profile of the training data (see 'Monitoring' in the docs)."
    )
    explanations = serializers.DictField(
        required=False, help_text="Global per-feature importance, its method and data."
    )


class VersionCreateSerializer(VersionMetadataSerializer):
    files = FileDeclarationSerializer(many=True)


class VersionMultipartSerializer(serializers.Serializer):
    metadata = serializers.CharField(required=False, help_text="VersionMetadata as JSON text")
    files = serializers.ListField(child=serializers.FileField())


class UploadTargetSerializer(serializers.Serializer):
    path = serializers.CharField()
    url = serializers.URLField()


class VersionCreatedSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    state = serializers.CharField()
    uploads = UploadTargetSerializer(many=True)


class VersionUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)


class VersionFileSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = VersionFile
        fields = ["path", "size", "sha256", "complete", "download_url"]

    def get_download_url(self, obj) -> str:
        version = obj.version
        return absolute(
            self.context.get("request"),
            "api:version-file",
            name=version.model.name,
            ref=str(version.number),
            path=obj.path,
        )


class ScanSerializer(serializers.Serializer):
    status = serializers.CharField(
        allow_blank=True, help_text="clean, unsafe or unverified; blank before the scan."
    )
    findings = serializers.ListField(
        child=serializers.DictField(),
        help_text="{file, member, offset, module, name, severity, detail}",
    )
    files = serializers.DictField(
        child=serializers.DictField(), help_text="Per file: {status, formats}."
    )


class PackageSerializer(serializers.Serializer):
    state = serializers.CharField()
    sha256 = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField(allow_null=True)
    download_url = serializers.CharField(allow_null=True)


class VersionSummarySerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="number")
    model = serializers.CharField(source="model.name")
    aliases = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "state",
            "status_reason",
            "description",
            "metrics",
            "params",
            "tags",
            "aliases",
            "created_by",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_aliases(self, obj) -> list[str]:
        names = getattr(obj, "alias_names", None)  # set by the read path's queries
        if names is None:
            names = [a.name for a in obj.aliases.all()]
        return sorted(names)

    def get_created_by(self, obj) -> str | None:
        return _username(obj.created_by)

    def to_representation(self, instance) -> dict:
        # Written out by hand: DRF's generic field walk was most of the read path's Python
        # time. The declared fields above still describe the output (OpenAPI), and
        # tests/test_read_path.py checks this gives exactly what they would.
        tz = timezone.get_current_timezone()
        return {
            "model": instance.model.name,
            "version": instance.number,
            "state": instance.state,
            "status_reason": instance.status_reason,
            "description": instance.description,
            "metrics": instance.metrics,
            "params": instance.params,
            "tags": instance.tags,
            "aliases": self.get_aliases(instance),
            "created_by": self.get_created_by(instance),
            "created_at": _datetime(instance.created_at, tz),
            "updated_at": _datetime(instance.updated_at, tz),
        }


class VersionDetailSerializer(VersionSummarySerializer):
    files = VersionFileSerializer(many=True, read_only=True)
    scan = serializers.SerializerMethodField()
    package = serializers.SerializerMethodField()

    class Meta(VersionSummarySerializer.Meta):
        fields = [
            *VersionSummarySerializer.Meta.fields,
            "lineage",
            "signature",
            "framework",
            "model_card",
            "files",
            "scan",
            "package",
            "finalized_at",
            "baseline",
            "explanations",
        ]

    def to_representation(self, instance) -> dict:
        request = self.context.get("request")
        name, number = instance.model.name, str(instance.number)
        return {
            **super().to_representation(instance),
            "lineage": instance.lineage,
            "signature": instance.signature,
            "framework": instance.framework,
            "model_card": instance.model_card,
            "files": [
                {
                    "path": path,
                    "size": size,
                    "sha256": sha256,
                    "complete": complete,
                    "download_url": absolute(
                        request, "api:version-file", name=name, ref=number, path=path
                    ),
                }
                for path, size, sha256, complete in _file_rows(instance)
            ],
            "scan": self.get_scan(instance),
            "package": self.get_package(instance),
            "finalized_at": _datetime(instance.finalized_at, timezone.get_current_timezone()),
            "baseline": instance.baseline,
            "explanations": instance.explanations,
        }

    @extend_schema_field(ScanSerializer)
    def get_scan(self, obj) -> dict:
        return {"status": obj.scan_status, "findings": obj.scan_findings, "files": obj.scan_files}

    @extend_schema_field(PackageSerializer)
    def get_package(self, obj) -> dict:
        url = None
        if obj.package_state == "ready":
            url = absolute(
                self.context.get("request"),
                "api:version-package",
                name=obj.model.name,
                ref=str(obj.number),
            )
        return {
            "state": obj.package_state,
            "sha256": obj.package_sha256,
            "size": obj.package_size,
            "download_url": url,
        }


class FileStatusSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    received = serializers.IntegerField()
    complete = serializers.BooleanField()
    sha256 = serializers.CharField()


# --- aliases -------------------------------------------------------------------------


class AliasSerializer(serializers.ModelSerializer):
    alias = serializers.CharField(source="name")
    version = serializers.IntegerField(source="version.number")
    protected = serializers.SerializerMethodField()
    updated_by = serializers.SerializerMethodField()

    class Meta:
        model = Alias
        fields = ["alias", "version", "protected", "updated_at", "updated_by"]

    def get_protected(self, obj) -> bool:
        return obj.name in self.context.get("protected", set())

    def get_updated_by(self, obj) -> str | None:
        return _username(obj.updated_by)


class AliasSetSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)


# --- events --------------------------------------------------------------------------


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name")
    model = serializers.CharField(source="model_name", allow_blank=True)
    version = serializers.IntegerField(source="version_number", allow_null=True)

    class Meta:
        model = Event
        fields = ["id", "type", "actor", "at", "model", "version", "data"]


# --- auth ----------------------------------------------------------------------------


class TokenCreateSerializer(serializers.Serializer):
    username = serializers.CharField(required=False)
    password = serializers.CharField(required=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiToken.SCOPES), required=False
    )
    expires_in_days = serializers.IntegerField(required=False, min_value=1)
    model = serializers.CharField(required=False, help_text="The model an ingest token writes for.")
    environment = serializers.CharField(
        required=False, help_text="The one environment an ingest token writes for."
    )
    teams = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Act only on these teams' models."
    )
    models = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Act only on these models."
    )


class TokenSerializer(serializers.ModelSerializer):
    model = serializers.SerializerMethodField()
    teams = serializers.SlugRelatedField(
        source="limit_teams", slug_field="name", many=True, read_only=True
    )
    models = serializers.SlugRelatedField(
        source="limit_models", slug_field="name", many=True, read_only=True
    )

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "scopes",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "model",
            "environment",
            "parent",
            "teams",
            "models",
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_model(self, obj) -> str | None:
        return obj.model.name if obj.model_id else None


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.SerializerMethodField()

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]

    def get_token(self, obj) -> str:
        return self.context["secret"]


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    groups = serializers.ListField(child=serializers.CharField())
    teams = serializers.DictField(child=serializers.CharField(), help_text="team: role")
    permissions = serializers.ListField(child=serializers.CharField())
    is_staff = serializers.BooleanField()


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField()
    checks = serializers.DictField(child=serializers.CharField(), required=False)


# --- environments, promotions, webhooks ----------------------------------------------


class GateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=sorted(GATE_TYPES))
    metric = serializers.CharField(required=False)
    op = serializers.ChoiceField(choices=list(GATE_OPS), required=False)
    value = serializers.FloatField(required=False)
    higher_is_better = serializers.BooleanField(required=False)
    # healthy_in: the version's own traffic in another environment (see services/gates.py).
    environment = serializers.CharField(required=False)
    min_requests = serializers.IntegerField(required=False, min_value=0)
    max_error_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    no_firing_alerts = serializers.BooleanField(required=False)


class EnvironmentSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    required_approvals = serializers.IntegerField(
        help_text="Approvals needed from members of reviewer_group (or admins)."
    )
    reviewer_group = serializers.CharField()
    maintainer_approvals = serializers.IntegerField(
        help_text="Approvals needed from maintainers of the model's team."
    )
    allow_self_approval = serializers.BooleanField()
    gates = serializers.ListField(child=serializers.DictField())
    allowed_globals = serializers.ListField(child=serializers.CharField())
    deploy_group = serializers.CharField(
        help_text="Members' ingest tokens bound here vouch for healthy_in evidence."
    )


class EnvironmentWriteSerializer(serializers.Serializer):
    name = serializers.CharField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    required_approvals = serializers.IntegerField(required=False, min_value=0, max_value=10)
    reviewer_group = serializers.CharField(required=False)
    maintainer_approvals = serializers.IntegerField(required=False, min_value=0, max_value=10)
    allow_self_approval = serializers.BooleanField(required=False)
    gates = GateSerializer(many=True, required=False)
    allowed_globals = serializers.ListField(child=serializers.CharField(), required=False)
    deploy_group = serializers.CharField(required=False, allow_blank=True)


class GateResultSerializer(serializers.Serializer):
    type = serializers.CharField()
    passed = serializers.BooleanField()
    detail = serializers.CharField()
    tokens = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="healthy_in: the ingest tokens whose traffic was counted as evidence.",
    )


class ReviewSerializer(serializers.Serializer):
    reviewer = serializers.CharField(source="reviewer_name")
    decision = serializers.CharField()
    comment = serializers.CharField()
    at = serializers.DateTimeField()


class PromotionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="version.number")
    environment = serializers.CharField(source="environment.name")
    state = serializers.CharField()
    status_reason = serializers.CharField()
    requested_by = serializers.SerializerMethodField()
    requested_at = serializers.DateTimeField()
    comment = serializers.CharField()
    gates = GateResultSerializer(many=True)
    reviews = ReviewSerializer(many=True)
    current_version = serializers.SerializerMethodField()
    previous_version = serializers.SerializerMethodField()
    sequence = serializers.IntegerField(allow_null=True)
    promoted_at = serializers.DateTimeField(allow_null=True)

    def get_requested_by(self, obj) -> str | None:
        return _username(obj.requested_by)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_current_version(self, obj) -> int | None:
        live = self.context.get("live", {}).get((obj.model_id, obj.environment.name))
        return live

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_previous_version(self, obj) -> int | None:
        return obj.previous_version.number if obj.previous_version else None


class PromotionRequestSerializer(serializers.Serializer):
    environment = serializers.CharField()
    comment = serializers.CharField(required=False, allow_blank=True)


class ReviewRequestSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    comment = serializers.CharField()


class WebhookSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField(allow_blank=True)
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(help_text="Shown once, at creation.")


class WebhookWriteSerializer(serializers.Serializer):
    url = serializers.URLField(required=False)
    events = serializers.ListField(child=serializers.CharField(), required=False)
    secret = serializers.CharField(required=False, min_length=16)
    description = serializers.CharField(required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.IntegerField(source="event_id")
    event_type = serializers.CharField(source="event.type")
    state = serializers.CharField()
    attempts = serializers.ListField(child=serializers.DictField())
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


# --- monitoring ----------------------------------------------------------------------


class PredictionRecordSerializer(serializers.Serializer):
    model = serializers.CharField(required=False, help_text="Defaults to the token's model.")
    version = serializers.IntegerField(min_value=1)
    environment = serializers.CharField(
        required=False, help_text="Defaults to the token's environment."
    )
    request_id = serializers.RegexField(r"^[A-Za-z0-9._:\-]{1,128}$")
    at = serializers.DateTimeField(help_text="RFC 3339, within the retention period.")
    inputs = serializers.DictField(help_text="{feature: number, string, boolean or null}")
    outputs = serializers.DictField(required=False)
    latency_ms = serializers.FloatField(required=False, allow_null=True, min_value=0)
    error = serializers.CharField(required=False, allow_null=True, allow_blank=True)


class PredictionBatchSerializer(serializers.Serializer):
    records = PredictionRecordSerializer(many=True)


class FeedbackRecordSerializer(serializers.Serializer):
    model = serializers.CharField(required=False)
    request_id = serializers.RegexField(r"^[A-Za-z0-9._:\-]{1,128}$")
    label = serializers.JSONField(required=False, help_text="A class: string, number or boolean.")
    value = serializers.FloatField(required=False, help_text="A regression target.")


class FeedbackBatchSerializer(serializers.Serializer):
    records = FeedbackRecordSerializer(many=True)


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Records stored by this request.")
    duplicates = serializers.IntegerField(help_text="Records already stored (same request id).")


# --- monitoring: monitors, alerts, windows -------------------------------------------


class MonitorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField(source="model.name")
    environment = serializers.CharField()
    metric = serializers.CharField()
    op = serializers.CharField()
    value = serializers.FloatField()
    window = serializers.IntegerField(source="window_seconds", help_text="Seconds.")
    min_samples = serializers.IntegerField()
    enabled = serializers.BooleanField()
    created_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_created_by(self, obj) -> str | None:
        return _username(obj.created_by)


class MonitorWriteSerializer(serializers.Serializer):
    model = serializers.CharField(required=False, help_text="Required when creating.")
    environment = serializers.CharField(required=False)
    metric = serializers.ChoiceField(choices=list(MONITOR_METRICS), required=False)
    op = serializers.ChoiceField(choices=list(MONITOR_OPS), required=False)
    value = serializers.FloatField(required=False)
    window = serializers.IntegerField(required=False, help_text="Seconds.")
    min_samples = serializers.IntegerField(required=False, min_value=0)
    enabled = serializers.BooleanField(required=False)


class AlertSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    monitor = serializers.IntegerField(source="monitor_id")
    model = serializers.CharField(source="monitor.model.name")
    environment = serializers.CharField(source="monitor.environment")
    metric = serializers.CharField(source="monitor.metric")
    rule = serializers.SerializerMethodField()
    state = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    detail = serializers.DictField()
    fired_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)

    def get_rule(self, obj) -> str:
        return f"{obj.monitor.metric} {obj.monitor.op} {obj.monitor.value:g}"


class MonitoringWindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    environment = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    latency_ms = serializers.DictField()
    predictions = serializers.DictField()
    drift = serializers.DictField(
        help_text="{feature: {psi, test, statistic, p_value, drifted, baseline, live}}"
    )
    live_metrics = serializers.DictField()
    offline_metrics = serializers.DictField()
    labelled = serializers.IntegerField()


class VersionMonitoringSerializer(serializers.Serializer):
    baseline = serializers.DictField(allow_null=True)
    windows = MonitoringWindowSerializer(many=True)


class RescanRequestSerializer(serializers.Serializer):
    model = serializers.CharField(required=False, help_text="Only this model's versions.")


class RescanQueuedSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="Versions queued for a rescan.")
