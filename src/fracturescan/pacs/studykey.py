"""The link from an audit record back to a PACS study without storing an identifier: a keyed
hash (HMAC-SHA256) of the StudyInstanceUID. Only whoever holds the key (the site's admin) can
compute the value for a given study and find its audit rows."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fracturescan.errors import FracturescanError

#: Environment variable that may hold the key (hex) instead of a key file.
KEY_ENV = "FRACTURESCAN_STUDY_KEY"


def load_or_create_key(path: Path) -> bytes:
    """The key from ``$FRACTURESCAN_STUDY_KEY`` (hex), else from ``path``, creating a random
    32-byte key there (mode 0600) the first time."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            return bytes.fromhex(env.strip())
        except ValueError:
            raise FracturescanError(f"${KEY_ENV} must be hexadecimal (e.g. 64 hex digits).") from None
    if path.is_file():
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) < 16:
            raise FracturescanError(f"The study key in {path} is shorter than 16 bytes; remove it to make a new one.")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    return key


def study_key(key: bytes, study_uid: str) -> str:
    """``study:`` + the first 32 hex digits of HMAC-SHA256(key, StudyInstanceUID)."""
    return "study:" + hmac.new(key, study_uid.strip().encode("ascii", "replace"), hashlib.sha256).hexdigest()[:32]
