"""The registry's domain: models, versions, files, aliases, the audit log and API tokens.

Writes go through `registry.services`; these classes hold data and invariants only.
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from registry.names import MAX_MODEL_NAME, validate_model_name

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}\Z"
TEAM_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}\Z"

alias_validator = RegexValidator(ALIAS_PATTERN)
team_name_validator = RegexValidator(TEAM_NAME_PATTERN)

# Where upgrades put the models that existed before teams (migration 0014).
DEFAULT_TEAM = "default"


class Team(models.Model):
    """A group of people (and service accounts) that owns models."""

    name = models.CharField(max_length=64, unique=True, validators=[team_name_validator])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        CONTRIBUTOR = "contributor"
        MAINTAINER = "maintainer"

    class Source(models.TextChoices):
        LOCAL = "local"  # granted in Modelgate by a maintainer or an admin
        SSO = "sso"  # read from the identity provider's group claim at sign-in

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LOCAL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "user"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ServiceAccount(models.Model):
    """A user without a password, owned by a team, for CI jobs and serving deployments:
    it acts only through its tokens, and its actions are audited under its own name."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_account"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="service_accounts")
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} ({self.team})"


class RegisteredModel(models.Model):
    class Visibility(models.TextChoices):
        TEAM = "team"  # the team's members, those granted access, and admins
        INTERNAL = "internal"  # every signed-in user may read it

    # Case-preserving and case-sensitive, as in MLflow; two names differing only in letter
    # case cannot both exist (the constraint below), so one never passes for the other.
    name = models.CharField(
        max_length=MAX_MODEL_NAME, unique=True, validators=[validate_model_name]
    )
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="models")
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.TEAM
    )
    # The metric charts and `metric_not_worse` gates use; empty means "the first one".
    primary_metric = models.CharField(max_length=250, blank=True)
    # Highest version number ever handed out; bumped under a row lock, never decreased.
    last_version_number = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="model_name_unique_ignoring_case")
        ]

    def __str__(self) -> str:
        return self.name


class ModelGrant(models.Model):
    """Access to one model for another team or one user, given by its maintainers.
    MLflow's per-model READ, EDIT and MANAGE are read, write and manage."""

    class Level(models.TextChoices):
        READ = "read"
        WRITE = "write"
        MANAGE = "manage"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="grants")
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="model_grants"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="model_grants",
    )
    level = models.CharField(max_length=8, choices=Level.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(team__isnull=True) ^ models.Q(user__isnull=True),
                name="grant_to_a_team_or_a_user",
            ),
            models.UniqueConstraint(
                fields=["model", "team"],
                condition=models.Q(team__isnull=False),
                name="one_grant_per_model_and_team",
            ),
            models.UniqueConstraint(
                fields=["model", "user"],
                condition=models.Q(user__isnull=False),
                name="one_grant_per_model_and_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.level} on {self.model} for {self.grantee}"

    @property
    def grantee(self) -> str:
        return f"team {self.team.name}" if self.team_id else f"user {self.user.get_username()}"


class ModelVersion(models.Model):
    class State(models.TextChoices):
        UPLOADING = "uploading"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"
        # The scan found a dangerous import: never latest, no alias, no package, and no
        # download but an admin's explicit, audited one.
        QUARANTINED = "quarantined"
        ARCHIVED = "archived"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.UPLOADING)
    status_reason = models.TextField(blank=True)
    description = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True)
    signature = models.JSONField(null=True, blank=True)
    framework = models.CharField(max_length=64, blank=True)
    model_card = models.TextField(blank=True)
    scan_status = models.CharField(max_length=16, blank=True)
    scan_findings = models.JSONField(default=list, blank=True)
    # Each file's own verdict and the formats recognised in it: {path: {"status", "formats"}}.
    scan_files = models.JSONField(default=dict, blank=True)
    scanned_at = models.DateTimeField(null=True, blank=True)
    package_state = models.CharField(max_length=16, default="none")
    package_sha256 = models.CharField(max_length=64, blank=True)
    package_size = models.BigIntegerField(null=True, blank=True)
    requirements = models.JSONField(default=list, blank=True)
    # What the extract step read from known files (MLmodel, ONNX graph, ...).
    extracted = models.JSONField(default=dict, blank=True)
    # Progress of the worker pipeline, e.g. {"verify": "done", "scan": "running"}.
    pipeline = models.JSONField(default=dict, blank=True)
    git_commit = models.CharField(max_length=40, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    # Monitoring: a profile of the training/evaluation data and global feature importance,
    # computed on the data scientist's machine (schemas in registry.services.monitoring).
    baseline = models.JSONField(null=True, blank=True)
    explanations = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique"),
        ]
        indexes = [
            models.Index(fields=["model", "state"], name="version_model_state"),
            models.Index(fields=["model", "created_at"], name="version_model_created"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}/{self.number}"

    @property
    def is_finalized(self) -> bool:
        return self.state != self.State.UPLOADING


class VersionFile(models.Model):
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=512)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    # Upload progress: bytes accepted so far, and the store's staging id while in flight.
    received = models.BigIntegerField(default=0)
    upload_id = models.CharField(max_length=32, blank=True)
    complete = models.BooleanField(default=False)
    # Who uploaded these bytes: the version's creator, or for a version made from an MLflow
    # artifact folder (or another version), whoever wrote the file there.
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="version_file_path_unique"),
        ]

    def __str__(self) -> str:
        return self.path


