"""Master keys for envelope encryption: each blob's data key is wrapped by a master key.

A wrapped data key is a small JSON record naming the master key (by a key id derived from
it), so several master keys can be configured at once while `rotate_keys` re-wraps every
record under the current one; the blobs themselves are never rewritten.
"""

import base64
import binascii
import contextlib
import hashlib
import json
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.exceptions import ImproperlyConfigured

from .base import BlobCorrupt

KEY_BYTES = 32  # AES-256


class KeyUnavailable(OSError):
    """A data key is wrapped by a master key this process was not given."""


def parse_key(text: str) -> bytes:
    """A 256-bit key written as base64 (standard or URL-safe) or as 64 hex digits."""
    text = text.strip()
    candidates = []
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise ImproperlyConfigured(
        "An encryption key must be 32 random bytes written as base64 or 64 hex digits "
        "(e.g. `python -c 'import secrets, base64; "
        "print(base64.b64encode(secrets.token_bytes(32)).decode())'`)."
    )


def key_id(key: bytes) -> str:
    # Names the key in every record without revealing anything useful about it.
    return hashlib.sha256(b"modelgate master key id\0" + key).hexdigest()[:16]


class Keyring:
    """The current master key (wraps new data keys) and older ones (still unwrap)."""

    def __init__(self, current: bytes, old: list[bytes] | tuple[bytes, ...] = ()):
        self.current_id = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in (*old, current)}

    @classmethod
    def from_texts(cls, current: str, old: list[str] | tuple[str, ...] = ()) -> "Keyring":
        return cls(parse_key(current), [parse_key(text) for text in old])

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        wrapped = self._keys[self.current_id].encrypt(nonce, data_key, context)
        return json.dumps(
            {
                "master": self.current_id,
                "nonce": base64.b64encode(nonce).decode(),
                "key": base64.b64encode(wrapped).decode(),
            }
        ).encode()

    def unwrap(self, record: bytes, context: bytes) -> bytes:
        try:
            fields = json.loads(record)
            master = fields["master"]
            nonce = base64.b64decode(fields["nonce"])
            wrapped = base64.b64decode(fields["key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BlobCorrupt(f"unreadable data key record ({exc})") from None
        aead = self._keys.get(master)
        if aead is None:
            raise KeyUnavailable(
                f"the data key is wrapped by master key {master}, which is not configured"
            )
        try:
            return aead.decrypt(nonce, wrapped, context)
        except (InvalidTag, ValueError):
            # The record was altered or moved to another blob's name.
            raise BlobCorrupt("the data key record failed authentication") from None

    def is_current(self, record: bytes) -> bool:
        try:
            return json.loads(record).get("master") == self.current_id
        except (ValueError, AttributeError):
            return False

    def rewrap(self, record: bytes, context: bytes) -> bytes:
        return self.wrap(self.unwrap(record, context), context)
