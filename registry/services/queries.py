"""Read-side filters shared by the API and the web UI."""

import re
from collections import defaultdict

from django.db.models import FloatField, QuerySet
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast

from registry.errors import InvalidInput
from registry.models import Alias, ModelVersion

# What a version summary shows: a list fetches these, not the big JSON columns.
SUMMARY_FIELDS = (
    "model",
    "model__name",
    "number",
    "state",
    "status_reason",
    "description",
    "metrics",
    "params",
    "tags",
    "created_by",
    "created_by__username",
    "created_at",
    "updated_at",
)


def attach_alias_names(versions: list[ModelVersion]) -> None:
    """Sets `alias_names` on each version with one query (cheaper than prefetching)."""
    names = defaultdict(list)
    ids = [v.pk for v in versions]
    rows = Alias.objects.filter(version__in=ids).order_by().values_list("version_id", "name")
    for version_id, name in rows:
        names[version_id].append(name)
    for version in versions:
        version.alias_names = names[version.pk]


_METRIC = re.compile(
    r"^(?P<name>[A-Za-z0-9_.\-/: ]+?)\s*(?P<op>>=|<=|==|!=|>|<|=)\s*(?P<value>-?[0-9.eE+\-]+)$"
)
_LOOKUPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "=": "exact", "==": "exact"}


def parse_tag_filters(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for raw in values:
        key, sep, value = raw.partition(":")
        if not sep or not key:
            raise InvalidInput("Tag filters look like 'tag=key:value'.", {"tag": raw})
        pairs.append((key, value))
    return pairs


def filter_tags(queryset: QuerySet, field: str, values: list[str]) -> QuerySet:
    # KeyTransform takes the key literally, so a key like "a__gt" is not read as a lookup.
    for index, (key, value) in enumerate(parse_tag_filters(values)):
        alias = f"_tag_{index}"
        queryset = queryset.alias(**{alias: KeyTransform(key, field)}).filter(**{alias: value})
    return queryset


def filter_metrics(queryset: QuerySet, values: list[str]) -> QuerySet:
    """`metric=accuracy>=0.9` filters; several are combined with AND."""
    for index, raw in enumerate(values):
        match = _METRIC.match(raw.strip())
        try:
            number = float(match["value"]) if match else None
        except ValueError:
            number = None
        if match is None or number is None:
            raise InvalidInput(
                "Metric filters look like 'metric=accuracy>=0.9' (ops: >= <= > < = !=).",
                {"metric": raw},
            )
        alias = f"_metric_{index}"
        queryset = queryset.alias(
            **{alias: Cast(KeyTextTransform(match["name"], "metrics"), FloatField())}
        )
        if match["op"] == "!=":
            queryset = queryset.exclude(**{alias: number}).filter(**{f"{alias}__isnull": False})
        else:
            queryset = queryset.filter(**{f"{alias}__{_LOOKUPS[match['op']]}": number})
    return queryset