class ArtifactFile(models.Model):
    """A file uploaded through MLflow's artifact endpoints, not yet part of a version.

    `create_model_version` turns the files under a folder of these into a version; the
    bytes stay in the blob store under their sha256, like every version file.
    """

    path = models.CharField(max_length=512, unique=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class Alias(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=64, validators=[alias_validator])
    # RESTRICT: a version an alias points at cannot be deleted on its own.
    version = models.ForeignKey(ModelVersion, on_delete=models.RESTRICT, related_name="aliases")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["model", "name"], name="alias_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AppendOnlyError(Exception):
    pass


class Event(models.Model):
    """An audit record, written in the same transaction as the change it describes."""

    type = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Names are copied so the record outlives a deleted user or model.
    actor_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(default=timezone.now)
    model = models.ForeignKey(
        RegisteredModel, null=True, on_delete=models.SET_NULL, related_name="events"
    )
    model_name = models.CharField(max_length=MAX_MODEL_NAME, blank=True)
    version_number = models.PositiveIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["model_name", "-id"], name="event_model"),
            models.Index(fields=["type", "-id"], name="event_type"),
            models.Index(fields=["at"], name="event_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} by {self.actor_name} at {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise AppendOnlyError("Events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Events are append-only.")


class ApiToken(models.Model):
    """A bearer token. Only the sha256 of its secret is stored; the secret is shown once."""

    SCOPES = ("read", "write", "review", "admin", "ingest")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # An `ingest` token is bound to one model (and optionally one environment) and can only
    # write prediction records and feedback for it.
    model = models.ForeignKey(
        RegisteredModel,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="ingest_tokens",
    )
    environment = models.CharField(max_length=64, blank=True)
    # The token that minted this one, if any: a child never outlives it nor holds a scope it
    # lacks, and revoking it revokes every descendant.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    # Limits on where the token acts, within its user's own access: the models of these
    # teams and these models. Both empty: wherever its user may.
    limit_teams = models.ManyToManyField(Team, blank=True, related_name="+")
    limit_models = models.ManyToManyField(RegisteredModel, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    def limit_ids(self) -> tuple[frozenset[int], frozenset[int]]:
        """(team ids, model ids) the token is limited to, read once per instance: fixed at
        creation, so safe to keep with a cached token."""
        if not hasattr(self, "_limit_ids"):
            self._limit_ids = (
                frozenset(self.limit_teams.values_list("pk", flat=True)),
                frozenset(self.limit_models.values_list("pk", flat=True)),
            )
        return self._limit_ids

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class Environment(models.Model):
    """A protected alias name with a promotion policy (e.g. staging, production)."""

    name = models.CharField(max_length=64, unique=True, validators=[alias_validator])
    description = models.TextField(blank=True)
    # Approvals needed from members of `reviewer_group` (admins count as such), and from
    # the maintainers of the model's team: different people, never the requester.
    required_approvals = models.PositiveSmallIntegerField(default=1)
    reviewer_group = models.CharField(max_length=150, default="reviewers")
    maintainer_approvals = models.PositiveSmallIntegerField(default=0)
    allow_self_approval = models.BooleanField(default=False)
    gates = models.JSONField(default=list, blank=True)
    # Pickle globals ("module.name") this environment accepts beyond the scanner's own
    # allow-list: a version whose only findings are these passes its scan gate here.
    allowed_globals = models.JSONField(default=list, blank=True)
    # The serving side's identity: traffic counts as `healthy_in` evidence here only from
    # ingest tokens bound to this environment and held by an admin or a member of this
    # group (never by the version's own creator).
    deploy_group = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Promotion(models.Model):
    """A request to point an environment at a version, with its reviews and gate results."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        PROMOTING = "promoting"
        PROMOTED = "promoted"
        BLOCKED = "blocked"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        FAILED = "failed"

    OPEN_STATES = (State.PENDING, State.APPROVED, State.PROMOTING)

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="promotions")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="promotions"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    comment = models.TextField(blank=True)
    gates = models.JSONField(default=list, blank=True)
    status_reason = models.TextField(blank=True)
    # The version that was live when the promotion executed, and the n of the Git tag.
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sequence = models.PositiveIntegerField(null=True, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    git_tag = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "environment"],
                condition=models.Q(state__in=["pending", "approved", "promoting"]),
                name="one_open_promotion_per_version_and_environment",
            ),
            models.UniqueConstraint(
                fields=["model", "environment", "sequence"], name="promotion_sequence_unique"
            ),
        ]
        indexes = [models.Index(fields=["state", "environment"], name="promotion_state_env")]

    def __str__(self) -> str:
        return f"{self.model.name}/{self.version.number} -> {self.environment.name} ({self.state})"


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewer_name = models.CharField(max_length=150)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["promotion", "reviewer"], name="one_review_per_reviewer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.reviewer_name}: {self.decision}"


class Job(models.Model):
    """Background work keyed by (kind, ref_id): queued, then run under a renewable lease.

    The row is written in the same transaction as the change that needs the work, so a
    message lost on the way to the broker, or a worker killed mid-task, is found again by
    the reconciler and re-sent; the lease keeps two workers from running it at once.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    kind = models.CharField(max_length=32)
    ref_id = models.BigIntegerField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(default=timezone.now)
    # When the reconciler re-sends a still-queued job (its message may be lost); pushed
    # further out after each re-send, so a long backlog is not flooded with duplicates.
    resend_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Asked for again while running: queued once more when this run ends.
    rerun = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "ref_id"], name="job_unique")]
        indexes = [
            models.Index(fields=["state", "enqueued_at"], name="job_state"),
            models.Index(fields=["state", "resend_at"], name="job_resend"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref_id} ({self.state})"


class Webhook(models.Model):
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=200)
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return self.active and ("*" in self.events or event_type in self.events)


