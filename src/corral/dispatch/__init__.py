"""Pure dispatch decisions: which tenants get the next leases, and retry backoff."""

from corral.dispatch.backoff import retry_delay
from corral.dispatch.policy import TenantLoad, allocate

__all__ = ["TenantLoad", "allocate", "retry_delay"]
