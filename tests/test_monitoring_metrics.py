"""Live quality metrics of a monitoring window, computed in numpy (the server's runtime
has no scikit-learn), checked against sklearn.metrics as the oracle on random data."""

import math
import random

import pytest

from registry.services.monitoring.aggregation import live_metrics

metrics = pytest.importorskip("sklearn.metrics")


def rows_of(predicted, truth):
    """Rows as `_labelled` returns them: (prediction text, number, label text, value)."""
    return [(p, None, t, None) for p, t in zip(predicted, truth, strict=True)]


def oracle(predicted, truth) -> dict[str, float]:
    classes = set(predicted) | set(truth)
    binary = classes <= {"0", "1"} or classes <= {"false", "true"}
    positive = "1" if classes <= {"0", "1"} else "true"
    f1 = (
        metrics.f1_score(truth, predicted, average="binary", pos_label=positive, zero_division=0)
        if binary
        else metrics.f1_score(truth, predicted, average="macro", zero_division=0)
    )
    return {
        "accuracy": round(float(metrics.accuracy_score(truth, predicted)), 6),
        "f1": round(float(f1), 6),
    }


@pytest.mark.parametrize(
    "classes",
    [["0", "1"], ["false", "true"], ["a", "b", "c"], ["0", "1", "2", "3", "4"], ["1"], ["0"]],
)
@pytest.mark.parametrize("seed", range(20))
def test_classification_metrics_match_sklearn(classes, seed):
    rng = random.Random(f"{seed}-{classes}")
    n = rng.choice([1, 2, 5, 37, 500])
    truth = [rng.choice(classes) for _ in range(n)]
    # Mostly right, sometimes wrong, so every kind of TP/FP/FN mix shows up.
    skill = rng.random()
    predicted = [t if rng.random() < skill else rng.choice(classes) for t in truth]
    found, labelled = live_metrics(rows_of(predicted, truth))
    assert found == oracle(predicted, truth)
    assert labelled == n


@pytest.mark.parametrize(
    ("predicted", "truth"),
    [
        (["0", "0", "0"], ["0", "0", "0"]),  # no positives anywhere: F1 0 (zero_division)
        (["1", "1"], ["0", "0"]),
        (["0", "0"], ["1", "1"]),
        (["true"], ["false"]),
        (["cat", "dog"], ["dog", "bird"]),  # a class only predicted, one only labelled
        (["0", "1", "2"], ["2", "1", "0"]),  # three numeric classes: macro, not binary
    ],
)
def test_edge_cases_match_sklearn(predicted, truth):
    found, _ = live_metrics(rows_of(predicted, truth))
    assert found == oracle(predicted, truth)


@pytest.mark.parametrize("seed", range(20))
def test_regression_metrics_match_sklearn(seed):
    rng = random.Random(seed)
    n = rng.choice([1, 3, 100, 1000])
    values = [rng.gauss(0, 10) for _ in range(n)]
    predictions = [v + rng.gauss(0, rng.random() * 5) for v in values]
    found, labelled = live_metrics(
        [(None, p, None, v) for p, v in zip(predictions, values, strict=True)]
    )
    mae = metrics.mean_absolute_error(values, predictions)
    rmse = math.sqrt(metrics.mean_squared_error(values, predictions))
    assert found == {"mae": round(mae, 6), "rmse": round(rmse, 6)}
    assert labelled == n


def test_rows_without_both_sides_are_left_out():
    rows = [
        ("1", 1.0, "1", None),
        ("0", 0.0, None, None),
        (None, None, "1", 2.0),
        ("1", 1.0, "0", 3.0),
    ]
    found, labelled = live_metrics(rows)
    assert found == {"accuracy": 0.5, "f1": round(2 / 3, 6), "mae": 2.0, "rmse": 2.0}
    assert labelled == 3
    assert live_metrics([]) == ({}, 0)


def test_the_server_does_not_import_sklearn():
    """scikit-learn is a dev extra: the aggregation module must not need it."""
    import ast
    import inspect

    from registry.services.monitoring import aggregation

    tree = ast.parse(inspect.getsource(aggregation))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not isinstance(node, ast.ImportFrom) or node.module
    }
    assert "sklearn" not in imported
