"""The HTTP service: ``create_api(app, settings)`` builds the ASGI app (FastAPI)."""

from corral.api.auth import Principal, create_key, hash_token
from corral.api.scaling import TenantLoad, suggested_workers
from corral.api.service import create_api
from corral.api.settings import ApiSettings

__all__ = [
    "ApiSettings",
    "Principal",
    "TenantLoad",
    "create_api",
    "create_key",
    "hash_token",
    "suggested_workers",
]
