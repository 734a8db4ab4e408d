"""`make screenshots`: PNGs of the main pages from a seeded database, to look at the UI
without running it. Usage: python -m webui.screenshots OUTPUT_DIR

It migrates a scratch database (MODELGATE_VAR_DIR), loads the demo data, starts the
server and a worker, and drives Debian's Chromium with Playwright.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "screenshots-demo-password"
# The flags this machine's Chromium needs headless (the browser tests use them too).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict, *args: str) -> None:
    subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, check=True)


def start(env: dict, port: int, logs: Path) -> list[subprocess.Popen]:
    def spawn(args, name):
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=open(logs / name, "wb"), stderr=subprocess.STDOUT
        )

    return [
        spawn(
            [str(BIN / "python"), "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            "server.log",
        ),
        spawn(
            [
                str(BIN / "celery"),
                "-A",
                "workers.celery",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
            ],
            "worker.log",
        ),
    ]


def wait_for_server(url: str) -> None:
    for _ in range(150):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not start")


def sign_in(context, url: str, username: str):
    page = context.new_page()
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda address: "/login/" not in address)
    return page


def shoot(page, out: Path, name: str, url: str | None = None) -> None:
    if url:
        page.goto(url)
        page.wait_for_load_state("networkidle")
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"  {name}.png")


def upload_in_progress(page, url: str, out: Path, scratch: Path, suffix: str) -> None:
    """Hold the second chunk of a 24 MiB file so the progress bars are mid-way."""
    folder = scratch / "upload-demo"
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text("# Demo upload\n")
    (folder / "weights.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    seen = {"chunks": 0}

    def hold_later_chunks(route):
        seen["chunks"] += 1
        if seen["chunks"] >= 2:
            return  # never answered: the upload stays in progress for the picture
        route.continue_()

    page.route("**/api/v1/models/*/versions/*/files/**", hold_later_chunks)
    page.goto(f"{url}/models/churn-predictor/upload/")
    page.locator("#files-input").set_input_files(
        [str(folder / "README.md"), str(folder / "weights.bin")]
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_timeout(3000)
    shoot(page, out, f"upload-in-progress-{suffix}")
    page.unroute("**/api/v1/models/*/versions/*/files/**")


FEATURES = ["amount", "merchant_risk", "hour", "card_age_days", "country"]


def _profile(edges: list[float]) -> dict:
    return {
        "type": "numeric",
        "count": 1000,
        "missing": 0,
        "mean": (edges[0] + edges[-1]) / 2,
        "std": (edges[-1] - edges[0]) / 3.5,
        "min": edges[0],
        "max": edges[-1],
        "bins": {"edges": edges, "counts": [100] * (len(edges) - 1)},
    }


def seed_monitoring() -> None:
    """Demo monitoring for the pictures (run inside `manage.py shell`): baselines and
    explanations on fraud-detector's versions, two hours of staging traffic for v2 that
    drifts on `amount` at the end, monitors, and alerts evaluated window by window."""
    import random
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from registry.models import ModelVersion
    from registry.services.monitoring import aggregation, alerts, ingest, monitors
    from registry.services.tokens import create_token

    rng = random.Random(8)
    numeric = {
        "amount": [float(x) for x in range(0, 1001, 100)],
        "merchant_risk": [x / 10 for x in range(11)],
        "hour": [float(x) for x in range(0, 25, 3)],
        "card_age_days": [float(x) for x in range(0, 3001, 300)],
    }
    baseline = {
        "source": {"name": "holdout-2024-06.csv", "rows": 1000},
        "columns": FEATURES,
        "features": {name: _profile(edges) for name, edges in numeric.items()},
    }
    baseline["features"]["country"] = {
        "type": "categorical",
        "count": 1000,
        "missing": 0,
        "top": [{"value": c, "count": n} for c, n in (("DE", 400), ("FR", 300), ("NL", 200))],
        "other": 100,
    }
    importance = {
        1: [0.21, 0.18, 0.04, 0.06, 0.02],
        2: [0.24, 0.17, 0.05, 0.05, 0.02],
        3: [0.12, 0.33, 0.05, 0.04, 0.03],
    }
    for number, values in importance.items():
        explanations = {
            "method": "permutation_importance",
            "scoring": "accuracy",
            "n_repeats": 5,
            "data": {"name": "holdout-2024-06.csv", "rows": 1000},
            "features": {
                name: {"importance": value, "std": round(value * 0.08 + 0.003, 4)}
                for name, value in zip(FEATURES, values, strict=True)
            },
        }
        ModelVersion.objects.filter(model__name="fraud-detector", number=number).update(
            baseline=baseline, explanations=explanations
        )
    alice = User.objects.get(username="alice")
    token, _ = create_token(alice, "serving", ["ingest"], model="fraud-detector")
    length = timedelta(seconds=aggregation.window_seconds())
    now = timezone.now()
    first = aggregation.window_start(now) - 24 * length
    records, feedback = [], []
    for window in range(24):
        shifted, failing = window >= 20, window in (12, 13)
        for index in range(120 + rng.randrange(60)):
            at = first + window * length + length * rng.random()
            rid = f"demo-{window}-{index}"
            inputs = {
                name: round(rng.uniform(edges[0], edges[-1]), 3) for name, edges in numeric.items()
            }
            inputs["country"] = rng.choices(["DE", "FR", "NL", "BE"], [4, 3, 2, 1])[0]
            if shifted:
                inputs["amount"] = round(rng.uniform(700, 1000), 2)
            label = int(inputs["merchant_risk"] > 0.6)
            records.append(
                {
                    "model": "fraud-detector",
                    "version": 2,
                    "environment": "staging",
                    "request_id": rid,
                    "at": at.isoformat(),
                    "inputs": inputs,
                    "outputs": {"prediction": label},
                    "latency_ms": rng.lognormvariate(2.6, 0.35) + (40 if failing else 0),
                    "error": "timeout" if failing and rng.random() < 0.2 else "",
                }
            )
            truth = label if rng.random() < (0.78 if shifted else 0.9) else 1 - label
            feedback.append({"model": "fraud-detector", "request_id": rid, "label": truth})
    ingest.ingest_predictions(token, {"records": records})
    ingest.ingest_feedback(token, {"records": feedback})
    rules = [
        ("drift.psi.max", ">", 0.2, 100),
        ("error_rate", ">", 0.05, 50),
        ("latency_ms.p95", ">", 200.0, 50),
    ]
    for metric, op, value, samples in rules:
        monitors.create_monitor(
            alice,
            {
                "model": "fraud-detector",
                "environment": "staging",
                "metric": metric,
                "op": op,
                "value": value,
                "window": aggregation.window_seconds(),
                "min_samples": samples,
            },
        )
    aggregation.aggregate(now)
    for window in range(1, 25):  # as beat would have, once per window
        alerts.evaluate_monitors(first + window * length + timedelta(seconds=5))
    print("Seeded monitoring for fraud-detector v2 in staging")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("MODELGATE_VAR_DIR", ROOT / "var" / "screens"))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {**os.environ, "MODELGATE_VAR_DIR": str(scratch), "MODELGATE_DEMO_PASSWORD": PASSWORD}
    for key in ("DATABASE_URL", "CELERY_BROKER_URL"):  # always a private SQLite demo
        env.pop(key, None)
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "collectstatic", "--no-input", "-v0")
    manage(env, "load_demo")
    manage(env, "shell", "-c", "from webui.screenshots import seed_monitoring; seed_monitoring()")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = start(env, port, scratch)
    try:
        wait_for_server(url)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
            )
            for suffix, viewport in SIZES.items():
                print(f"{suffix} ({viewport['width']} px):")
                alice = sign_in(browser.new_context(viewport=viewport), url, "alice")
                shoot(alice, out, f"models-{suffix}", f"{url}/")
                shoot(alice, out, f"model-{suffix}", f"{url}/models/fraud-detector/")
                shoot(alice, out, f"version-{suffix}", f"{url}/models/fraud-detector/versions/3/")
                shoot(
                    alice,
                    out,
                    f"compare-{suffix}",
                    f"{url}/models/fraud-detector/compare/?v=1&v=2&v=3",
                )
                shoot(alice, out, f"audit-log-{suffix}", f"{url}/audit/")
                monitoring = f"{url}/models/fraud-detector/versions/2/monitoring/"
                shoot(alice, out, f"monitoring-version-{suffix}", f"{monitoring}?hours=6")
                shoot(
                    alice,
                    out,
                    f"monitoring-environment-{suffix}",
                    f"{url}/environments/staging/monitoring/",
                )
                alice.goto(f"{url}/models/fraud-detector/versions/3/")
                alice.locator("#explanations").screenshot(
                    path=str(out / f"explanations-{suffix}.png")
                )
                print(f"  explanations-{suffix}.png")
                upload_in_progress(alice, url, out, scratch, suffix)
                bob = sign_in(browser.new_context(viewport=viewport), url, "bob")
                shoot(bob, out, f"reviews-{suffix}", f"{url}/reviews/")
                review = bob.get_by_role("link", name="Review", exact=True).first
                promotion = review.get_attribute("href")
                shoot(bob, out, f"review-comparison-{suffix}", f"{url}{promotion}")
                bob.locator("#explanations").screenshot(
                    path=str(out / f"review-explanations-{suffix}.png")
                )
                print(f"  review-explanations-{suffix}.png")
            browser.close()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
    print(f"Screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
