"""Stored names checked again under today's rules: a one-off after the rules tightened.

Names written before (a model name ending in a newline, a file path with a zero-width
character, an NFKC-changing segment) stay stored, since nothing a user stored is changed
silently; this lists them so an administrator can rename, archive or delete them.
"""

from collections.abc import Iterator

from registry.errors import InvalidInput
from registry.models import Alias, ArtifactFile, Environment, RegisteredModel, VersionFile
from registry.storage.paths import validate_file_path

from . import validation


def _failure(check, value) -> str | None:
    try:
        check(value)
    except InvalidInput as exc:
        return exc.message
    return None


def stale_names() -> Iterator[tuple[str, str, str]]:
    """(what, where, why) for every stored name that today's validation refuses."""
    checks = [
        ("model", RegisteredModel.objects.values_list("name", "name"), validation.model_name),
        (
            "alias",
            Alias.objects.values_list("name", "model__name"),
            validation.alias_name,
        ),
        (
            "environment",
            Environment.objects.values_list("name", "name"),
            lambda n: validation.alias_name(n, "Environment"),
        ),
    ]
    for what, rows, check in checks:
        for name, where in rows.iterator():
            reason = _failure(check, name)
            if reason:
                yield what, f"{name!r} ({where})" if what == "alias" else repr(name), reason
    files = VersionFile.objects.values_list("path", "version__model__name", "version__number")
    for path, model, number in files.iterator():
        reason = _failure(validate_file_path, path)
        if reason:
            yield "file", f"{path!r} in {model} v{number}", reason
    for path in ArtifactFile.objects.values_list("path", flat=True).iterator():
        reason = _failure(validate_file_path, path)
        if reason:
            yield "artifact", repr(path), reason