class WebhookDelivery(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Every attempt: {"at", "status", "error", "duration_ms"}.
    attempts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event"], name="one_delivery_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.event.type} -> {self.webhook.url} ({self.state})"


# --- monitoring ------------------------------------------------------------------------


class PredictionRecord(models.Model):
    """One prediction captured by a serving process, written by an ingest token.

    On Postgres the table is range-partitioned by day of `at` (migration 0005 creates it,
    `registry.services.monitoring.partitions` adds days), so retention drops whole days.
    No foreign key constraint: inserts stay cheap and a deleted model does not cascade
    through millions of rows; retention removes them.
    """

    model = models.ForeignKey(
        RegisteredModel, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    version_number = models.PositiveIntegerField()
    environment = models.CharField(max_length=64)
    request_id = models.CharField(max_length=128)
    at = models.DateTimeField()
    inputs = models.JSONField(default=dict)
    outputs = models.JSONField(default=dict)
    latency_ms = models.FloatField(null=True)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    token_id = models.BigIntegerField(null=True)  # the ingest token that wrote it (no FK)

    class Meta:
        constraints = [
            # Idempotency: a re-sent record (same request id and time) is stored once. The
            # partition key must be part of any unique constraint of a partitioned table.
            models.UniqueConstraint(
                fields=["model", "request_id", "at"], name="prediction_request_unique"
            ),
        ]
        indexes = [
            # What aggregation reads: one version in one environment over a time window.
            models.Index(
                fields=["model", "version_number", "environment", "at"], name="prediction_window"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.model_id}/{self.version_number}, {self.environment})"


class PredictionFeedback(models.Model):
    """Ground truth for one prediction, joined to it by (model, request_id)."""

    model = models.ForeignKey(
        RegisteredModel, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    request_id = models.CharField(max_length=128)
    label = models.JSONField(null=True)  # a class label (string, number or boolean)
    value = models.FloatField(null=True)  # a regression target
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "request_id"], name="feedback_request_unique")
        ]
        indexes = [models.Index(fields=["at"], name="feedback_at")]

    def __str__(self) -> str:
        return f"feedback {self.request_id}"


class MonitoringWindow(models.Model):
    """Prediction records of one version in one environment, rolled up over [start, end).

    Written by the aggregation task (registry.services.monitoring.aggregation), recomputed
    whole when late records arrive. `drift` holds, per feature, the PSI, the statistical
    test and the live counts in the baseline's own bins / categories.
    """

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=64)
    start = models.DateTimeField()
    end = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    latency_p50 = models.FloatField(null=True)
    latency_p95 = models.FloatField(null=True)
    latency_p99 = models.FloatField(null=True)
    predictions = models.JSONField(default=dict)
    drift = models.JSONField(default=dict)
    live_metrics = models.JSONField(default=dict)
    labelled = models.PositiveIntegerField(default=0)
    # {ingest token id: [requests, errors]}: who vouches for this traffic (healthy_in gate).
    sources = models.JSONField(default=dict)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["start"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "environment", "start"], name="monitoring_window_unique"
            )
        ]
        indexes = [
            models.Index(fields=["model", "environment", "start"], name="monitoring_window_env"),
            models.Index(fields=["computed_at"], name="monitoring_window_computed"),
        ]

    def __str__(self) -> str:
        return f"{self.version} in {self.environment} from {self.start:%Y-%m-%d %H:%M:%S}"


