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
- a name whose percent-decoded form breaks any of these ('a%2F..'): some client decodes
  the URL a name travels in once too often.
"""

import posixpath
import re
from urllib.parse import unquote

from django.core.exceptions import ValidationError

from registry.storage.paths import unicode_hazard

MAX_MODEL_NAME = 256  # MLflow's registered_models.name column
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DECODED_LAYERS = 3


def _problem(name: str) -> str | None:
    if not name.strip():
        return "it is blank"
    if "/" in name or ":" in name:
        return "names cannot contain '/' or ':' (as in MLflow)"
    if "\\" in name:
        return "names cannot contain a backslash"
    if name != name.strip(" "):
        return "names cannot start or end with a space"
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
    reason = _problem(value)
    decoded, layers = value, 0
    while reason is None and _PERCENT_ESCAPE.search(decoded) and layers < _DECODED_LAYERS:
        decoded, layers = unquote(decoded), layers + 1
        reason = _problem(decoded)
        if reason:
            reason = f"once percent-decoded, {reason}"
    if reason is None and _PERCENT_ESCAPE.search(decoded):
        reason = "it is percent-encoded too many times"
    return reason


def validate_model_name(value: object) -> None:
    """The model field's validator (forms, the admin); services use validation.model_name."""
    reason = model_name_problem(value)
    if reason:
        raise ValidationError(f"Invalid model name {value!r}: {reason}.")
