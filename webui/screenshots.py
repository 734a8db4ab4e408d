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
                upload_in_progress(alice, url, out, scratch, suffix)
                bob = sign_in(browser.new_context(viewport=viewport), url, "bob")
                shoot(bob, out, f"reviews-{suffix}", f"{url}/reviews/")
                review = bob.get_by_role("link", name="Review", exact=True).first
                promotion = review.get_attribute("href")
                shoot(bob, out, f"review-comparison-{suffix}", f"{url}{promotion}")
            browser.close()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
    print(f"Screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
