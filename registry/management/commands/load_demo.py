"""Load the demo users and models from fixtures/demo.json (used by `make run`).

Models are trained here from small synthetic data sets, so the demo holds real model
files; they go through the same services as any upload. With scikit-learn installed (the
dev environment) they are scikit-learn estimators saved with joblib; `make run` installs
the runtime dependencies only, so there the same estimators are fitted with NumPy and
saved as arrays in model.npz (no pickle).
"""

import io
import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction

from registry.models import Environment, RegisteredModel, Team, TeamMembership
from registry.services import aliases, jobs, processing, promotions, registered_models, versions
from registry.storage import get_store

FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"


def _train(estimator: str, params: dict[str, str]):
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split

    if estimator == "ridge":
        x, y = make_regression(n_samples=400, n_features=6, noise=12.0, random_state=7)
        model = Ridge(alpha=float(params["alpha"]))
        metric = "r2"
    else:
        x, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=7)
        if estimator == "random_forest":
            model = RandomForestClassifier(
                n_estimators=int(params["n_estimators"]),
                max_depth=int(params["max_depth"]),
                random_state=7,
            )
        else:
            model = LogisticRegression(C=float(params["C"]), max_iter=500)
        metric = "accuracy"
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=7)
    model.fit(x_train, y_train)
    return model, {metric: round(float(model.score(x_test, y_test)), 4)}


def _card(name: str, spec: dict, metrics: dict, note: str = "") -> bytes:
    card = f"# {name}\n\n{spec['description']}\n\n{note}## Metrics\n\n" + "".join(
        f"- **{k}**: {v}\n" for k, v in metrics.items()
    )
    return card.encode()


def _files(model, name: str, spec: dict, metrics: dict) -> dict[str, bytes]:
    import joblib
    import sklearn

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return {
        "model.joblib": buffer.getvalue(),
        "README.md": _card(name, spec, metrics),
        "requirements.txt": f"scikit-learn=={sklearn.__version__}\njoblib\n".encode(),
    }


def _have_sklearn() -> bool:
    try:
        import joblib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _numpy_files(estimator: str, name: str, spec: dict) -> tuple[dict[str, bytes], dict]:
    """The version fitted with NumPy (no scikit-learn): its files and metrics."""
    import numpy

    arrays, metrics = _numpy_train(estimator, spec["params"])
    buffer = io.BytesIO()
    numpy.savez(buffer, **arrays)
    note = (
        f"Fitted with NumPy ({estimator}; scikit-learn was not installed): model.npz "
        "holds the fitted arrays.\n\n"
    )
    files = {
        "model.npz": buffer.getvalue(),
        "README.md": _card(name, spec, metrics, note),
        "requirements.txt": f"numpy=={numpy.__version__}\n".encode(),
    }
    return files, metrics


# --- The same estimators in NumPy, for an environment without scikit-learn ---------------
def _numpy_data(estimator: str):
    import numpy as np

    rng = np.random.default_rng(7)
    if estimator == "ridge":
        x = rng.normal(size=(400, 6))
        y = x @ rng.normal(scale=40.0, size=6) + rng.normal(scale=12.0, size=400)
    else:
        x = rng.normal(size=(600, 8))
        logits = x[:, :5] @ rng.normal(scale=1.5, size=5) + rng.normal(size=600)
        y = (logits > 0).astype(np.int64)
    order = rng.permutation(len(y))
    cut = len(y) * 3 // 4
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _logistic(x, y, c: float):
    """L2-penalised logistic regression as scikit-learn fits it (Newton steps)."""
    import numpy as np

    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.eye(xb.shape[1]) / c
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        gradient = xb.T @ (p - y) + penalty @ w
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _tree(x, y, depth: int, rng, nodes: list) -> int:
    """Grow a classification tree (gini, sqrt(features) per split) into nodes; its root."""
    import numpy as np

    index = len(nodes)
    nodes.append([-1, 0.0, -1, -1, float(y.mean()) if len(y) else 0.0])
    if depth == 0 or len(y) < 2 or y.min() == y.max():
        return index
    best = None
    for feature in rng.choice(x.shape[1], max(1, int(np.sqrt(x.shape[1]))), replace=False):
        for threshold in np.unique(np.quantile(x[:, feature], np.linspace(0.05, 0.95, 19))):
            left = x[:, feature] <= threshold
            n_left, n_right = left.sum(), (~left).sum()
            if not n_left or not n_right:
                continue
            p_left, p_right = y[left].mean(), y[~left].mean()
            impurity = n_left * p_left * (1 - p_left) + n_right * p_right * (1 - p_right)
            if best is None or impurity < best[0]:
                best = (impurity, feature, threshold, left)
    if best is None:
        return index
    _, feature, threshold, left = best
    nodes[index][:2] = [int(feature), float(threshold)]
    nodes[index][2] = _tree(x[left], y[left], depth - 1, rng, nodes)
    nodes[index][3] = _tree(x[~left], y[~left], depth - 1, rng, nodes)
    return index


def _forest_predict(arrays: dict, x):
    import numpy as np

    votes = np.zeros(len(x))
    for root in arrays["roots"]:
        node = np.full(len(x), root)
        while True:
            feature = arrays["feature"][node]
            inner = feature >= 0
            if not inner.any():
                break
            go_left = x[np.arange(len(x)), np.maximum(feature, 0)] <= arrays["threshold"][node]
            child = np.where(go_left, arrays["left"][node], arrays["right"][node])
            node = np.where(inner, child, node)
        votes += arrays["value"][node]
    return (votes / len(arrays["roots"]) > 0.5).astype(np.int64)


