"""Model names as MLflow allows them, minus what could look or resolve differently.

MLflow (mlflow/utils/validation.py `_validate_model_name`) refuses a blank name, '/' and
':', and a name that `posixpath.normpath` would change or that is '.' or starts with '..'.
Its SQL store keeps names in a 256-character column. We follow that, case-preserving and
case-sensitive, and refuse beyond it (docs/API.md, "Model names"):
- a backslash (a separator on Windows, where MLflow's file store refuses it too);
- leading or trailing spaces, and any character outside letters, marks, numbers,
  punctuation, symbols and the plain space (controls, bidi controls, zero-width and
  other invisible characters), or text that NFKC normalisation changes: the rules of
  file paths (storage/paths.py), since a name is a path segment of the artifact area
  and of the Git mirror;
- a percent sign followed by two hex digits ('a%20b'): a client that decodes the URL a
  name travels in once too often would read another name ('a b'); a '%' otherwise is
  fine ("100% recall"). So a name is never changed by percent-decoding, and a '%XX' in
  a name's place in a URL or artifact path can only be an encoded name.
"""

import posixpath
import re
from urllib.parse import unquote

from django.core.exceptions import ValidationError

from registry.storage.paths import unicode_hazard

MAX_MODEL_NAME = 256  # MLflow's registered_models.name column
PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _problem(name: str) -> str | None:
    if not name.strip():
        return "it is blank"
    if "/" in name or ":" in name:
        return "names cannot contain '/' or ':' (as in MLflow)"
    if "\\" in name:
        return "names cannot contain a backslash"
    if name != name.strip(" "):
        return "names cannot start or end with a space"
    if PERCENT_ESCAPE.search(name):
        return "names cannot hold a percent-escape like '%20' (a '%' alone is fine)"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return "names cannot be '.' or start with '..' (they are path segments)"
    return unicode_hazard(name)


def model_name_problem(value: object) -> str | None:
    """Why `value` cannot be a model name, or None if it can."""
    if not isinstance(value, str) or not value:
        return "a model name must be a non-empty string"
    if len(value) > MAX_MODEL_NAME:
        return f"names are at most {MAX_MODEL_NAME} characters"
    return _problem(value)


def validate_model_name(value: object) -> None:
    """The model field's validator (forms, the admin); services use validation.model_name."""
    reason = model_name_problem(value)
    if reason:
        raise ValidationError(f"Invalid model name {value!r}: {reason}.")


_URI_ESCAPES = {"%": "%25", "#": "%23", "?": "%3F"}


def in_uri(name: str) -> str:
    """The name as a path segment of a URI clients parse (`mlflow-artifacts:/modelgate/
    <name>/1`): '#', '?' and '%' escaped, as urlparse would cut at the first two; the rest
    as it is, which every HTTP client encodes itself."""
    return "".join(_URI_ESCAPES.get(char, char) for char in name)


def from_uri(segment: str) -> str:
    """The name `segment` stands for: percent-decoded if it holds an escape, which no name
    holds itself (so 'a%23b' can only be "a#b")."""
    return unquote(segment) if PERCENT_ESCAPE.search(segment) else segment
