"""An httpx client for the Modelgate REST API (/api/v1/), with resumable uploads.

Standard library, httpx and click only: this module runs in the CLI, in CI jobs and in
training scripts, none of which should need Django.
"""

import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
BLOCK_SIZE = 1024 * 1024  # bytes read from disk or the network at a time
FINAL_STATES = ("ready", "failed", "quarantined")
# A promotion in one of these states never changes again.
PROMOTION_FINAL_STATES = ("promoted", "blocked", "rejected", "cancelled", "failed")
PROMOTION_OPEN_STATES = ("pending", "approved", "promoting")
POLL_MAX_INTERVAL = 5.0  # seconds between polls at most, however long the wait

Progress = Callable[[int], None]
"""Called with the number of bytes done since the last call; negative after a rewind."""


class ClientError(Exception):
    """A request failed; `message` is fit to show to the user."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}


class TimedOut(ClientError):
    """A wait ran out of time before the awaited state was reached."""


@dataclass(frozen=True)
class LocalFile:
    """A file to push: its path in the version, where it is on disk, its size and digest."""

    path: str
    local_path: Path
    size: int
    sha256: str

    def declaration(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def file_digest(local_path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in blocks rather than whole."""
    hasher, size = hashlib.sha256(), 0
    with open(local_path, "rb") as handle:
        while block := handle.read(BLOCK_SIZE):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def scan_directory(directory: str | os.PathLike[str]) -> list[LocalFile]:
    """Every regular file under `directory`, sorted by relative POSIX path; symlinks skipped."""
    root = Path(directory)
    found: list[LocalFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for filename in filenames:
            local = Path(dirpath) / filename
            if not stat.S_ISREG(local.lstat().st_mode):
                continue  # symlinks, sockets, fifos: not part of a model
            size, digest = file_digest(local)
            found.append(LocalFile(local.relative_to(root).as_posix(), local, size, digest))
    return sorted(found, key=lambda f: f.path)


def validate_remote_path(path: object) -> str:
    """Return `path` if it is safe to write under a directory, else raise ClientError."""
    if not isinstance(path, str) or not path:
        raise ClientError(f"The server sent an invalid file path: {path!r}.")
    problems = []
    if path.startswith("/"):
        problems.append("absolute")
    if "\\" in path:
        problems.append("contains a backslash")
    if "\x00" in path:
        problems.append("contains a NUL byte")
    segments = path.split("/")
    if "" in segments:
        problems.append("empty segment")
    if ".." in segments or "." in segments:
        problems.append("dot segment")
    if os.name == "nt" and (":" in path or any(s.rstrip(". ") != s for s in segments)):
        problems.append("not a portable Windows name")
    if problems:
        raise ClientError(
            f"Refusing to write the server's file path {path!r}: {', '.join(problems)}."
        )
    return path


def split_ref(reference: str) -> tuple[str, str]:
    """`NAME@ALIAS`, `NAME/N` or `NAME` → (name, ref) with ref `@alias`, `N` or `latest`.

    A name may hold '@' (MLflow allows it) but never '/', and an alias holds neither: so
    `NAME/N` is tried first and `NAME@ALIAS` splits at the last '@' ("a@b@prod" is alias
    prod of "a@b"; a name with '@' is named alone as `NAME/N` or `NAME@ALIAS`)."""
    if "/" in reference:
        name, number = reference.split("/", 1)
        ref = number
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f"'{reference}': the version after '/' must be a number.")
    elif "@" in reference:
        name, alias = reference.rsplit("@", 1)
        ref = f"@{alias}"
        if not alias:
            raise ValueError(f"'{reference}': the alias after '@' is missing.")
    else:
        name, ref = reference, "latest"
    if not name:
        raise ValueError(f"'{reference}': the model name is missing.")
    return name, ref


