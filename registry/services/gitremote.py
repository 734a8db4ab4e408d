"""The shared remote behind the Git mirror (MODELGATE_GIT_REMOTE).

With a remote, a worker's repository is only a cache: before writing, it is reset to
exactly the remote's branch and tags; after writing, branch and new tags are pushed in one
atomic push, so a tag never lands without the commit it names. A rejected push means that
another worker pushed first; the caller fetches and writes again on top of the new tip.

The URL may carry a token (https://user:token@host/repo.git): it is kept in the cache's
own .git/config, never on a command line, and every message from here is redacted.
"""

import re
from urllib.parse import unquote, urlsplit

from git import Repo

BRANCH = "main"
TRACKING = f"refs/remotes/origin/{BRANCH}"
# One fetch or push; a remote that hangs fails the job, which the job runner retries.
NETWORK_TIMEOUT = 300
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class RemoteError(Exception):
    """A fetch or push failed; the message never holds credentials."""


def redact(text: str, url: str = "") -> str:
    """Hide the URL's secret wherever git echoed it (not every message keeps the URL's
    shape: git:// prints "unable to look up user:token@host"), and any other userinfo."""
    parts = urlsplit(url) if "://" in url else None
    secrets = []
    if parts and parts.password:
        secrets.append(parts.password)
    elif parts and parts.username and parts.scheme.startswith("http"):
        secrets.append(parts.username)  # https://<token>@host: the token is the user name
    for secret in secrets:
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return _CREDENTIALS.sub("***@", text)


class Remote:
    """`origin` of one cached repository."""

    def __init__(self, repo: Repo, url: str):
        self.repo, self.url = repo, url
        # Written to the config file, not passed to git as an argument, which would show
        # in error messages and GitPython's trace.
        section = 'remote "origin"'
        with repo.config_writer() as config:
            if not config.has_section(section):
                config.add_section(section)
            if not config.has_option(section, "url") or config.get_value(section, "url") != url:
                config.set_value(section, "url", url)
        # A missing credential fails the sync instead of waiting for someone to type it.
        repo.git.update_environment(GIT_TERMINAL_PROMPT="0")

    def __str__(self) -> str:
        return redact(self.url, self.url)

    def _run(self, *args: str, timeout: float | None = None) -> tuple[int, str, str]:
        status, out, err = self.repo.git.execute(
            ["git", *args],
            with_exceptions=False,
            with_extended_output=True,
            kill_after_timeout=timeout,
        )
        return status, out, err

    def _fail(self, command: str, status: int, err: str) -> RemoteError:
        return RemoteError(redact(f"git {command} {self} failed ({status}): {err}", self.url))

    def _resolve(self, ref: str) -> str | None:
        status, out, _ = self._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return out.strip() if status == 0 else None

    def fetch_and_reset(self) -> str | None:
        """Make the local branch and tags the remote's; returns its tip (None: no branch
        yet, in which case a local history, if any, is kept to be pushed as the first)."""
        status, _, err = self._run(
            "fetch",
            "--prune",
            "--no-write-fetch-head",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",  # with --prune: local tags the remote lacks go
            timeout=NETWORK_TIMEOUT,
        )
        if status != 0:
            raise self._fail("fetch", status, err.strip())
        tip = self._resolve(TRACKING)
        if tip is not None:
            self.repo.git.checkout("--force", "--no-track", "-B", BRANCH, tip)
            self.repo.git.clean("-fdq")  # files a run wrote but never committed
        return tip

    def push(self, tip: str | None, tags: list[str]) -> bool:
        """Push the branch and `tags` atomically; False if a ref was rejected (the remote
        moved on, or a tag of that name appeared there meanwhile)."""
        if not tags and self._resolve("HEAD") == tip:
            return True  # nothing new
        refs = [f"refs/heads/{BRANCH}:refs/heads/{BRANCH}"]
        refs += [f"refs/tags/{tag}:refs/tags/{tag}" for tag in tags]
        status, out, err = self._run(
            "push", "--atomic", "--porcelain", "origin", *refs, timeout=NETWORK_TIMEOUT
        )
        if status == 0:
            return True
        # --porcelain prints one line per ref; "!" marks one the remote did not take.
        if any(line.startswith("!") for line in out.splitlines()):
            return False
        raise self._fail("push", status, err.strip())
