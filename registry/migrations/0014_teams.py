"""Teams own models. Upgrading loses no access: every existing model moves to the
`default` team as `internal` (everyone signed in still reads it), and each member of the
old global `contributors` group becomes a contributor of that team; the group goes."""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

DEFAULT_TEAM = "default"


def into_default_team(apps, schema_editor):
    Team = apps.get_model("registry", "Team")
    TeamMembership = apps.get_model("registry", "TeamMembership")
    RegisteredModel = apps.get_model("registry", "RegisteredModel")
    Group = apps.get_model("auth", "Group")
    team, _ = Team.objects.get_or_create(
        name=DEFAULT_TEAM, defaults={"description": "The models that predate teams."}
    )
    RegisteredModel.objects.filter(team__isnull=True).update(team=team, visibility="internal")
    group = Group.objects.filter(name="contributors").first()
    if group is not None:
        for user_id in group.user_set.values_list("pk", flat=True):
            TeamMembership.objects.get_or_create(
                team=team, user_id=user_id, defaults={"role": "contributor"}
            )
        group.delete()


def back_to_groups(apps, schema_editor):
    TeamMembership = apps.get_model("registry", "TeamMembership")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name="contributors")
    writers = TeamMembership.objects.exclude(role="viewer").values_list("user_id", flat=True)
    group.user_set.add(*set(writers))


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0013_job_rerun"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.CreateModel(
            name="Team",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        max_length=64,
                        unique=True,
                        validators=[
                            django.core.validators.RegexValidator("^[a-z0-9][a-z0-9-]{0,63}\\Z")
                        ],
                    ),
                ),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.CreateModel(
            name="TeamMembership",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "role",
                    models.CharField(
                        choices=[
                            ("viewer", "Viewer"),
                            ("contributor", "Contributor"),
                            ("maintainer", "Maintainer"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "source",
                    models.CharField(
                        choices=[("local", "Local"), ("sso", "Sso")], default="local", max_length=8
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "team",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="registry.team",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="team_memberships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["team", "user"],
                "constraints": [
                    models.UniqueConstraint(fields=("team", "user"), name="one_membership_per_team")
                ],
            },
        ),
        migrations.CreateModel(
            name="ServiceAccount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="service_accounts",
                        to="registry.team",
                    ),
                ),
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="service_account",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="registeredmodel",
            name="team",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="models",
                to="registry.team",
            ),
        ),
        migrations.AddField(
            model_name="registeredmodel",
            name="visibility",
            field=models.CharField(
                choices=[("team", "Team"), ("internal", "Internal")], default="team", max_length=16
            ),
        ),
        migrations.RunPython(into_default_team, back_to_groups),
        migrations.AlterField(
            model_name="registeredmodel",
            name="team",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="models",
                to="registry.team",
            ),
        ),
        migrations.RemoveField(model_name="registeredmodel", name="owner_team"),
        migrations.CreateModel(
            name="ModelGrant",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "level",
                    models.CharField(
                        choices=[("read", "Read"), ("write", "Write"), ("manage", "Manage")],
                        max_length=8,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "model",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="grants",
                        to="registry.registeredmodel",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="model_grants",
                        to="registry.team",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="model_grants",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["model", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("team__isnull", True))
                        ^ models.Q(("user__isnull", True)),
                        name="grant_to_a_team_or_a_user",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("team__isnull", False)),
                        fields=("model", "team"),
                        name="one_grant_per_model_and_team",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("user__isnull", False)),
                        fields=("model", "user"),
                        name="one_grant_per_model_and_user",
                    ),
                ],
            },
        ),
        migrations.AddField(
            model_name="apitoken",
            name="limit_teams",
            field=models.ManyToManyField(blank=True, related_name="+", to="registry.team"),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="limit_models",
            field=models.ManyToManyField(
                blank=True, related_name="+", to="registry.registeredmodel"
            ),
        ),
        migrations.AddField(
            model_name="environment",
            name="maintainer_approvals",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
