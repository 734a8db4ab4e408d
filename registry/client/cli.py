"""`modelgate`: push, pull and inspect models from a shell; a thin layer over `Client`."""

import itertools
import json
import os
import re
import socket
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from .api import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_URL,
    PROMOTION_FINAL_STATES,
    PROMOTION_OPEN_STATES,
    Client,
    ClientError,
    TimedOut,
    scan_directory,
    split_ref,
)
from .config import load_config, save_config

URL_ENV = "MODELGATE_URL"
TOKEN_ENV = "MODELGATE_TOKEN"

# The exit codes pipelines branch on; the table is in `modelgate --help`.
EXIT_ERROR, EXIT_REFUSED, EXIT_TIMED_OUT = 1, 2, 3
EXIT_CODES = f"""\b
Exit codes:
  0  done
  {EXIT_ERROR}  error: network, server (5xx), not found, conflict, bad token,
     a version that failed processing, a promotion that failed to execute
  {EXIT_REFUSED}  refused: permission denied (403), a gate blocked the promotion,
     a reviewer rejected it, it was cancelled, or `promote --wait` found it
     waiting for review (use --wait-for-review to wait through it);
     also a wrong command line (nothing was sent)
  {EXIT_TIMED_OUT}  timed out: --timeout passed before the awaited state
\b
In CI set {URL_ENV} and {TOKEN_ENV}; no login step is needed."""


class Refused(click.ClickException):
    """The server understood and said no: a permission, a gate, a reviewer."""

    exit_code = EXIT_REFUSED


class TimedOutError(click.ClickException):
    exit_code = EXIT_TIMED_OUT


class _Group(click.Group):
    """Turns client and file errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TimedOut as exc:
            raise TimedOutError(exc.message) from None
        except ClientError as exc:
            message = exc.message
            if exc.code == "not_authenticated" or exc.status == 401:
                message += f" Run `modelgate login` or set {TOKEN_ENV}."
            if exc.status == 403 or exc.code in {"permission_denied", "gate_failed"}:
                raise Refused(message) from None
            raise click.ClickException(message) from None
        except OSError as exc:
            raise click.ClickException(str(exc)) from None


class Session:
    """What the global options resolve to; the client is made on first use."""

    def __init__(self, url: str | None, quiet: bool):
        saved = load_config()
        saved_url = str(saved.get("url") or "").rstrip("/") or None
        self.url = (url or saved_url or DEFAULT_URL).rstrip("/")
        self.quiet = quiet
        # The saved token belongs to the saved server: never send it to another one.
        saved_token = saved.get("token") if self.url == saved_url else None
        self.token = os.environ.get(TOKEN_ENV) or saved_token
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.token)
            click.get_current_context().call_on_close(self._client.close)
        return self._client

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=self.quiet,
            dynamic_ncols=True,
        )


pass_session = click.make_pass_decorator(Session)


class ByteSize(click.ParamType):
    """A number of bytes: `1048576`, `512K`, `16M`, `1GiB`."""

    name = "bytes"
    _UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
        if not match or int(match.group(1)) < 1:
            self.fail(f"'{value}' is not a positive size such as 1048576, 512K or 16M.", param, ctx)
        return int(match.group(1)) * self._UNITS[match.group(2).lower()]


def _key_values(ctx: click.Context, param: click.Parameter, values: Iterable[str]) -> dict:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' must look like key=value.")
        pairs[key] = value
    return pairs


def _json_object(path: Path | None, option: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not valid JSON: {exc}", param_hint=option) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a JSON object.", param_hint=option)
    return data


def _metrics(path: Path | None) -> dict[str, float] | None:
    data = _json_object(path, "--metrics")
    for key, value in (data or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise click.BadParameter(
                f"metric '{key}' must be a number, not {value!r}.", param_hint="--metrics"
            )
    return data


def _params(path: Path | None) -> dict[str, str] | None:
    data = _json_object(path, "--params")
    if data is None:
        return None
    # Params are strings on the server; numbers and lists from a config file keep their
    # JSON spelling (0.1, true, [1, 2]) rather than Python's.
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def _lineage(pairs: dict[str, str]) -> dict[str, Any] | None:
    if not pairs:
        return None
    lineage: dict[str, Any] = dict(pairs)
    if "parent_version" in lineage:
        if not lineage["parent_version"].isdigit():
            raise click.BadParameter("parent_version must be a number.", param_hint="--lineage")
        lineage["parent_version"] = int(lineage["parent_version"])
    return lineage


def _monitoring(directory: Path, data: Path | None, target: str | None, explain: bool) -> dict:
    """Baseline (and explanations) computed here, on this machine; see profiling.py."""
    if data is None:
        if target or explain:
            raise click.BadParameter("needs --baseline DATA.csv.", param_hint="--target/--explain")
        return {}
    try:
        # numpy is optional in the client-only install (modelgate-client[baseline]).
        from . import profiling
    except ImportError as exc:
        raise click.ClickException(
            f"--baseline needs numpy ({exc}): pip install numpy, or install the client "
            "with its extra: pip install './client[baseline]'"
        ) from None
    try:
        baseline, explanations = profiling.for_push(directory, data, target, explain)
    except (profiling.ProfilingError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    return {"baseline": baseline, "explanations": explanations}


def _reference(value: str) -> tuple[str, str]:
    try:
        return split_ref(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _table(headers: list[str], rows: list[list[str]], alarming=lambda row: False) -> None:
    """Columns padded to fit; rows for which `alarming(row)` holds are red on a terminal."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for index, row in enumerate([headers, *rows]):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, fg="red", bold=True) if index and alarming(row) else line)


