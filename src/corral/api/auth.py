"""API keys: a random token shown once, stored only as its SHA-256, mapped to a tenant.

A token looks like ``crl_<id>_<secret>``: the id names the key in listings and revocation, the
secret is 32 random bytes. SHA-256 suffices (no slow hash): the token has 256 bits of entropy,
so nothing can be guessed from its hash. The tenant of every request comes from its key, never
from the body; an admin key sees every tenant.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from corral.api.errors import Unauthorized
from corral.errors import RunNotFound
from corral.models import Run
from corral.store import Store
from corral.store.sql_keys import ApiKey

TOKEN_PREFIX = "crl_"
MAX_TOKEN_LENGTH = 256


def new_token() -> tuple[str, str]:
    """A fresh (key id, token)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_key(
    store: Store, tenant: str, *, admin: bool = False, label: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``tenant``; returns it and its token (which is not stored)."""
    key_id, token = new_token()
    key = await store.create_api_key(key_id, hash_token(token), tenant, admin=admin, label=label)
    return key, token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for."""

    key_id: str
    tenant: str
    admin: bool

    def can_see(self, run: Run) -> bool:
        return self.admin or run.tenant == self.tenant

    def visible(self, run: Run) -> Run:
        """The run, or RunNotFound when it is another tenant's (no existence leak)."""
        if not self.can_see(run):
            raise RunNotFound(run.id)
        return run


class KeyResolver:
    """Token → principal, remembering answers (including refusals) for ``ttl`` seconds so a
    busy client costs no database read per request. A revoked key stops working within
    ``ttl``. At most ``max_entries`` answers are kept."""

    def __init__(
        self,
        store: Store,
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    async def resolve(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise Unauthorized("invalid API key")
        digest = hash_token(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            key = await self._store.api_key_by_hash(digest)
            principal = None if key is None else Principal(key.id, key.tenant, key.admin)
            if self._ttl > 0:
                self._cache[digest] = (now + self._ttl, principal)
                self._cache.move_to_end(digest)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal
