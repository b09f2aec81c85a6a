"""API key tokens: a random token shown once, stored only as its SHA-256.

A token looks like ``crl_<id>_<secret>``: the id names the key in listings and revocation, the
secret is 32 random bytes. SHA-256 suffices (no slow hash): the token has 256 bits of entropy,
so nothing can be learnt from its hash. (No web imports here: ``corral keys`` uses this.)
"""

from __future__ import annotations

import hashlib
import secrets

from corral.store import Store
from corral.store.sql_keys import ApiKey
from corral.values import check_text

TOKEN_PREFIX = "crl_"
MAX_TOKEN_LENGTH = 256


def new_token() -> tuple[str, str]:
    """A fresh (key id, token)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id inside a token, or None when it is not shaped like one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, _ = token[len(TOKEN_PREFIX) :].partition("_")
    return key_id if sep and key_id else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_key(
    store: Store, tenant: str, *, admin: bool = False, label: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``tenant``; returns it and its token (which is not stored)."""
    check_text("tenant", tenant)
    if label is not None:
        check_text("label", label)
    key_id, token = new_token()
    key = await store.create_api_key(key_id, hash_token(token), tenant, admin=admin, label=label)
    return key, token
