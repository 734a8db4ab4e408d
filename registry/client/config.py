"""The login config: `{"url", "token"}` in a JSON file only its owner can read."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

CONFIG_DIR_ENV = "MODELGATE_CONFIG_DIR"
CONFIG_FILE = "config.json"


def config_dir() -> Path:
    """`$MODELGATE_CONFIG_DIR`, else the platform's per-user app directory."""
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path(click.get_app_dir("modelgate"))


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def load_config() -> dict[str, Any]:
    """The saved config, or `{}` when there is none yet."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} must hold a JSON object.")
    return data


def save_config(data: dict[str, Any]) -> Path:
    """Write the config atomically with mode 0600 (it holds a bearer token)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 from the start, so the token is never world-readable,
    # not even between the write and the rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
