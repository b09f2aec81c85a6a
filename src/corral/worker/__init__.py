"""Workers: bounded slots, leases, heartbeats, fencing, graceful drain."""

from corral.errors import NonRetryableError
from corral.worker.worker import AgentFn, Worker, WorkerOptions

__all__ = ["AgentFn", "NonRetryableError", "Worker", "WorkerOptions"]