def _state(state: str) -> str:
    """A version's state, red when it is quarantined (click drops colour off a terminal)."""
    if state == "quarantined":
        return click.style("QUARANTINED", fg="red", bold=True)
    return state


def _compact(mapping: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((mapping or {}).items()))


def _version() -> str:
    """The server's distribution (`pip install .`) or the client-only one (`./client`)."""
    for name in ("modelgate", "modelgate-client"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


# --- the commands ------------------------------------------------------------------


@click.group(name="modelgate", cls=_Group, epilog=EXIT_CODES)
@click.option(
    "--url",
    envvar=URL_ENV,
    show_envvar=True,
    metavar="URL",
    help=f"Server URL [default: the saved login, else {DEFAULT_URL}].",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.version_option(version=_version())
@click.pass_context
def main(ctx: click.Context, url: str | None, quiet: bool) -> None:
    """Modelgate model registry: push, pull and inspect model versions, promote them
    to environments, review promotions, and wait for either.

    The token comes from $MODELGATE_TOKEN, else from `modelgate login`.
    """
    ctx.obj = Session(url, quiet)


@main.command()
@click.option("--url", "login_url", metavar="URL", help="Server to log in to.")
@click.option("--username", prompt=True)
@click.option("--password", prompt=True, hide_input=True)
@pass_session
def login(session: Session, login_url: str | None, username: str, password: str) -> None:
    """Create an API token and save it with the server URL."""
    url = (login_url or session.url).rstrip("/")
    name = f"cli-{socket.gethostname()}"[:100]
    with Client(url) as client:
        token = client.create_token(username, password, name)
    path = save_config({**load_config(), "url": url, "token": token["token"]})
    click.echo(f"Logged in to {url} as {username}; token '{token['name']}' saved in {path}.")


@main.group()
def models() -> None:
    """List and create models."""


@models.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def models_ls(session: Session, as_json: bool) -> None:
    """List models."""
    found = list(session.client().list_models())
    if as_json:
        _echo_json(found)
        return
    rows = [
        [
            m["name"],
            str(m.get("latest_version") or "-"),
            _compact(m.get("aliases")),
            (m.get("description") or "").splitlines()[0][:60] if m.get("description") else "",
        ]
        for m in found
    ]
    _table(["NAME", "LATEST", "ALIASES", "DESCRIPTION"], rows)


@models.command("create")
@click.argument("name")
@click.option("--description", help="What the model is for.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=_key_values,
    metavar="KEY=VALUE",
    help="A tag; repeat for more.",
)
@click.option("--team", help="The owning team (needed when you write in several).")
@click.option(
    "--visibility",
    type=click.Choice(["team", "internal"]),
    help="Who may read it: the team (default) or everyone signed in.",
)
@click.option("--exist-ok", is_flag=True, help="Succeed if the model already exists.")
@pass_session
def models_create(
    session: Session,
    name: str,
    description: str | None,
    tags: dict[str, str],
    team: str | None,
    visibility: str | None,
    exist_ok: bool,
) -> None:
    """Create a model."""
    client = session.client()
    try:
        created = client.create_model(name, description, tags or None, team, visibility)
    except ClientError as exc:
        if not (exist_ok and exc.status == 409):
            raise
        client.get_model(name)  # a 409 for another reason must not pass as "exists"
        click.echo(f"Model {name} already exists.")
        return
    click.echo(f"Created model {created['name']}.")


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", "model", required=True, help="The model to add a version to.")
@click.option(
    "--metrics",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file of {name: number}.",
)
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file of {name: value}; values are stored as text.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=_key_values,
    metavar="KEY=VALUE",
    help="A tag; repeat for more.",
)
@click.option("--description", help="What changed in this version.")
@click.option(
    "--lineage",
    "lineage",
    multiple=True,
    callback=_key_values,
    metavar="KEY=VALUE",
    help="Where it came from: code_commit, dataset, run_url, run_id, parent_version.",
)
@click.option(
    "--chunk-size",
    type=ByteSize(),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Bytes per upload request (512K, 16M ... accepted).",
)
@click.option("--wait", is_flag=True, help="Wait until the version is ready or failed.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=1800,
    show_default=True,
    help="With --wait: seconds to wait at most.",
)
@click.option(
    "--baseline",
    "baseline_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of training/evaluation data to profile as the version's baseline "
    "(only the profile is sent).",
)
@click.option("--target", metavar="COLUMN", help="With --baseline: the label column.")
@click.option(
    "--explain",
    is_flag=True,
    help="With --baseline: permutation importance of the scikit-learn model in DIRECTORY.",
)
@pass_session
def push(
    session: Session,
    directory: Path,
    model: str,
    metrics: Path | None,
    params: Path | None,
    tags: dict[str, str],
    description: str | None,
    lineage: dict[str, str],
    chunk_size: int,
    wait: bool,
    timeout: float,
    baseline_csv: Path | None,
    target: str | None,
    explain: bool,
) -> None:
    """Upload every file under DIRECTORY as a new version of a model; prints NAME/N."""
    metadata = {
        "metrics": _metrics(metrics),
        "params": _params(params),
        "tags": tags or None,
        "description": description,
        "lineage": _lineage(lineage),
        **_monitoring(directory, baseline_csv, target, explain),
    }
    files = scan_directory(directory)
    if not files:
        raise click.ClickException(f"{directory} holds no regular files to push.")
    client = session.client()
    version = client.push(
        model,
        files,
        chunk_size=chunk_size,
        progress_for=lambda f: session.bar(f.size, f.path),
        **metadata,
    )
    number = version["version"]
    click.echo(f"{model}/{number}")
    if not wait:
        return
    version = client.wait_for_state(model, number, timeout=timeout)
    if version["state"] in ("failed", "quarantined"):
        reason = version.get("status_reason") or "no reason given"
        raise click.ClickException(f"{model}/{number} {version['state']}: {reason}")
    click.echo(f"{model}/{number} is {version['state']}.", err=True)


@main.group()
def versions() -> None:
    """List versions."""


@versions.command("ls")
@click.argument("name")
@click.option("--state", help="Only versions in this state (uploading, processing, ready ...).")
@click.option("--tag", "tags", multiple=True, metavar="KEY:VALUE", help="Repeat for more.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="EXPR",
    help="e.g. 'accuracy>=0.9'; repeat for more.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def versions_ls(
    session: Session,
    name: str,
    state: str | None,
    tags: tuple[str, ...],
    metrics: tuple[str, ...],
    as_json: bool,
) -> None:
    """List the versions of model NAME, newest first."""
    found = list(
        session.client().list_versions(name, state=state, tags=list(tags), metrics=list(metrics))
    )
    if as_json:
        _echo_json(found)
        return
    rows = [
        [
            str(v["version"]),
            v["state"],
            ",".join(v.get("aliases") or []),
            str(v.get("created_at") or "")[:19],
            _compact(v.get("metrics")),
        ]
        for v in found
    ]
    _table(
        ["VERSION", "STATE", "ALIASES", "CREATED", "METRICS"],
        rows,
        alarming=lambda row: row[1] == "quarantined",
    )


@main.command()
@click.argument("ref", metavar="NAME[@ALIAS|/N]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def show(session: Session, ref: str, as_json: bool) -> None:
    """Show a version: NAME@ALIAS, NAME/N, or NAME for the latest ready one."""
    name, version_ref = _reference(ref)
    version = session.client().get_version(name, version_ref)
    if as_json:
        _echo_json(version)
        return
    click.echo(f"{version['model']}/{version['version']}  {_state(version['state'])}")
    scan = version.get("scan") or {}
    if scan.get("status"):
        click.echo(f"  {'scan:':<12} {scan['status']}")
    if version.get("status_reason"):
        click.echo(f"  reason:      {version['status_reason']}")
    for label, value in (
        ("description", version.get("description") or ""),
        ("aliases", ", ".join(version.get("aliases") or [])),
        ("metrics", _compact(version.get("metrics"))),
        ("params", _compact(version.get("params"))),
        ("tags", _compact(version.get("tags"))),
        ("created", f"{version.get('created_at') or ''} by {version.get('created_by') or '?'}"),
    ):
        if value:
            click.echo(f"  {label + ':':<12} {value}")
    click.echo("  files:")
    for item in version.get("files") or []:
        click.echo(f"    {item['path']}  {item['size']} bytes  sha256:{item['sha256'][:12]}")


@main.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/N")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--allow-quarantined",
    is_flag=True,
    help="Admins only: download a quarantined version anyway (the server audits it).",
)
@pass_session
def pull(session: Session, ref: str, directory: Path, allow_quarantined: bool) -> None:
    """Download every file of a version into DIRECTORY, checking each sha256.

    A quarantined version (its scan found a dangerous import) is refused."""
    name, version_ref = _reference(ref)
    version = session.client().pull(
        name,
        version_ref,
        directory,
        progress_for=lambda f: session.bar(f["size"], f["path"]),
        allow_quarantined=allow_quarantined,
    )
    count = len(version.get("files") or [])
    click.echo(f"Pulled {name}/{version['version']} ({count} files) into {directory}.")


@main.group()
def alias() -> None:
    """Point aliases at versions."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=click.IntRange(min=1))
@pass_session
def alias_set(session: Session, name: str, alias_name: str, version: int) -> None:
    """Point ALIAS of model NAME at VERSION (a ready one)."""
    moved = session.client().set_alias(name, alias_name, version)
    click.echo(f"{name}@{moved['alias']} -> {moved['version']}")


# --- pipelines: wait, resolve, promote, review ----------------------------------------

VERSION_STATES = ("uploading", "processing", "ready", "failed", "quarantined", "archived")


@main.command("wait")
@click.argument("ref", metavar="NAME/N|NAME@ALIAS")
@click.option(
    "--state",
    type=click.Choice(VERSION_STATES),
    default="ready",
    show_default=True,
    help="The state to wait for.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=1800,
    show_default=True,
    help="Seconds to wait at most; then exit 3.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_session
def wait_command(session: Session, ref: str, state: str, timeout: float, as_json: bool) -> None:
    """Wait until a version reaches --state; exit 1 if it fails (is quarantined or archived)
    first."""
    name, version_ref = _reference(ref)
    # `failed` and `archived` never change again: waiting on would only burn the timeout.
    dead_ends = tuple(s for s in ("failed", "quarantined", "archived") if s != state)
    version = session.client().wait_for_state(
        name, version_ref, states=(state, *dead_ends), timeout=timeout
    )
    if as_json:
        _echo_json(version)
    else:
        click.echo(f"{name}/{version['version']} {version['state']}")
    if version["state"] != state:
        reason = version.get("status_reason") or "no reason given"
        raise click.ClickException(f"{name}/{version['version']} is {version['state']}: {reason}")


@main.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/N")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def resolve(session: Session, ref: str, as_json: bool) -> None:
    """Print the version an alias (or NAME/N) points at now and its files' sha256.

    \b
    Text: the first line is NAME/N, then one `SHA256  PATH` line per file, the
    format of sha256sum, so a pulled folder checks with
      modelgate resolve fraud@production | tail -n +2 | sha256sum -c
    """
    name, version_ref = _reference(ref)
    version = session.client().get_version(name, version_ref)
    files = [
        {"path": f["path"], "size": f["size"], "sha256": f["sha256"]}
        for f in version.get("files") or []
    ]
    if as_json:
        package = version.get("package") or {}
        _echo_json(
            {
                "model": name,
                "version": version["version"],
                "ref": ref,
                "state": version["state"],
                "aliases": version.get("aliases") or [],
                "files": files,
                "package": {"state": package.get("state"), "sha256": package.get("sha256")},
            }
        )
        return
    click.echo(f"{name}/{version['version']}")
    for item in files:
        path = item["path"]
        # sha256sum's own escaping: a leading backslash marks a name with a newline in it.
        prefix = "\\" if "\n" in path else ""
        click.echo(f"{prefix}{item['sha256']}  {path.replace(chr(10), chr(92) + 'n')}")


def _promotion_line(promotion: dict[str, Any]) -> str:
    return (
        f"Promotion {promotion['id']}: {promotion['model']}/{promotion['version']} -> "
        f"{promotion['environment']} is {promotion['state']}."
    )


def _existing_promotion(
    client: Client, name: str, ref: str, environment: str
) -> dict[str, Any] | None:
    """After a 409: the open promotion of this version, or the one that made it live.

    So a re-run CI job follows the promotion its first run asked for instead of failing.
    """
    number = client.get_version(name, ref)["version"]
    open_one = client.find_promotion(name, number, environment, PROMOTION_OPEN_STATES)
    if open_one is not None:
        return open_one
    if client.get_model(name).get("aliases", {}).get(environment) == number:
        return client.find_promotion(name, number, environment, ("promoted",))
    return None


def _awaiting_review(client: Client, promotion: dict[str, Any]) -> str:
    try:
        env = client.get_environment(promotion["environment"])
    except ClientError:
        env = {}
    approvals = sum(r["decision"] == "approve" for r in promotion.get("reviews") or [])
    needed = max(int(env.get("required_approvals") or 1) - approvals, 1)
    group = env.get("reviewer_group") or "the reviewers"
    return (
        f"Promotion {promotion['id']} ({promotion['model']}/{promotion['version']} -> "
        f"{promotion['environment']}) is waiting for {needed} approval(s) from '{group}': "
        f"modelgate review {promotion['id']} --approve --comment '...'. "
        "Pass --wait-for-review to wait for it."
    )


def _exit_for_promotion(client: Client, promotion: dict[str, Any], waited: bool) -> None:
    """Raise the documented exit code for where a promotion ended up."""
    state, reason = promotion["state"], promotion.get("status_reason") or ""
    label = f"Promotion {promotion['id']}"
    if state == "blocked":
        raise Refused(f"{label} is blocked by a gate: {reason or 'see its gates'}")
    if state in ("rejected", "cancelled"):
        raise Refused(f"{label} was {state}" + (f": {reason}" if reason else "."))
    if state == "failed":
        raise click.ClickException(f"{label} failed: {reason or 'no reason given'}")
    if waited and state == "pending":
        raise Refused(_awaiting_review(client, promotion))


@main.command()
@click.argument("ref", metavar="NAME/N|NAME@ALIAS")
@click.option("--to", "environment", required=True, metavar="ENV", help="The environment.")
@click.option("--comment", default="", help="Why: shown to the reviewers.")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until it is promoted; exit 2 at once if it is waiting for review.",
)
@click.option(
    "--wait-for-review",
    is_flag=True,
    help="Like --wait, and keep waiting while it is pending review.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="With --wait: seconds to wait at most; then exit 3.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the promotion as JSON.")
@pass_session
def promote(
    session: Session,
    ref: str,
    environment: str,
    comment: str,
    wait: bool,
    wait_for_review: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Request the promotion of a version to environment ENV.

    Without --wait it exits 0 once requested (pending review or approved) and 2 if a
    gate blocked it. Asking again for a version that already has an open promotion to
    ENV follows that promotion; a version already live in ENV exits 0.
    """
    name, version_ref = _reference(ref)
    client = session.client()
    try:
        promotion = client.request_promotion(name, version_ref, environment, comment)
    except ClientError as exc:
        if exc.status != 409:
            raise
        promotion = _existing_promotion(client, name, version_ref, environment)
        if promotion is None:
            raise
        click.echo(f"Following the existing promotion {promotion['id']}.", err=True)
    waited = wait or wait_for_review
    if waited and promotion["state"] not in PROMOTION_FINAL_STATES:
        stop = PROMOTION_FINAL_STATES + (() if wait_for_review else ("pending",))
        if promotion["state"] not in stop:
            click.echo(f"{_promotion_line(promotion)} Waiting ...", err=True)
            promotion = client.wait_for_promotion(promotion["id"], stop, timeout=timeout)
    if as_json:
        _echo_json(promotion)
    else:
        click.echo(_promotion_line(promotion))
    _exit_for_promotion(client, promotion, waited)


@main.command()
@click.argument("promotion_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--approve", "decision", flag_value="approve", help="Approve it.")
@click.option("--reject", "decision", flag_value="reject", help="Reject it.")
@click.option("--comment", required=True, help="Why; the server requires one.")
@click.option("--json", "as_json", is_flag=True, help="Print the promotion as JSON.")
@pass_session
def review(
    session: Session, promotion_id: int, decision: str | None, comment: str, as_json: bool
) -> None:
    """Approve or reject pending promotion ID (needs a reviewer's token)."""
    if decision is None:
        raise click.UsageError("Pass --approve or --reject.")
    promotion = session.client().review_promotion(promotion_id, decision, comment)
    if as_json:
        _echo_json(promotion)
    else:
        click.echo(_promotion_line(promotion))


@main.group()
def promotions() -> None:
    """List and show promotions."""


@promotions.command("ls")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(("pending", "approved", "promoting", *PROMOTION_FINAL_STATES)),
    help="Only promotions in this state; repeat for more.",
)
@click.option("--model", "-m", help="Only this model's.")
@click.option("--to", "--environment", "environment", metavar="ENV", help="Only into ENV.")
@click.option("--requested-by", metavar="USERNAME", help="Only those this user asked for.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Newest first, at most this many.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def promotions_ls(
    session: Session,
    states: tuple[str, ...],
    model: str | None,
    environment: str | None,
    requested_by: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List promotions, newest first."""
    found = session.client().list_promotions(
        states=states, model=model, environment=environment, requested_by=requested_by
    )
    found = list(itertools.islice(found, limit))
    if as_json:
        _echo_json(found)
        return
    rows = [
        [
            str(p["id"]),
            f"{p['model']}/{p['version']}",
            p["environment"],
            p["state"],
            p.get("requested_by") or "-",
            str(p.get("requested_at") or "")[:19],
            str(len([r for r in p.get("reviews") or [] if r["decision"] == "approve"])),
        ]
        for p in found
    ]
    _table(["ID", "VERSION", "ENV", "STATE", "REQUESTED BY", "REQUESTED", "APPROVALS"], rows)


@promotions.command("show")
@click.argument("promotion_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def promotions_show(session: Session, promotion_id: int, as_json: bool) -> None:
    """Show promotion ID with its gates and reviews."""
    promotion = session.client().get_promotion(promotion_id)
    if as_json:
        _echo_json(promotion)
        return
    click.echo(_promotion_line(promotion))
    if promotion.get("status_reason"):
        click.echo(f"  reason: {promotion['status_reason']}")
    for gate in promotion.get("gates") or []:
        mark = "pass" if gate["passed"] else "FAIL"
        click.echo(f"  gate {gate['type']}: {mark} {gate.get('detail') or ''}".rstrip())
    for item in promotion.get("reviews") or []:
        click.echo(f"  {item['decision']} by {item['reviewer']}: {item['comment']}")
