"""Load the demo users and models from fixtures/demo.json (used by `make run`).

Models are trained here from small synthetic data sets with scikit-learn, so the demo
holds real model files; they go through the same services as any upload.
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

from registry.models import Environment, RegisteredModel
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


def _files(model, name: str, spec: dict, metrics: dict) -> dict[str, bytes]:
    import joblib
    import sklearn

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    card = f"# {name}\n\n{spec['description']}\n\n## Metrics\n\n" + "".join(
        f"- **{k}**: {v}\n" for k, v in metrics.items()
    )
    return {
        "model.joblib": buffer.getvalue(),
        "README.md": card.encode(),
        "requirements.txt": f"scikit-learn=={sklearn.__version__}\njoblib\n".encode(),
    }


class Command(BaseCommand):
    help = "Create the demo users and models (passwords from MODELGATE_DEMO_PASSWORD or new)."

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
        self.stdout.write("\nDemo logins (http://127.0.0.1:8000/login/):")
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
                primary_metric=spec["primary_metric"],
            )
            for version_spec in spec["versions"]:
                estimator, metrics = _train(spec["estimator"], version_spec["params"])
                files = _files(estimator, spec["name"], version_spec, metrics)
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
