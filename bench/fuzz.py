"""`make fuzz`: schemathesis against /api/v1/schema/ of a production-like local server.

    make fuzz                         # 100 examples per operation, every phase
    make fuzz FUZZ_ARGS="--max-examples 20"
    .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8000 --token mg_...  # a server of yours

Starts gunicorn + a worker on a fresh Postgres database (bench/server.py, database
`modelgate_fuzz`, Redis db 13), signs in as a staff user (so every operation is
reachable) and runs every schemathesis phase — examples, coverage (positive and negative
cases), fuzzing, stateful (the schema's links) — with the checks below. Exit status is
schemathesis's: 0 when no response was a 5xx or outside the schema.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import BIN, create_token_for, manage, run_server, server_env

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "modelgate_fuzz"
BROKER_URL = "redis://127.0.0.1:6379/13"
USERNAME = "fuzz-admin"
# A 5xx, a body or status not in the schema, a wrong content type: each fails the run.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
PHASES = "examples,coverage,fuzzing,stateful"

CREATE_ADMIN = """
from django.contrib.auth.models import Group, User
user = User.objects.create_user({username!r}, password={password!r}, is_staff=True)
for name in ("contributors", "reviewers"):
    user.groups.add(Group.objects.get_or_create(name=name)[0])
"""


def schemathesis_command(
    base_url: str, token: str, max_examples: int, extra: list[str]
) -> list[str]:
    return [
        str(BIN / "schemathesis"),
        "run",
        f"{base_url}/api/v1/schema/",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        PHASES,
        "--max-examples",
        str(max_examples),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--seed",
        "1",
        "--suppress-health-check",
        "all",
        # Revoking a token by a generated id could revoke the fuzzer's own, and every
        # later request would only test the 401 path.
        "--exclude-operation-id",
        "tokens_revoke",
        *extra,
    ]


def create_admin_token(env: dict[str, str], base_url: str) -> str:
    password = secrets.token_urlsafe(16)
    manage(env, "shell", "-c", CREATE_ADMIN.format(username=USERNAME, password=password))
    return create_token_for(base_url, USERNAME, password)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--url", help="fuzz this running server instead of starting one")
    parser.add_argument("--token", help="a staff user's API token (with --url)")
    parser.add_argument("extra", nargs="*", help="more schemathesis options (after --)")
    args = parser.parse_args(argv)
    if args.url:
        if not args.token:
            parser.error("--url needs --token")
        cmd = schemathesis_command(args.url, args.token, args.max_examples, args.extra)
        return subprocess.run(cmd, cwd=ROOT, check=False).returncode
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=ROOT / "var") as tmp:
        root = Path(tmp)
        with run_server(root, database=DATABASE, broker_url=BROKER_URL) as server:
            env = server_env(root, DATABASE, BROKER_URL)
            token = create_admin_token(env, server.base_url)
            cmd = schemathesis_command(server.base_url, token, args.max_examples, args.extra)
            code = subprocess.run(cmd, cwd=ROOT, check=False).returncode
            if code:
                print(server.logs(), file=sys.stderr)
            return code


if __name__ == "__main__":
    sys.exit(main())