class Monitor(models.Model):
    """A threshold rule on a model's windows in one environment, e.g. error_rate > 0.01."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="monitors")
    environment = models.CharField(max_length=64, validators=[alias_validator])
    metric = models.CharField(max_length=64)
    op = models.CharField(max_length=2)
    value = models.FloatField()
    window_seconds = models.PositiveIntegerField()
    min_samples = models.PositiveIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["model", "environment"], name="monitor_model_env")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.environment}: {self.metric} {self.op} {self.value:g}"


class Alert(models.Model):
    """One stretch of time during which a monitor's condition held: fired once, resolved once."""

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(max_length=16, choices=State.choices, default=State.FIRING)
    value = models.FloatField(null=True)  # the metric when it fired (None: no data at all)
    # What the value was computed from: window span, samples, versions, worst feature.
    detail = models.JSONField(default=dict, blank=True)
    fired_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["monitor"],
                condition=models.Q(state="firing"),
                name="one_firing_alert_per_monitor",
            )
        ]
        indexes = [models.Index(fields=["state", "fired_at"], name="alert_state_fired")]

    def __str__(self) -> str:
        return f"{self.monitor} ({self.state})"


# --- MLflow tracking -------------------------------------------------------------------
#
# What `mlflow.start_run()`, autolog and `log_model` write, kept so that a version can be
# registered from a run or a logged model (registry.services.tracking). Artifacts are
# `ArtifactFile`s under `experiments/<id>/...`, in the same content-addressed store.


class Experiment(models.Model):
    """MLflow's experiment, owned by a team: its readers read its runs, writers write."""

    class Stage(models.TextChoices):
        ACTIVE = "active"
        DELETED = "deleted"

    # pk 0 is MLflow's "Default" experiment, created on first use.
    name = models.CharField(max_length=500, unique=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="experiments")
    tags = models.JSONField(default=dict, blank=True)
    lifecycle_stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    class Status(models.TextChoices):
        RUNNING = "RUNNING"
        SCHEDULED = "SCHEDULED"
        FINISHED = "FINISHED"
        FAILED = "FAILED"
        KILLED = "KILLED"

    id = models.CharField(max_length=32, primary_key=True)  # uuid4 hex, as MLflow's
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=250, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    start_time = models.BigIntegerField(null=True, blank=True)  # ms since the epoch
    end_time = models.BigIntegerField(null=True, blank=True)
    lifecycle_stage = models.CharField(max_length=8, default="active")
    tags = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    # Logged models used and produced: [{"model_id"}], [{"model_id", "step"}].
    model_inputs = models.JSONField(default=list, blank=True)
    model_outputs = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-start_time", "id"]
        indexes = [models.Index(fields=["experiment", "start_time"], name="run_experiment_start")]

    def __str__(self) -> str:
        return self.id


class RunMetric(models.Model):
    """One logged value; a run's metric is its latest (highest step, then time, then value)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_values")
    key = models.CharField(max_length=250)
    value = models.FloatField()
    timestamp = models.BigIntegerField()
    step = models.BigIntegerField(default=0)
    model_id = models.CharField(max_length=40, blank=True)  # a logged model it measures
    dataset_name = models.CharField(max_length=500, blank=True)
    dataset_digest = models.CharField(max_length=36, blank=True)

    class Meta:
        ordering = ["run", "key", "step", "timestamp", "value"]
        indexes = [models.Index(fields=["run", "key"], name="run_metric_key")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class RunDataset(models.Model):
    """A dataset a run logged as an input (log_inputs): its description, never its rows."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=500)
    digest = models.CharField(max_length=36)
    source_type = models.CharField(max_length=36, blank=True)
    source = models.TextField(blank=True)
    schema = models.TextField(blank=True)
    profile = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name", "digest"], name="run_dataset_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.digest})"


class LoggedModel(models.Model):
    """MLflow 3's logged model (`models:/m-<id>`): files under its own artifact folder."""

    class Status(models.TextChoices):
        PENDING = "LOGGED_MODEL_PENDING"
        READY = "LOGGED_MODEL_READY"
        UPLOAD_FAILED = "LOGGED_MODEL_UPLOAD_FAILED"

    id = models.CharField(max_length=40, primary_key=True)  # "m-" + uuid4 hex
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="logged_models"
    )
    name = models.CharField(max_length=250)
    source_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="logged_models"
    )
    model_type = models.CharField(max_length=250, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    deleted = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return self.id
