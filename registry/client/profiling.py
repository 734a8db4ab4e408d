"""Baselines and explanations, computed on the data scientist's machine for `modelgate push`.

`profile_csv` summarizes a CSV file (per column: type, count, missing, quantile bins and
mean/std/min/max for numbers, top-k for categories): only the summary is sent, the rows
never leave the machine. `explain` runs scikit-learn's `permutation_importance` on the
user's own model, loaded here in the CLI process; the server never loads a model.

numpy is needed for `--baseline` (the client-only install has it as its `baseline` extra;
the CLI imports this module only then); scikit-learn and joblib for `--explain` only (they
are what the model needs anyway). No Django here.
"""

import csv
import hashlib
import pickle
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

BASELINE_FORMAT = "modelgate-baseline/1"
EXPLANATIONS_FORMAT = "modelgate-explanations/1"
BINS = 10
TOP_K = 20
MAX_CATEGORY = 1000  # characters of a category value kept
MISSING = {"", "na", "n/a", "nan", "null", "none"}
EXPLAIN_ROWS = 5000  # permutation importance costs n_features x n_repeats predictions
N_REPEATS = 5
MODEL_PATTERNS = ("*.joblib", "*.pkl", "*.pickle")


class ProfilingError(ValueError):
    """The data or the model cannot be profiled; the message says why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, columns of raw strings)."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if not header or any(not name.strip() for name in header):
            raise ProfilingError(f"{path.name}: the first line must name every column.")
        if len(set(header)) != len(header):
            raise ProfilingError(f"{path.name}: column names must be unique.")
        columns: list[list[str]] = [[] for _ in header]
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ProfilingError(
                    f"{path.name}, line {line}: {len(row)} values for {len(header)} columns."
                )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    if not columns[0]:
        raise ProfilingError(f"{path.name} has no rows.")
    return [name.strip() for name in header], columns


def _numbers(values: list[str]) -> np.ndarray | None:
    """The column as floats (NaN where missing), or None if it is not numeric."""
    try:
        parsed = [np.nan if v.strip().lower() in MISSING else float(v) for v in values]
    except ValueError:
        return None
    array = np.asarray(parsed, dtype=float)
    return array if np.isfinite(array[~np.isnan(array)]).all() else None


def profile_values(values: list[Any], numeric: np.ndarray | None = None) -> dict[str, Any]:
    """One column's profile: numeric (quantile bins, moments) or categorical (top-k)."""
    count = len(values)
    if numeric is not None:
        present = numeric[~np.isnan(numeric)]
        profile: dict[str, Any] = {
            "type": "numeric",
            "count": count,
            "missing": int(count - present.size),
        }
        if present.size == 0:
            present = np.zeros(1)  # an all-missing column: one empty bin at 0
            counts = [0]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)))
        if edges.size == 1:  # a constant column: one bin
            edges = np.array([edges[0], edges[0]])
            counts = [int(np.count_nonzero(~np.isnan(numeric)))]
        else:
            # numpy's convention: [a, b) for each bin but the last, which is [a, b].
            counts = np.histogram(present, bins=edges)[0].tolist()
        profile.update(
            mean=float(np.mean(present)),
            std=float(np.std(present)),
            min=float(np.min(present)),
            max=float(np.max(present)),
            bins={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        )
        return profile
    texts = [str(v) for v in values]
    present = [t[:MAX_CATEGORY] for t in texts if t.strip().lower() not in MISSING]
    frequencies = Counter(present)
    top = frequencies.most_common(TOP_K)
    return {
        "type": "categorical",
        "count": count,
        "missing": count - len(present),
        "top": [{"value": value, "count": n} for value, n in top],
        "other": len(present) - sum(n for _, n in top),
        "distinct": len(frequencies),
    }


def profile_csv(path: Path, target: str | None = None) -> tuple[dict[str, Any], dict]:
    """The baseline of a CSV file, and the parsed columns (for `explain`)."""
    header, raw = read_csv(path)
    if target is not None and target not in header:
        raise ProfilingError(f"{path.name} has no column '{target}' (columns: {header}).")
    parsed = {name: (values, _numbers(values)) for name, values in zip(header, raw, strict=True)}
    features = [name for name in header if name != target]
    if not features:
        raise ProfilingError(f"{path.name} has no feature columns besides the target.")
    baseline: dict[str, Any] = {
        "format": BASELINE_FORMAT,
        "source": {"name": path.name, "rows": len(raw[0]), "sha256": _sha256(path)},
        "columns": features,
        "features": {name: profile_values(*parsed[name]) for name in features},
    }
    if target is not None:
        baseline["target_name"] = target
        baseline["target"] = profile_values(*parsed[target])
    return baseline, parsed


def find_model(directory: Path) -> Path:
    found = sorted(p for pattern in MODEL_PATTERNS for p in directory.rglob(pattern))
    if not found:
        raise ProfilingError(f"--explain: no .joblib, .pkl or .pickle model under {directory}.")
    return min(found, key=lambda p: (len(p.parts), str(p)))


def load_model(path: Path) -> Any:
    """The user's own model, from their own disk: loading it is theirs to trust."""
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    with path.open("rb") as stream:
        return pickle.load(stream)  # noqa: S301 - the user's own file, on their machine


def _matrix(parsed: dict, columns: list[str]) -> np.ndarray:
    """Features as the model takes them: floats, or objects when a column is text."""
    if all(parsed[name][1] is not None for name in columns):
        return np.column_stack([parsed[name][1] for name in columns])
    cells = [
        parsed[name][1] if parsed[name][1] is not None else np.asarray(parsed[name][0], object)
        for name in columns
    ]
    return np.column_stack([np.asarray(column, dtype=object) for column in cells])


def _model_columns(model: Any, features: list[str]) -> list[str]:
    wanted = [str(name) for name in getattr(model, "feature_names_in_", [])]
    if not wanted:
        return features
    missing = set(wanted) - set(features)
    if missing:
        raise ProfilingError(f"--explain: the data lacks the model's features {sorted(missing)}.")
    return wanted


def explain(model: Any, baseline: dict, parsed: dict, target: str | None) -> dict[str, Any]:
    """Permutation importance of each feature, on (a sample of) the baseline data; without a
    target, against the model's own predictions (how much each feature moves them)."""
    try:
        from sklearn.base import is_classifier
        from sklearn.inspection import permutation_importance
    except ImportError:
        raise ProfilingError("--explain needs scikit-learn installed.") from None
    columns = _model_columns(model, baseline["columns"])
    features = _matrix(parsed, columns)
    rng = np.random.default_rng(0)
    rows = np.arange(features.shape[0])
    if rows.size > EXPLAIN_ROWS:
        rows = np.sort(rng.choice(rows, EXPLAIN_ROWS, replace=False))
    features = features[rows]
    with warnings.catch_warnings():
        # A model fitted on a DataFrame warns about a plain array; the columns are in order.
        warnings.filterwarnings("ignore", message=".*feature names.*")
        try:
            predictions = model.predict(features)
            if target is None:
                truth = predictions
            else:
                values, numeric = parsed[target]
                truth = numeric if numeric is not None else np.asarray(values, dtype=object)
                truth = truth[rows]
                classes = getattr(model, "classes_", None)
                if classes is not None:
                    truth = truth.astype(np.asarray(classes).dtype)
            result = permutation_importance(
                model, features, truth, n_repeats=N_REPEATS, random_state=0
            )
        except (ValueError, TypeError) as exc:
            raise ProfilingError(f"--explain: the model could not score the data: {exc}") from None
    classifier = is_classifier(model)
    baseline["prediction"] = profile_values(
        [str(p) if classifier else p for p in predictions],
        None if classifier else np.asarray(predictions, dtype=float),
    )
    source = baseline["source"]
    explanations: dict[str, Any] = {
        "format": EXPLANATIONS_FORMAT,
        "method": "permutation_importance",
        "scoring": "accuracy" if classifier else "r2",  # what model.score() computes
        "n_repeats": N_REPEATS,
        "data": {"name": source["name"], "rows": int(rows.size), "sha256": source["sha256"]},
        "features": {
            name: {"importance": float(mean), "std": float(std)}
            for name, mean, std in zip(
                columns, result.importances_mean, result.importances_std, strict=True
            )
        },
    }
    if target is not None:
        explanations["target_name"] = target
    return explanations


def for_push(
    directory: Path, data: Path, target: str | None, with_explanations: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(baseline, explanations or None) for `modelgate push DIR --baseline DATA`."""
    baseline, parsed = profile_csv(data, target)
    if not with_explanations:
        return baseline, None
    model = load_model(find_model(directory))
    return baseline, explain(model, baseline, parsed, target)
