"""Encryption at rest of the stored token (``cryptography``'s Fernet)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from ._adapt import as_storage
from ._base import GARBAGE, TokenStorage

__all__ = ["EncryptedStorage"]

_Key = str | bytes

# What is encrypted: this version byte, the SHA-256 of the storage key the
# value belongs to, then the value. Fernet has no associated data; putting
# the key's digest inside the authenticated plaintext binds the two the same
# way: a ciphertext copied under another key decrypts, but names the wrong
# key, and is garbage there.
_BOUND = b"\x01"


class EncryptedStorage(TokenStorage):
    """Another storage, with every stored value encrypted and authenticated.

    For a Redis or memcached shared with other teams: what is stored is a
    Fernet token (AES-128-CBC with HMAC-SHA256), so neither the access token
    nor the refresh token can be read, or forged, without the key. Keys and
    the lock are those of the wrapped storage, which keeps its TTLs, its
    lock and its compare-and-delete (done on the ciphertext it holds).

    Each value is bound to the storage key it is saved under (the key's
    SHA-256 is encrypted with it): a ciphertext copied under the key of
    another credential, or of another prefix, is garbage there, as is a
    value that does not decrypt (written with another encryption key, or by
    alf-session 0.1, which did not bind values). The manager counts garbage
    as a storage error, warns, fetches and overwrites it; a caller never
    sees an exception.

    Args:
        storage: The storage to wrap: a :class:`TokenStorage` or any object
            :func:`~alf_session.as_storage` accepts.
        key: A Fernet key (``Fernet.generate_key()``: 32 url-safe
            base64-encoded bytes), or a sequence of them to rotate keys: the
            first encrypts, any decrypts.

    Raises:
        ConfigurationError: ``cryptography`` is missing or a key is malformed.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Values are bound to their storage key; values written by 0.1 are
       read as garbage (one token request per credential, then overwritten).
    """

    def __init__(self, storage: Any, key: _Key | Sequence[_Key]) -> None:
        from .errors import ConfigurationError

        try:
            from cryptography.fernet import Fernet, InvalidToken, MultiFernet
        except ImportError:
            raise ConfigurationError(
                "EncryptedStorage needs the cryptography package: "
                "pip install 'alf-session[encryption]'"
            ) from None
        try:
            keys = [key] if isinstance(key, (str, bytes)) else list(key)
        except TypeError:
            raise ConfigurationError(
                f"EncryptedStorage needs a Fernet key (str or bytes) or a list of them, "
                f"not {type(key).__name__}"
            ) from None
        if not keys:
            raise ConfigurationError("EncryptedStorage needs at least one key")
        try:
            fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError):
            # Never quote the key.
            raise ConfigurationError(
                "an encryption key must be 32 url-safe base64-encoded bytes; "
                "make one with cryptography.fernet.Fernet.generate_key()"
            ) from None
        self.storage = as_storage(storage)
        super().__init__(prefix=self.storage.prefix)
        self.can_lock = self.storage.can_lock
        self.blocking = self.storage.blocking
        self._fernet = fernet
        self._invalid = InvalidToken

    def __repr__(self) -> str:
        return f"EncryptedStorage({self.storage!r})"

    def key_for(self, name: str) -> str:
        return self.storage.key_for(name)

    def _encrypt(self, key: str, value: str) -> str:
        plain = _BOUND + _digest(key) + value.encode("utf-8")
        return self._fernet.encrypt(plain).decode("ascii")

    def _decrypt(self, key: str, raw: str) -> str:
        # GARBAGE (the one rule, see _base): the manager warns and overwrites it.
        try:
            plain = self._fernet.decrypt(raw.encode("ascii", "replace"))
        except self._invalid:
            return GARBAGE
        bound = plain[: 1 + _DIGEST_SIZE]
        if not hmac.compare_digest(bound, _BOUND + _digest(key)):
            return GARBAGE  # another key's value (or 0.1's unbound one)
        return plain[1 + _DIGEST_SIZE :].decode("utf-8", "replace")

    def load(self, key: str) -> str | None:
        raw = self.storage.load(key)
        return None if raw is None else self._decrypt(key, raw)

    def save(self, key: str, value: str, ttl: float | None) -> None:
        self.storage.save(key, self._encrypt(key, value), ttl)

    def delete(self, key: str, expected: str | None = None) -> None:
        if expected is None:
            self.storage.delete(key)
            return
        raw = self.storage.load(key)
        if raw is not None and self._decrypt(key, raw) == expected:
            self.storage.delete(key, raw)

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        return self.storage.acquire_lock(key, ttl)

    def release_lock(self, key: str, owner: str) -> None:
        self.storage.release_lock(key, owner)


_DIGEST_SIZE = 32


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
