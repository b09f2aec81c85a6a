"""The HTTP service: ``create_api(app, settings)`` builds the ASGI app (FastAPI);
``run_service`` serves it with embedded workers (what ``corral serve`` does).

Names are imported on first use, so ``import corral.api.tokens`` (what ``corral keys`` needs)
does not load the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.api.auth import Principal
    from corral.api.server import run_service
    from corral.api.service import create_api
    from corral.api.settings import ApiSettings
    from corral.api.tokens import create_key, hash_token
    from corral.dispatch.scaling import TenantLoad, suggested_workers

_WHERE = {
    "ApiSettings": "corral.api.settings",
    "Principal": "corral.api.auth",
    "TenantLoad": "corral.dispatch.scaling",
    "create_api": "corral.api.service",
    "create_key": "corral.api.tokens",
    "hash_token": "corral.api.tokens",
    "run_service": "corral.api.server",
    "suggested_workers": "corral.dispatch.scaling",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApiSettings",
    "Principal",
    "TenantLoad",
    "create_api",
    "create_key",
    "hash_token",
    "run_service",
    "suggested_workers",
]
