"""Side-by-side comparison of versions: metric deltas, params, signature and file diffs.

The first version is the baseline (on the review page: the version live now); every
other column is compared with it. Used by the compare page and the review page.
"""

from dataclasses import dataclass, field

from registry.models import ModelVersion
from registry.services.gates import lower_is_better


@dataclass
class Row:
    name: str
    values: list
    changed: bool = False
    # Per column after the baseline: the numeric delta and whether it is an improvement.
    deltas: list = field(default_factory=list)
    better: list = field(default_factory=list)
    status: str = ""  # files: same | changed | added | removed


def _metric_rows(versions: list[ModelVersion]) -> list[Row]:
    names = sorted({name for v in versions for name in v.metrics})
    rows = []
    for name in names:
        values = [v.metrics.get(name) for v in versions]
        base, lower = values[0], lower_is_better(name)
        deltas, better = [], []
        for value in values[1:]:
            if base is None or value is None:
                deltas.append(None)
                better.append(None)
                continue
            delta = value - base
            deltas.append(delta)
            better.append(None if delta == 0 else (delta < 0) == lower)
        rows.append(Row(name, values, len(set(values)) > 1, deltas, better))
    return rows


def _map_rows(mappings: list[dict]) -> list[Row]:
    names = sorted({name for mapping in mappings for name in mapping})
    return [
        Row(n, [m.get(n) for m in mappings], len({str(m.get(n)) for m in mappings}) > 1)
        for n in names
    ]


def _signature_rows(versions: list[ModelVersion], part: str) -> list[Row]:
    def fields(version):
        signature = version.signature or {}
        return {
            str(item.get("name", index)): item.get("type")
            for index, item in enumerate(signature.get(part) or [])
        }

    return _map_rows([fields(v) for v in versions])


def _file_rows(versions: list[ModelVersion]) -> list[Row]:
    listings = [{f.path: f for f in v.files.all()} for v in versions]
    rows = []
    for path in sorted({p for listing in listings for p in listing}):
        present = [listing.get(path) for listing in listings]
        digests = [f.sha256 if f else None for f in present]
        base = digests[0]
        if base is None:
            status = "added"
        elif any(d is None for d in digests[1:]):
            status = "removed"
        elif any(d != base for d in digests[1:]):
            status = "changed"
        else:
            status = "same"
        rows.append(Row(path, present, status != "same", status=status))
    return rows


def compare(versions: list[ModelVersion]) -> dict:
    """Rows for each section; each row has one value per version, baseline first."""
    return {
        "versions": versions,
        "metrics": _metric_rows(versions),
        "params": _map_rows([v.params for v in versions]),
        "inputs": _signature_rows(versions, "inputs"),
        "outputs": _signature_rows(versions, "outputs"),
        "files": _file_rows(versions),
    }