def _segment(value: str | int) -> str:
    return quote(str(value), safe="@")


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class Client:
    """REST client; every method raises ClientError with the server's message on failure."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 5,
        retry_backoff: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self._polling = False
        self.retry_backoff = retry_backoff
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ClientError(f"'{url}' is not an http(s) URL.")
        self._origin = (parts.scheme, parts.netloc)
        headers = {"Accept": "application/json", "User-Agent": "modelgate-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # A 503 (the database restarting, say) is retried with backoff when repeating the
        # request cannot do anything twice; others are the caller's to retry. A poll keeps
        # one budget of its own for every kind of failure (_poll).
        retry = method in IDEMPOTENT and not self._polling
        attempts = 1 + (self.max_retries if retry else 0)
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                raise ClientError(f"Cannot reach {self.url}: {exc}") from exc
            if response.status_code != 503 or attempt == attempts:
                break
            self._wait_for_service(response, attempt)
        _raise_for_status(response)
        return response

    def _wait_for_service(self, response: httpx.Response, attempt: int) -> None:
        told = response.headers.get("Retry-After", "")
        if told.isdigit():
            time.sleep(min(int(told), 30) * self.retry_backoff)
        else:
            self._sleep_before_retry(attempt)

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{method} {response.url} answered {response.status_code} with non-JSON content."
            ) from None

    def _same_origin(self, url: str) -> str:
        # `next` links are built from the Host the server saw; behind a proxy that may be
        # another scheme or host, and the bearer token must only go to the configured one.
        parts = urlsplit(url)
        return urlunsplit((*self._origin, parts.path, parts.query, ""))

    def _paginate(self, url: str, params: dict[str, Any] | None = None) -> Iterator[dict]:
        page = self._json("GET", url, params=params)
        while True:
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self._json("GET", self._same_origin(page["next"]))

    @staticmethod
    def _file_url(name: str, ref: str | int, path: str) -> str:
        return f"models/{_segment(name)}/versions/{_segment(ref)}/files/{quote(path, safe='/')}"

    def _sleep_before_retry(self, attempt: int) -> None:
        time.sleep(min(self.retry_backoff * 2 ** (attempt - 1), 30.0))

    # --- auth and models -------------------------------------------------------------

    def create_token(
        self,
        username: str,
        password: str,
        name: str,
        scopes: list[str] | None = None,
        expires_in_days: int | None = None,
    ) -> dict[str, Any]:
        """Mint an API token from a username and password; the secret is in `token`."""
        body: dict[str, Any] = {"username": username, "password": password, "name": name}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self._json("POST", "auth/tokens/", json=body)

    def me(self) -> dict[str, Any]:
        return self._json("GET", "me/")

    def list_models(self, search: str | None = None) -> Iterator[dict[str, Any]]:
        """Every model, following the pagination."""
        return self._paginate("models/", {"search": search} if search else None)

    def get_model(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"models/{_segment(name)}/")

    def create_model(
        self,
        name: str,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        team: str | None = None,
        visibility: str | None = None,
    ) -> dict[str, Any]:
        """`team` is needed when you write in several teams; `visibility` is "team" (the
        default) or "internal"."""
        body: dict[str, Any] = {"name": name}
        for key, value in (
            ("description", description),
            ("tags", tags or None),
            ("team", team),
            ("visibility", visibility),
        ):
            if value is not None:
                body[key] = value
        return self._json("POST", "models/", json=body)

    # --- versions --------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        files: list[dict[str, Any]],
        *,
        description: str | None = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        lineage: dict[str, Any] | None = None,
        baseline: dict[str, Any] | None = None,
        explanations: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Declare a version and its files (`[{"path","size","sha256"}]`); state `uploading`."""
        body: dict[str, Any] = {"files": files}
        for key, value in (
            ("description", description),
            ("metrics", metrics),
            ("params", params),
            ("tags", tags),
            ("lineage", lineage),
            ("baseline", baseline),
            ("explanations", explanations),
        ):
            if value is not None:
                body[key] = value
        return self._json("POST", f"models/{_segment(name)}/versions/", json=body)

    def list_versions(
        self,
        name: str,
        *,
        state: str | None = None,
        tags: list[str] | None = None,
        metrics: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Versions newest first; `tags` like `k:v`, `metrics` like `accuracy>=0.9`."""
        params: dict[str, Any] = {}
        if state:
            params["state"] = state
        if tags:
            params["tag"] = tags
        if metrics:
            params["metric"] = metrics
        return self._paginate(f"models/{_segment(name)}/versions/", params)

    def get_version(self, name: str, ref: str | int = "latest") -> dict[str, Any]:
        """A version's detail; `ref` is a number, `@alias` or `latest`."""
        return self._json("GET", f"models/{_segment(name)}/versions/{_segment(ref)}/")

    def finalize(self, name: str, number: int) -> dict[str, Any]:
        """Close the upload; a worker then makes the version `ready` or `failed`."""
        return self._json("POST", f"models/{_segment(name)}/versions/{number}/finalize/")

    def wait_for_state(
        self,
        name: str,
        ref: str | int,
        states: tuple[str, ...] = FINAL_STATES,
        timeout: float = 1800.0,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the version reaches one of `states`; returns its detail.

        Raises TimedOut once `timeout` seconds have passed without it.
        """

        def still(v: dict[str, Any] | None) -> str:
            if v is None:
                return f"{name}/{ref} did not answer"
            return f"{name}/{v['version']} is still {v['state']}"

        return self._poll(
            lambda: self.get_version(name, ref),
            lambda version: version["state"] in states,
            still,
            timeout,
            interval,
        )

    def _poll(
        self,
        fetch: Callable[[], dict[str, Any]],
        done: Callable[[dict[str, Any]], bool],
        describe: Callable[[dict[str, Any] | None], str],
        timeout: float,
        interval: float,
    ) -> dict[str, Any]:
        """Call `fetch` until `done(answer)`, sleeping a growing, capped interval between.

        A transport error or a 5xx (a server restarting during an hour-long review, say)
        is retried, up to `max_retries` in a row; other errors end the wait at once.
        """
        deadline = time.monotonic() + timeout
        failures, last = 0, None
        while True:
            try:
                self._polling = True
                last = fetch()
            except ClientError as exc:
                if (exc.status is not None and exc.status < 500) or failures >= self.max_retries:
                    raise
                failures += 1
            else:
                failures = 0
                if done(last):
                    return last
            finally:
                self._polling = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimedOut(f"{describe(last)} after {timeout:g}s.")
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, POLL_MAX_INTERVAL)

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return self._json(
            "PUT", f"models/{_segment(name)}/aliases/{_segment(alias)}/", json={"version": version}
        )

    # --- promotions ------------------------------------------------------------------

    def get_environment(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"environments/{_segment(name)}/")

    def request_promotion(
        self, name: str, ref: str | int, environment: str, comment: str = ""
    ) -> dict[str, Any]:
        """Ask to point `environment` at a version; the answer is `pending` or `blocked`
        (or already `approved` where the environment needs no review)."""
        return self._json(
            "POST",
            f"models/{_segment(name)}/versions/{_segment(ref)}/promotions/",
            json={"environment": environment, "comment": comment},
        )

    def get_promotion(self, promotion_id: int) -> dict[str, Any]:
        return self._json("GET", f"promotions/{int(promotion_id)}/")

    def list_promotions(
        self,
        *,
        states: list[str] | tuple[str, ...] | None = None,
        model: str | None = None,
        environment: str | None = None,
        requested_by: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Promotions newest first, fetched page by page as the caller iterates."""
        params: dict[str, Any] = {}
        if states:
            params["state"] = list(states)
        for key, value in (
            ("model", model),
            ("environment", environment),
            ("requested_by", requested_by),
        ):
            if value:
                params[key] = value
        return self._paginate("promotions/", params)

    def find_promotion(
        self, name: str, version: int, environment: str, states: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """The newest promotion of `name/version` to `environment` in one of `states`."""
        found = self.list_promotions(states=states, model=name, environment=environment)
        return next((p for p in found if p["version"] == version), None)

    def review_promotion(self, promotion_id: int, decision: str, comment: str) -> dict[str, Any]:
        """Approve or reject (`decision`) a pending promotion; returns the promotion."""
        return self._json(
            "POST",
            f"promotions/{int(promotion_id)}/reviews/",
            json={"decision": decision, "comment": comment},
        )

    def wait_for_promotion(
        self,
        promotion_id: int,
        states: tuple[str, ...] = PROMOTION_FINAL_STATES,
        timeout: float = 600.0,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the promotion reaches one of `states`; raises TimedOut after `timeout`."""

        def still(p: dict[str, Any] | None) -> str:
            if p is None:
                return f"Promotion {promotion_id} did not answer"
            where = f"{p['model']}/{p['version']} -> {p['environment']}"
            return f"Promotion {promotion_id} ({where}) is still {p['state']}"

        return self._poll(
            lambda: self.get_promotion(promotion_id),
            lambda promotion: promotion["state"] in states,
            still,
            timeout,
            interval,
        )

    # --- uploads ---------------------------------------------------------------------

    def upload_status(self, name: str, number: int, path: str) -> dict[str, Any]:
        """How much of a declared file the server holds, from HEAD.

        Same shape as a PUT's answer: `{"path","size","received","complete","sha256"}`,
        with `sha256` known only once the file is complete.
        """
        response = self._http.head(self._file_url(name, number, path))
        _raise_for_status(response)
        try:
            received = int(response.headers["Upload-Offset"])
            size = int(response.headers["Upload-Length"])
        except (KeyError, ValueError):
            raise ClientError(f"HEAD {response.url} did not report the upload offset.") from None
        complete = response.headers.get("Upload-Complete") == "true"
        # A complete file is answered like a download, with its digest as the ETag.
        etag = response.headers.get("ETag", "").strip('"') or None
        return {
            "path": path,
            "size": size,
            "received": received,
            "complete": complete,
            "sha256": etag if complete else None,
        }

    def upload_file(
        self,
        name: str,
        number: int,
        path: str,
        local_path: str | os.PathLike[str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload one declared file in `Content-Range` chunks, resuming where the server is.

        Starts from the offset the server reports, and after a transport error or a 5xx
        waits, asks again (HEAD) and continues from there; gives up after `max_retries`
        failures in a row. Returns the server's file status (`complete`, `sha256`, ...).
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        size = os.stat(local_path).st_size
        url = self._file_url(name, number, path)
        shown = 0

        def advance(done: int) -> None:
            nonlocal shown
            if progress is not None and done != shown:
                progress(done - shown)
            shown = done

        failures = 0
        offset: int | None = None  # unknown until the server says
        while True:
            try:
                if offset is None:
                    status = self.upload_status(name, number, path)
                    if status["size"] != size:
                        raise ClientError(
                            f"{path}: the local file has {size} bytes but "
                            f"{status['size']} were declared."
                        )
                    offset = status["received"]
                    advance(offset)
                    if status["complete"]:
                        return status
                response = self._put_chunk(url, local_path, offset, size, chunk_size, advance)
                details = _error(response)["details"] if response.status_code == 409 else {}
                if "received" in details:
                    # The server holds more (or less) than we thought: continue from there.
                    offset = int(details["received"])
                    advance(offset)
                    failures += 1  # counted, so two uploaders racing cannot loop forever
                    if failures > self.max_retries:
                        _raise_for_status(response)
                    continue
                _raise_for_status(response)
                status = response.json()
            except ClientError as exc:
                if exc.status is None or exc.status < 500:
                    raise
                failure: Exception = exc
            except httpx.TransportError as exc:
                failure = exc
            else:
                offset = int(status["received"])
                advance(offset)
                failures = 0
                if status["complete"]:
                    return status
                continue
            failures += 1
            if failures > self.max_retries:
                raise ClientError(
                    f"Uploading {path} failed {failures} times in a row; last error: {failure}"
                ) from failure
            advance(offset or 0)  # what was sent of the broken chunk may not have arrived
            offset = None  # ask the server again
            self._sleep_before_retry(failures)

    def _put_chunk(
        self,
        url: str,
        local_path: str | os.PathLike[str],
        start: int,
        size: int,
        chunk_size: int,
        advance: Callable[[int], None],
    ) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"}
        if size == 0:  # an empty range cannot be written as `bytes a-b/0`
            headers["Content-Length"] = "0"
            return self._http.put(url, content=b"", headers=headers)
        length = min(chunk_size, size - start)
        headers["Content-Length"] = str(length)
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"

        def body() -> Iterator[bytes]:
            with open(local_path, "rb") as handle:
                handle.seek(start)
                sent = 0
                while sent < length:
                    block = handle.read(min(BLOCK_SIZE, length - sent))
                    if not block:
                        raise ClientError(f"{local_path} shrank while it was being uploaded.")
                    yield block
                    sent += len(block)
                    advance(start + sent)

        # An explicit Content-Length keeps httpx from switching to chunked encoding,
        # which the server refuses for file bodies.
        return self._http.put(url, content=body(), headers=headers)

    def push(
        self,
        name: str,
        files: list[LocalFile],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress_for: Callable[[LocalFile], Any] | None = None,
        **metadata: Any,
    ) -> dict[str, Any]:
        """Declare, upload and finalize a version; returns the finalized version's detail.

        `progress_for(file)` may return a context manager with an `update(n)` method
        (a tqdm bar, say) used while that file uploads.
        """
        if not files:
            raise ClientError("There are no files to push.")
        created = self.create_version(name, [f.declaration() for f in files], **metadata)
        number = created["version"]
        try:
            for local in files:
                if progress_for is None:
                    self.upload_file(name, number, local.path, local.local_path, chunk_size)
                    continue
                with progress_for(local) as bar:
                    self.upload_file(
                        name, number, local.path, local.local_path, chunk_size, bar.update
                    )
        except ClientError as exc:
            hint = (
                " (did the file change after it was hashed?)"
                if exc.code == "checksum_mismatch"
                else ""
            )
            raise ClientError(
                f"{name}/{number} is left unfinished: {exc.message}{hint}",
                status=exc.status,
                code=exc.code,
                details=exc.details,
            ) from exc
        return self.finalize(name, number)

    # --- downloads -------------------------------------------------------------------

    def download_file(
        self,
        name: str,
        ref: str | int,
        path: str,
        dest: str | os.PathLike[str],
        sha256: str,
        progress: Progress | None = None,
        allow_quarantined: bool = False,
    ) -> Path:
        """Stream a version's file to `dest` (via a temp file beside it), checking `sha256`.

        `dest` is replaced only once the digest matches; a broken connection resumes with
        a `Range` request for the rest.
        """
        dest = Path(dest)
        tmp = dest.parent / f".modelgate-{secrets.token_hex(8)}.part"
        # Not mkstemp: its 0600 would stick to the pulled file; this honours the umask.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                url = self._file_url(name, ref, path)
                if allow_quarantined:
                    url += "?allow_quarantined=true"
                digest = self._download_into(url, out, path, progress)
            if digest != sha256:
                raise ClientError(
                    f"{path}: the downloaded bytes have sha256 {digest}, expected {sha256}."
                )
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest

    def _download_into(self, url: str, out: Any, path: str, progress: Progress | None) -> str:
        hasher, written, failures = hashlib.sha256(), 0, 0
        etag: str | None = None
        while True:
            headers = {"Range": f"bytes={written}-", "If-Range": etag} if written and etag else {}
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 416 and headers:
                        return hasher.hexdigest()  # the break came after the last byte
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_status(response)
                    resumed = response.status_code == 206 and response.headers.get(
                        "Content-Range", ""
                    ).startswith(f"bytes {written}-")
                    if written and not resumed:  # the whole file again: start over
                        out.seek(0)
                        out.truncate()
                        if progress is not None:
                            progress(-written)
                        hasher, written = hashlib.sha256(), 0
                    etag = response.headers.get("ETag")
                    for block in response.iter_bytes(BLOCK_SIZE):
                        out.write(block)
                        hasher.update(block)
                        written += len(block)
                        if progress is not None:
                            progress(len(block))
                    return hasher.hexdigest()
            except ClientError as exc:
                if exc.status is None or exc.status < 500:
                    raise
                failure: Exception = exc
            except httpx.TransportError as exc:
                failure = exc
            failures += 1
            if failures > self.max_retries:
                raise ClientError(
                    f"Downloading {path} failed {failures} times in a row; last error: {failure}"
                ) from failure
            self._sleep_before_retry(failures)

    def pull(
        self,
        name: str,
        ref: str | int,
        directory: str | os.PathLike[str],
        progress_for: Callable[[dict[str, Any]], Any] | None = None,
        allow_quarantined: bool = False,
    ) -> dict[str, Any]:
        """Download every file of a version under `directory`; returns the version detail.

        Every path from the server is checked before anything is written, and each file
        lands inside `directory` or nowhere. A quarantined version is refused before any
        download unless `allow_quarantined` (an admin's explicit, audited choice).
        """
        version = self.get_version(name, ref)
        if version.get("state") == "quarantined" and not allow_quarantined:
            reason = version.get("status_reason") or "its scan found a dangerous import"
            raise ClientError(
                f"{name}/{version['version']} is quarantined: {reason} Nothing was "
                "downloaded; an admin may fetch it with --allow-quarantined (audited).",
                status=403,
                code="quarantined",
            )
        files = version.get("files") or []
        for item in files:
            validate_remote_path(item.get("path"))
            if not item.get("complete", True):
                raise ClientError(f"{name}/{version['version']}: {item['path']} is not uploaded.")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        for item in files:
            segments = item["path"].split("/")
            parent = _inside(root, segments[:-1])
            # The number, not `ref`: an alias moved mid-pull must not mix two versions.
            args = (name, version["version"], item["path"], parent / segments[-1], item["sha256"])
            options = {"allow_quarantined": allow_quarantined}
            if progress_for is None:
                self.download_file(*args, **options)
                continue
            with progress_for(item) as bar:
                self.download_file(*args, progress=bar.update, **options)
        return version


def _inside(root: Path, folders: list[str]) -> Path:
    """Create `root/folders...` one level at a time, refusing any step that leaves `root`.

    Checked per level, before creating the next, because a folder already in the target
    may be a symlink to elsewhere and `mkdir(parents=True)` would follow it.
    """
    current = root
    for folder in folders:
        current = current / folder
        if not current.exists() and not current.is_symlink():
            current.mkdir()
        if not current.resolve().is_relative_to(root) or not current.is_dir():
            raise ClientError(
                f"Refusing to write under {current}: it is not a folder inside {root}."
            )
    return current


def _error(response: httpx.Response) -> dict[str, Any]:
    """The `{"code","message","details"}` of an error body, or a stand-in for other bodies."""
    try:
        error = response.json()["error"]
        return {
            "code": str(error.get("code") or ""),
            "message": str(error.get("message") or ""),
            "details": error.get("details") if isinstance(error.get("details"), dict) else {},
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        message = f"HTTP {response.status_code} from {response.request.method} {response.url}"
        return {"code": "", "message": f"{message}: {text}" if text else message, "details": {}}


_HEAD_MESSAGES = {
    401: "Not authenticated: the token is missing, invalid, expired or revoked.",
    403: "Permission denied.",
    404: "Not found.",
}


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.request.method == "HEAD":  # no body, so no message from the server
        message = _HEAD_MESSAGES.get(response.status_code, f"HTTP {response.status_code}")
        raise ClientError(f"{message} (HEAD {response.url})", status=response.status_code)
    error = _error(response)
    raise ClientError(
        error["message"] or f"HTTP {response.status_code}",
        status=response.status_code,
        code=error["code"] or None,
        details=error["details"],
    )
