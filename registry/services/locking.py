"""Row locks that cannot deadlock through joins.

A plain `select_for_update()` with `select_related()` makes Postgres lock every joined
row (the version's model, the promotion's environment, ...), so two services locking
different rows of a join in different orders deadlock. We lock only the queried table's
rows, and with FOR NO KEY UPDATE, which does not block inserts that merely reference
them (events and aliases pointing at a model). SQLite ignores row locks altogether.
"""

from django.db.models import Model, QuerySet


def for_update(source: type[Model] | QuerySet) -> QuerySet:
    queryset = source if isinstance(source, QuerySet) else source.objects.all()
    return queryset.select_for_update(of=("self",), no_key=True)