def _numpy_train(estimator: str, params: dict[str, str]) -> tuple[dict, dict]:
    """The fitted arrays (what model.npz holds) and the holdout metric."""
    import numpy as np

    x_train, y_train, x_test, y_test = _numpy_data(estimator)
    if estimator == "ridge":
        alpha = float(params["alpha"])
        mean_x, mean_y = x_train.mean(axis=0), y_train.mean()
        xc = x_train - mean_x
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ (y_train - mean_y))
        intercept = mean_y - mean_x @ coef
        residual = y_test - (x_test @ coef + intercept)
        r2 = 1 - (residual**2).sum() / ((y_test - y_test.mean()) ** 2).sum()
        return {"coef": coef, "intercept": np.array([intercept])}, {"r2": round(float(r2), 4)}
    if estimator == "random_forest":
        rng = np.random.default_rng(7)
        nodes: list = []
        roots = []
        for _ in range(int(params["n_estimators"])):
            sample = rng.integers(0, len(y_train), len(y_train))
            depth = int(params["max_depth"])
            roots.append(_tree(x_train[sample], y_train[sample], depth, rng, nodes))
        table = np.array(nodes, dtype=float).reshape(-1, 5)
        arrays = {
            "feature": table[:, 0].astype(np.int64),
            "threshold": table[:, 1],
            "left": table[:, 2].astype(np.int64),
            "right": table[:, 3].astype(np.int64),
            "value": table[:, 4],
            "roots": np.array(roots, dtype=np.int64),
        }
        predicted = _forest_predict(arrays, x_test)
    else:
        w = _logistic(x_train, y_train, float(params["C"]))
        arrays = {"coef": w[:-1], "intercept": w[-1:]}
        predicted = (x_test @ w[:-1] + w[-1] > 0).astype(np.int64)
    return arrays, {"accuracy": round(float((predicted == y_test).mean()), 4)}


class Command(BaseCommand):
    help = "Create the demo users and models (passwords from MODELGATE_DEMO_PASSWORD or new)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="where the server listens")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options):
        spec = json.loads(FIXTURE.read_text())
        logins = self._users(spec["users"])
        alice = User.objects.get(username="alice")
        for environment in spec["environments"]:
            if not Environment.objects.filter(name=environment["name"]).exists():
                promotions.create_environment(
                    User.objects.get(username="admin"), environment.pop("name"), environment
                )
        for model_spec in spec["models"]:
            if RegisteredModel.objects.filter(name=model_spec["name"]).exists():
                continue
            self._model(alice, model_spec)
        host = options["host"]
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.stdout.write(f"\nDemo logins (http://{host}:{options['port']}/login/):")
        for username, password in logins:
            self.stdout.write(f"  {username:<6} {password}")
        self.stdout.write("")

    def _users(self, users: list[dict]) -> list[tuple[str, str]]:
        shared = os.environ.get("MODELGATE_DEMO_PASSWORD")
        logins = []
        for entry in users:
            # A fresh password on every run unless one is given: never a fixed default.
            password = shared or secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(
                username=entry["username"], defaults={"email": entry["email"]}
            )
            user.is_staff = user.is_superuser = bool(entry.get("staff"))
            user.set_password(password)
            user.save()
            for group in entry["groups"]:
                user.groups.add(Group.objects.get_or_create(name=group)[0])
            for team, role in entry.get("teams", {}).items():
                TeamMembership.objects.update_or_create(
                    team=Team.objects.get_or_create(name=team)[0],
                    user=user,
                    defaults={"role": role},
                )
            logins.append((user.username, password))
        return logins

    def _model(self, owner: User, spec: dict) -> None:
        store = get_store()
        with transaction.atomic():
            model = registered_models.create_model(
                owner,
                spec["name"],
                description=spec["description"],
                tags=spec["tags"],
                team=spec["team"],
                visibility=spec["visibility"],
                primary_metric=spec["primary_metric"],
            )
            for version_spec in spec["versions"]:
                if _have_sklearn():
                    estimator, metrics = _train(spec["estimator"], version_spec["params"])
                    files = _files(estimator, spec["name"], version_spec, metrics)
                else:
                    files, metrics = _numpy_files(spec["estimator"], spec["name"], version_spec)
                blobs = [(path, store.put(io.BytesIO(data))) for path, data in files.items()]
                version = versions.create_version_from_blobs(
                    model,
                    owner,
                    {
                        "description": version_spec["description"],
                        "metrics": metrics,
                        "params": version_spec["params"],
                        "lineage": {"code_commit": "demo", "dataset": "sklearn synthetic"},
                    },
                    blobs,
                )
                processing.process_version(version.pk)
            for alias, number in spec["aliases"].items():
                aliases.set_alias(model, owner, alias, number)
            for request in spec.get("promotions", []):
                version = versions.resolve_version(model, request["version"])
                promotion = promotions.request_promotion(
                    version, owner, request["environment"], request.get("comment", "")
                )
                if request.get("approved_by"):
                    reviewer = User.objects.get(username=request["approved_by"])
                    promotion = promotions.review_promotion(
                        promotion, reviewer, "approve", request["review"]
                    )
                if promotion.state == promotion.State.APPROVED:
                    jobs.run(promotions.KIND, promotion.pk)
        self.stdout.write(f"Loaded model {spec['name']} ({len(spec['versions'])} versions)")
