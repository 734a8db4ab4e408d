"""Upgrading to teams loses no access: migration 0014 on a database that predates it."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE, AFTER = ("registry", "0013_job_rerun"), ("registry", "0014_teams")


@pytest.mark.django_db(transaction=True)
def test_existing_models_go_to_the_default_team_and_contributors_keep_writing():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE]).apps
    User, Group = old.get_model("auth", "User"), old.get_model("auth", "Group")
    writer = User.objects.create(username="writer")
    User.objects.create(username="onlooker")
    Group.objects.get_or_create(name="contributors")[0].user_set.add(writer)
    old.get_model("registry", "RegisteredModel").objects.create(name="legacy", owner_team="risk")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([AFTER])
    call_command("migrate", verbosity=0)  # and the rest, as an upgrade would

    from django.contrib.auth.models import Group as NewGroup
    from django.contrib.auth.models import User as NewUser

    from registry.models import RegisteredModel
    from registry.services import access

    model = RegisteredModel.objects.get(name="legacy")
    assert (model.team.name, model.visibility) == ("default", "internal")
    assert access.can(NewUser.objects.get(username="writer"), model, access.WRITE)
    onlooker = NewUser.objects.get(username="onlooker")
    assert access.can(onlooker, model, access.READ)
    assert not access.can(onlooker, model, access.WRITE)
    assert not NewGroup.objects.filter(name="contributors").exists()
