"""backup → an empty installation → restore (must-show 3 of issue 9, second half).

The source installation (this test's database, an encrypted store, a worker) gets models,
ready versions with packages, an alias and a token. `manage.py backup` writes a snapshot;
a fresh database is migrated and `manage.py restore` fills it and an empty store. The
registry's data must then be identical (dumpdata of both sides), every blob present with
the same sha256 and still encrypted, and a web node on the restored installation must
serve every file byte-identical to the token that worked before.
"""

import json
from pathlib import Path

import httpx
import pytest
from django.db import connection

from registry.models import ModelVersion, VersionFile
from registry.services import aliases, store_care
from registry.storage import get_store

from .conftest import client_for, sha256_of, token_for, upload_version, wait_for
from .processes import Web, database_url
from .storage_support import manage, new_key, shares_a_run, store_env


@pytest.fixture
def fresh_database(transactional_db):
    """An empty database of our own next to the test database (Postgres or SQLite)."""
    url = database_url()
    if connection.vendor == "postgresql":
        name = f"{connection.settings_dict['NAME']}_restore"
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield url.rsplit("/", 1)[0] + f"/{name}"
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        path = Path(connection.settings_dict["NAME"]).with_suffix(".restore.sqlite3")
        path.unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        path.unlink(missing_ok=True)


def registry_dump(env: dict[str, str]) -> list[dict]:
    result = manage(
        env, "dumpdata", "registry", "auth.user", "auth.group", "--natural-foreign",
        "--natural-primary",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_backup_restore_round_trip(
    settings, tmp_path, fresh_database, celery_worker, alice, bob, admin_user
):
    settings.MODELGATE_STORAGE_URL = f"file://{tmp_path / 'store'}"
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    api = client_for(alice)
    files = {
        "fraud": [{"model.pkl": b"\x80\x04K\x01." * 3000, "README.md": b"# fraud\n" * 500}],
        "churn": [{"weights.bin": bytes(range(256)) * 400}, {"weights.bin": b"v2" * 70000}],
    }
    payload: dict[tuple[str, int], dict[str, bytes]] = {}
    for name, versions in files.items():
        assert api.post("/api/v1/models/", {"name": name}, format="json").status_code == 201
        for version_files in versions:
            number = upload_version(api, name, version_files, description=f"{name} model")
            payload[(name, number)] = version_files
    wait_for(lambda: ModelVersion.objects.filter(state="ready").count() == 3, timeout=180)
    fraud_v1 = ModelVersion.objects.get(model__name="fraud", number=1)
    aliases.set_alias(fraud_v1.model, alice, "champion", 1)
    token = token_for(alice)  # must still work after the restore
    source_env = store_env()
    before = registry_dump(source_env)
    digests = set(get_store().digests())
    assert store_care.referenced_digests() <= digests and len(digests) >= 7  # 4 files + 3 pkgs

    backup_dir = tmp_path / "backup"
    result = manage(source_env, "backup", str(backup_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert set(manifest["blobs"]) == store_care.referenced_digests() and manifest["encrypted"]
    stored = [p for p in (backup_dir / "blobs").rglob("*") if p.is_file()]
    assert any("/keys/" in str(p) for p in stored)  # encrypted stays encrypted, with its keys
    for version_files in payload.values():
        for data in version_files.values():
            assert not any(shares_a_run(data, p.read_bytes()) for p in stored)
    assert manage(source_env, "backup", str(backup_dir)).returncode != 0  # never overwritten

    # An empty installation: a new database, an empty store, the same master key.
    target_env = {
        **source_env,
        "DATABASE_URL": fresh_database,
        "MODELGATE_STORAGE_URL": f"file://{tmp_path / 'restored-store'}",
        "MODELGATE_GIT_DIR": str(tmp_path / "restored-git"),
        "MODELGATE_VAR_DIR": str(tmp_path / "restored-var"),
    }
    assert manage(target_env, "migrate", "--no-input").returncode == 0
    result = manage(target_env, "restore", str(backup_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    again = manage(target_env, "restore", str(backup_dir))
    assert again.returncode != 0 and "empty" in again.stderr  # refuses a non-empty one

    assert registry_dump(target_env) == before  # every version's metadata, events, aliases …
    result = manage(target_env, "verify_store")
    assert result.returncode == 0, result.stdout + result.stderr
    restored = {p.name for p in (tmp_path / "restored-store" / "sha256").rglob("*") if p.is_file()}
    assert restored == set(manifest["blobs"])

    web = Web(target_env, tmp_path).start()
    try:
        http = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {token}"})
        for (name, number), version_files in payload.items():
            for path, data in version_files.items():
                response = http.get(f"/api/v1/models/{name}/versions/{number}/files/{path}")
                assert response.status_code == 200, response.text
                assert sha256_of(response.content) == sha256_of(data)
        resolved = http.get("/api/v1/models/fraud/versions/@champion/")
        assert resolved.status_code == 200 and resolved.json()["version"] == 1
        # Sequences were reset: new rows get fresh ids on the restored installation.
        created = http.post("/api/v1/models/", json={"name": "after-restore"})
        assert created.status_code == 201, created.text
    finally:
        web.stop()
    assert VersionFile.objects.count() == 4  # the source is untouched


def test_restore_refuses_a_damaged_or_mismatched_backup(settings, tmp_path, alice, db):
    settings.MODELGATE_STORAGE_URL = f"file://{tmp_path / 'store'}"
    from registry.errors import Conflict, InvalidInput

    with pytest.raises(InvalidInput):
        store_care.restore(tmp_path / "nothing-here")
    report = store_care.backup(tmp_path / "b")
    assert report.blobs == 0
    dump = tmp_path / "b" / "database.json"
    dump.write_text(dump.read_text().replace("alice", "mallory"))
    with pytest.raises(InvalidInput, match="damaged"):
        store_care.restore(tmp_path / "b")
    store_care.backup(tmp_path / "c")
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    with pytest.raises(Conflict, match="encryption"):
        store_care.restore(tmp_path / "c")
