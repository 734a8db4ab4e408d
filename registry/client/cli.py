"""`modelgate`: push, pull and inspect models from a shell; a thin layer over `Client`."""

import json
import os
import re
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from .api import DEFAULT_CHUNK_SIZE, DEFAULT_URL, Client, ClientError, scan_directory, split_ref
from .config import load_config, save_config

URL_ENV = "MODELGATE_URL"
TOKEN_ENV = "MODELGATE_TOKEN"


class _Group(click.Group):
    """Turns client and file errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            message = exc.message
            if exc.code == "not_authenticated" or exc.status == 401:
                message += f" Run `modelgate login` or set {TOKEN_ENV}."
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


def _reference(value: str) -> tuple[str, str]:
    try:
        return split_ref(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _compact(mapping: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((mapping or {}).items()))


# --- the commands ------------------------------------------------------------------


@click.group(name="modelgate", cls=_Group)
@click.option(
    "--url",
    envvar=URL_ENV,
    show_envvar=True,
    metavar="URL",
    help=f"Server URL [default: the saved login, else {DEFAULT_URL}].",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.version_option(package_name="modelgate")
@click.pass_context
def main(ctx: click.Context, url: str | None, quiet: bool) -> None:
    """Modelgate model registry: push, pull and inspect model versions.

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
@pass_session
def models_create(
    session: Session, name: str, description: str | None, tags: dict[str, str]
) -> None:
    """Create a model."""
    created = session.client().create_model(name, description, tags or None)
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
@pass_session
def push(
    session: Session,
    directory: Path,
    model: str,
    metrics: Path | None,
    params: Path | None,
    tags: dict[str, str],
    description: str | None,
    chunk_size: int,
    wait: bool,
    timeout: float,
) -> None:
    """Upload every file under DIRECTORY as a new version of a model; prints NAME/N."""
    metadata = {
        "metrics": _metrics(metrics),
        "params": _params(params),
        "tags": tags or None,
        "description": description,
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
    if version["state"] == "failed":
        reason = version.get("status_reason") or "no reason given"
        raise click.ClickException(f"{model}/{number} failed: {reason}")
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
    _table(["VERSION", "STATE", "ALIASES", "CREATED", "METRICS"], rows)


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
    click.echo(f"{version['model']}/{version['version']}  {version['state']}")
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
@pass_session
def pull(session: Session, ref: str, directory: Path) -> None:
    """Download every file of a version into DIRECTORY, checking each sha256."""
    name, version_ref = _reference(ref)
    version = session.client().pull(
        name, version_ref, directory, progress_for=lambda f: session.bar(f["size"], f["path"])
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
