"""Who a request speaks for: its API key (see ``tokens.py``) resolved to a tenant. The tenant
of a tenant key's request comes from its key, never from the body; an admin key sees every
tenant and acts for the one its request names (a platform's backend submitting for each of its
customers with one key)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from corral.api.tokens import MAX_TOKEN_LENGTH, hash_token
from corral.errors import Forbidden, RunNotFound, Unauthorized
from corral.models import Run
from corral.store import Store


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for."""

    key_id: str
    tenant: str
    admin: bool

    def can_see(self, run: Run) -> bool:
        return self.admin or run.tenant == self.tenant

    def acting_for(self, tenant: str | None) -> str:
        """The tenant a write is for: the one named (admin keys), else the key's own. A
        tenant key that names another tenant is refused, not silently given its own: its
        run would be billed to, or its change made in, a tenant it did not mean."""
        if tenant is None or tenant == self.tenant:
            return self.tenant
        if not self.admin:
            raise Forbidden(
                f"this key acts for tenant {self.tenant!r} only; another tenant's runs and "
                "schedules need an admin key"
            )
        return tenant

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
