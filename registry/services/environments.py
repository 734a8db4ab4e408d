"""Environments: protected aliases that only a promotion may move."""

from registry.models import Environment, RegisteredModel


def is_protected(alias: str) -> bool:
    return Environment.objects.filter(name=alias).exists()


def live_environments(model: RegisteredModel) -> list[str]:
    """Names of the environments that currently point at one of the model's versions."""
    names = Environment.objects.values_list("name", flat=True)
    return sorted(model.aliases.filter(name__in=names).values_list("name", flat=True))
