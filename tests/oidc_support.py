"""A real OpenID provider for tests: tests/oidc/provider.mjs (npm's oidc-provider) on loopback.

`make test` installs its node_modules (npm ci --prefix tests/oidc). Without node, or without
them, the tests that need it are skipped, except under CI=true, where they fail.
"""

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from .processes import Process, free_port, wait_until

HERE = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "modelgate"
CLIENT_SECRET = "modelgate-test-client-secret"


def require_node() -> str:
    """The node binary, once the provider's packages are installed; else skip (fail in CI)."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed (apt-get install nodejs npm)"
    elif not (HERE / "node_modules" / "oidc-provider").is_dir():
        missing = "tests/oidc/node_modules is missing: run `npm ci --prefix tests/oidc`"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the single sign-on tests: {missing}")
        pytest.skip(missing)
    return node


class Provider(Process):
    """`accounts` ({username: {password, email, name, groups}}) live in a JSON file that the
    provider reads at every sign-in: `set_accounts` changes them for the next one."""

    def __init__(self, tmp: Path, accounts: dict, port: int | None = None):
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.accounts_file = tmp / f"oidc-accounts-{self.port}.json"
        self.set_accounts(accounts)
        super().__init__(
            [require_node(), str(HERE / "provider.mjs"), str(self.port)],
            {},
            tmp / f"oidc-provider-{self.port}.log",
            cwd=HERE,
        )

    def set_accounts(self, accounts: dict) -> None:
        temporary = self.accounts_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(accounts))
        temporary.replace(self.accounts_file)  # never read half-written

    def start(self, redirect_uri: str) -> "Provider":
        """Serves one client, whose redirect URI is the site's <base>/oidc/callback/."""
        self.env = {
            **os.environ,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URI": redirect_uri,
            "OIDC_ACCOUNTS": str(self.accounts_file),
        }
        super().start()
        wait_until(self.discoverable, 30, f"the OpenID provider on {self.port}", self)
        return self

    def discoverable(self) -> bool:
        try:
            url = f"{self.issuer}/.well-known/openid-configuration"
            return httpx.get(url, timeout=2).json().get("issuer") == self.issuer
        except (httpx.HTTPError, ValueError):
            return False

    def events(self, name: str | None = None) -> list[dict]:
        """The JSON lines provider.mjs logged (its own warnings are skipped)."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if name is None or record.get("event") == name:
                    records.append(record)
        return records

    def client_env(self, **extra: str) -> dict[str, str]:
        """What Modelgate needs to use it."""
        return {
            "MODELGATE_OIDC_ISSUER": self.issuer,
            "MODELGATE_OIDC_CLIENT_ID": CLIENT_ID,
            "MODELGATE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "MODELGATE_OIDC_SCOPES": "openid email profile groups",
            **extra,
        }
